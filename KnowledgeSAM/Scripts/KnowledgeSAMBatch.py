"""Segment many volumes with one knowledge prompt, without Slicer's main window.

Usage::

    Slicer --no-main-window --python-script KnowledgeSAM/Scripts/KnowledgeSAMBatch.py \\
        --target case1.nii.gz [case2.nii.gz ...] \\
        --reference atlas.nrrd --reference-segmentation atlas.seg.nrrd --segments kidney artery \\
        --output out.seg.nrrd            # one target
        --output results/                # many targets: results/<target name>.seg.nrrd
        --output results/{name}-ksam.seg.nrrd

Every target is segmented with the same reference, loaded and encoded once; a failing target is reported
and the others still run. The exit status is 0 when all succeeded, 2 when some input was bad (the message
says which), 1 on an unexpected error. Existing output files are never replaced unless ``--overwrite`` is
given. Targets and outputs follow the same rules as ``knowledgesam segment`` (``KnowledgeSAMLib.infer.paths``):
every input's header is checked against the memory limit before Slicer reads it, every output is planned
(never an input), locked for the run and checked for free disk space before the first target is loaded, and
each file is written atomically.

This script only translates: arguments and files to nodes, nodes to files. :func:`main` takes the Logic and
the loaders as arguments, so its whole path (arguments, output plan, files loaded into a scene, the runs,
``.seg.nrrd`` written, nodes removed, exit status) is tested with pytest on slicer-core, with the storage-node
loaders of ``KnowledgeSAMLib.mrml``; inside Slicer it uses ``slicer.util``'s. The runs happen on this thread:
there is no GUI to keep responsive.
"""

import argparse
import os
import sys
import time

EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT = 0, 1, 2
PROG = "KnowledgeSAMBatch"


class UsageError(ValueError):
    """Bad command line (reported as one line, exit status 2)."""


def buildParser():
    from KnowledgeSAMLib import choices

    parser = argparse.ArgumentParser(
        prog=PROG, description="Segment target volumes with a knowledge prompt (reference volume + segmentation).")
    parser.add_argument("--target", nargs="+", required=True, metavar="VOLUME",
                        help="volume file(s) to segment, a folder of volumes, or a .txt file listing one per line")
    parser.add_argument("--reference", required=True, metavar="VOLUME",
                        help="the image the reference segmentation was drawn on (may be the target itself)")
    parser.add_argument("--reference-segmentation", required=True, metavar="SEGMENTATION",
                        help="reference segmentation (.seg.nrrd, or a labelmap)")
    parser.add_argument("--segments", nargs="+", default=None, metavar="NAME",
                        help="reference segment names or IDs (default: all)")
    parser.add_argument("--output", required=True, metavar="PATH",
                        help="output .seg.nrrd; with several targets a folder or a pattern containing {name}")
    parser.add_argument("--reference-slice", type=int, default=None, metavar="K",
                        help="same-volume modes: use only this labelled slice of the reference (along --axis)")
    parser.add_argument("--axis", choices=choices.AXES, default=choices.DEFAULT_AXIS)
    parser.add_argument("--mode", choices=choices.MODES, default=choices.DEFAULT_MODE)
    parser.add_argument("--device", default=choices.DEFAULT_DEVICE,
                        help=f"{', '.join(choices.DEVICES)}, or cuda:1 for the second GPU (default: %(default)s)")
    parser.add_argument("--slice-range", nargs=2, type=int, default=None, metavar=("START", "STOP"),
                        help="segment only target slices START..STOP-1 along --axis")
    parser.add_argument("--model", default=None, metavar="FOLDER",
                        help="trained model folder (default: the embedded default model)")
    parser.add_argument("--sam-checkpoint", default=None, metavar="FILE",
                        help="sam_vit_b_01ec64.pth, for models that need SAM's weights")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    return parser


def parseArguments(argv):
    """Parsed arguments; argparse errors become :class:`UsageError` (no SystemExit inside Slicer)."""
    parser = buildParser()

    def fail(message):
        raise UsageError(message)

    parser.error = fail
    return parser.parse_args(argv)


def planOutputs(targets, output, overwrite=False, inputs=()):
    """``[(target, output file)]``; refuses missing targets and ambiguous, clashing or existing outputs, outputs
    that are inputs (the targets or ``inputs``) and unwritable folders before any work starts (InputError)."""
    from KnowledgeSAMLib import mrml

    found = mrml.expand_targets(targets)
    paths = mrml.plan_outputs(found, output, "seg.nrrd", writable=mrml.SEGMENTATION_FILE_TYPES, overwrite=overwrite,
                              inputs=[path for path in inputs if path])
    return [(str(target), str(path)) for target, path in zip(found, paths)]


def checkInputFiles(args, plan):
    """Read every input's header before Slicer reads its voxels: an image beyond the memory limit (set with
    $KNOWLEDGESAM_MAX_IMAGE_GB) or with missing data is refused at once. Returns each target's voxel count
    (the size of its output, for the free-space check)."""
    from KnowledgeSAMLib import mrml

    mrml.check_image_file(args.reference, what="image")
    mrml.check_image_file(args.reference_segmentation, what="label")
    return [mrml.check_image_file(target, what="image").voxels for target, _ in plan]


def claimOutputs(plan, voxels):
    """Lock every output for this run (a second run on one of them refuses at once), finish or remove what an
    interrupted earlier run left, check the free disk space. Release with ``.release()``."""
    from KnowledgeSAMLib import mrml

    return mrml.OutputClaims([output for _, output in plan], voxels, sidecars=False, on_note=_say).acquire()


def _say(message, error=False):
    stream = sys.stderr if error else sys.stdout
    stream.write(f"{PROG}: {'error: ' if error else ''}{message}\n")
    stream.flush()


def _load(loader, path, what):
    from KnowledgeSAMLib.errors import InputError

    if not os.path.exists(path):
        raise InputError(f"{path}: {what} file not found")
    try:
        return loader(path)
    except Exception as error:  # slicer.util raises RuntimeError with Slicer's message
        raise InputError(f"{path}: could not load the {what} ({error})") from None


def main(argv, logic=None, loadVolume=None, loadSegmentation=None):
    """Run inside Slicer; returns the exit status. ``logic`` and the loaders default to Slicer's
    (``KnowledgeSAMLogic()``, ``slicer.util.loadVolume``/``loadSegmentation``); with slicer-core, pass
    ``KnowledgeSAMLib.mrml.load_volume``/``load_segmentation`` bound to a scene (the tests do)."""
    moduleDir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if moduleDir not in sys.path:
        sys.path.insert(0, moduleDir)  # KnowledgeSAM.py and KnowledgeSAMSlicer/ live here
    from KnowledgeSAMSlicer import environment

    environment.ensureLibraryImportable(__file__)
    reason = environment.libraryUnavailableReason()
    if reason:
        _say(reason, error=True)
        return EXIT_BAD_INPUT
    from KnowledgeSAMLib.errors import KnowledgeSAMError

    try:
        args = parseArguments(argv)
        plan = planOutputs(args.target, args.output, args.overwrite, inputs=[args.reference, args.reference_segmentation])
        claims = claimOutputs(plan, checkInputFiles(args, plan))
    except (UsageError, KnowledgeSAMError) as error:
        _say(str(error), error=True)
        return EXIT_BAD_INPUT
    except SystemExit as request:  # --help
        return int(request.code or 0)

    if logic is None:
        from KnowledgeSAM import KnowledgeSAMLogic

        logic = KnowledgeSAMLogic()
    if loadVolume is None or loadSegmentation is None:
        import slicer

        loadVolume, loadSegmentation = slicer.util.loadVolume, slicer.util.loadSegmentation
    try:
        return segmentAll(args, plan, logic, loadVolume, loadSegmentation)
    finally:
        claims.release()


def segmentAll(args, plan, logic, loadVolume, loadSegmentation):
    """Segment each planned target with the reference; returns the exit status.

    One ``logic`` for all targets: its Segmenter keeps the model and the reference's encoding. The loaders
    take a path and return a node (``slicer.util.loadVolume``/``loadSegmentation`` in Slicer)."""
    from KnowledgeSAMLib.errors import KnowledgeSAMError

    try:
        referenceVolume = _load(loadVolume, args.reference, "reference volume")
        referenceSegmentation = _load(loadSegmentation, args.reference_segmentation, "reference segmentation")
        logic.segmenter(args.model, args.sam_checkpoint).load_model()  # a bad model fails before any target
    except KnowledgeSAMError as error:
        _say(str(error), error=True)
        return EXIT_BAD_INPUT

    failures, written = 0, []
    try:
        failures = _segmentEach(args, plan, logic, loadVolume, referenceVolume, referenceSegmentation, written)
    except KeyboardInterrupt:
        done = ", ".join(written) if written else "none"
        _say(f"interrupted: {len(written)} of {len(plan)} output(s) written ({done}); nothing else was written",
             error=True)
        return EXIT_BAD_INPUT
    if failures:
        _say(f"{failures} of {len(plan)} target(s) failed", error=True)
        return EXIT_BAD_INPUT
    return EXIT_OK


def _segmentEach(args, plan, logic, loadVolume, referenceVolume, referenceSegmentation, written):
    """Segment and write each target in turn; a failing target is reported and the others still run.
    ``written`` collects the outputs written; returns the number of failures."""
    from KnowledgeSAMLib import mrml
    from KnowledgeSAMLib.errors import KnowledgeSAMError

    failures = 0
    for index, (targetPath, outputPath) in enumerate(plan, start=1):
        started = time.perf_counter()
        sameVolume = os.path.abspath(targetPath) == os.path.abspath(args.reference)
        target, output = None, None
        try:
            target = referenceVolume if sameVolume else _load(loadVolume, targetPath, "target volume")

            def progress(done, total, _name=mrml.target_name(targetPath)):
                if total and (done == total or done % max(1, total // 10) == 0):
                    _say(f"[{index}/{len(plan)}] {_name}: {done}/{total}")

            output = logic.segment(target, referenceVolume, referenceSegmentation, args.segments or [],
                                   referenceSliceIndex=args.reference_slice, axis=args.axis, mode=args.mode,
                                   device=args.device, progressCallback=progress,
                                   sliceRange=tuple(args.slice_range) if args.slice_range else None,
                                   model=args.model, samCheckpoint=args.sam_checkpoint)
            mrml.write_segmentation_node(output, outputPath, overwrite=args.overwrite)
            written.append(outputPath)
            _say(f"[{index}/{len(plan)}] wrote {outputPath} ({time.perf_counter() - started:.1f} s)")
        except KnowledgeSAMError as error:
            failures += 1
            _say(f"{targetPath}: {error}", error=True)
        finally:
            for node in (output, None if sameVolume else target):
                if node is not None:
                    mrml.remove_node(node)
    return failures


if __name__ == "__main__":
    status = EXIT_UNEXPECTED
    try:
        status = main(sys.argv[1:])
    except Exception:
        import traceback

        traceback.print_exc()
        status = EXIT_UNEXPECTED
    finally:
        try:
            import slicer

            slicer.util.exit(status)
        except (ImportError, AttributeError):  # plain Python (e.g. --help in a shell)
            sys.exit(status)
