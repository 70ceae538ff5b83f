"""``knowledgesam segment``: segment one or many targets with one labelled reference.

Examples::

    knowledgesam segment --target ct.nii.gz --reference-labels ct_slice40.seg.nrrd --slice 40 \\
        --output ct_kidney.seg.nrrd                       # same volume: anchor on the drawn slice
    knowledgesam segment --target patients/ --reference atlas.nrrd --reference-labels atlas.seg.nrrd \\
        --labels 1,3 --output results/                    # many targets, one cached reference

Every input is checked before any compute: headers before voxels (sizes against a memory limit), every
output planned, locked and checked for free disk space. Labels and their ``.ksam.json`` are written as one
unit (temporaries, then both renamed), never over an existing file without ``--overwrite``; Ctrl+C or
``kill`` reports exactly which outputs were written. Under ``torchrun`` the list of targets is split
across the processes (``RANK``/``WORLD_SIZE``), each on its own GPU (``LOCAL_RANK``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from .. import choices
from .._test_hooks import pause_point
from ..data.header import check_image_file
from ..data.limits import ImageSizeLimit
from ..errors import InputError, KnowledgeSAMError
from ..infer.paths import expand_targets, plan_outputs

OUTPUT_FORMATS = ("seg.nrrd", "nii.gz", "nrrd")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment target image(s) with a labelled reference (the knowledge prompt)",
        description="Segment target image(s) slice by slice, prompted by a reference image and its labels.")
    parser.add_argument("--target", required=True, nargs="+", metavar="T",
                        help="target image file(s), a folder of images, or a .txt file listing one path per line")
    parser.add_argument("--reference", metavar="R",
                        help="reference image (default: the target itself, i.e. labels drawn on the target)")
    parser.add_argument("--reference-labels", required=True, metavar="L",
                        help="labels of the reference: Slicer .seg.nrrd or a labelmap (NIfTI/NRRD/PNG)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--labels", metavar="1,3", help="label values of the reference to segment (default: all)")
    which.add_argument("--segments", metavar="NAME,...", help="segment names of the reference to segment")
    parser.add_argument("--slice", metavar="K", help="labelled reference slice(s) to use, e.g. 40 or 38,45 "
                        "(index along --axis; default: every slice where the structure is labelled)")
    parser.add_argument("--slice-range", metavar="A:B", help="only segment target slices A..B-1 along --axis")
    parser.add_argument("--keep-slices", metavar="K,...",
                        help="the annotator's slices of --reference-labels (same as --slice): kept exactly as drawn "
                             "and used as prompts, complete (a structure not drawn on one of them is absent there); "
                             "its other labelled slices are an earlier result (see --update)")
    parser.add_argument("--absent-slices", metavar="SPEC",
                        help="target slices where a structure is absent, kept empty and never propagated into: "
                             "'12,30' (every structure) or 'head=12,30;body=5'")
    parser.add_argument("--update", type=int, metavar="K",
                        help="with --keep-slices: after correcting slice K, re-segment only the slab between its "
                             "labelled neighbours; every other slice comes from --reference-labels (the earlier "
                             "result), so a scripted annotation loop recomputes only what changed")
    parser.add_argument("--axis", default=choices.DEFAULT_AXIS, choices=choices.AXES)
    parser.add_argument("--mode", default=choices.DEFAULT_MODE, choices=choices.MODES,
                        help="auto: anchor when the reference is the target, volume when it is another image")
    parser.add_argument("--model", default=choices.DEFAULT_MODEL,
                        help="'default' (embedded model), a saved model folder, or a config name (random weights)")
    parser.add_argument("--sam-checkpoint", metavar="PATH",
                        help="pretrained base checkpoint (SAM ViT-B or LiteMedSAM layout) for models that reference "
                             "it instead of storing it; another file than the official one needs --sam-sha256")
    parser.add_argument("--sam-sha256", metavar="HASH",
                        help="SHA256 of your own fine-tuned --sam-checkpoint (accepted only with exactly this hash)")
    parser.add_argument("--roi", default="auto", metavar="ROI",
                        help="where the model looks: auto (default: around the reference's structures, found in the "
                             "target by a coarse first pass), none (whole slices), x0,y0,z0,x1,y1,z1 (target voxel "
                             "indices, inclusive) or ras:R0,A0,S0,R1,A1,S1 (millimetres, as Slicer shows them)")
    parser.add_argument("--device", default=choices.DEFAULT_DEVICE, choices=choices.DEVICES)
    parser.add_argument("--batch-size", type=int, default=choices.DEFAULT_BATCH_SIZE, metavar="N")
    parser.add_argument("--cpu-runtime", default=None, choices=choices.CPU_RUNTIMES,
                        help="what runs the image encoder and heads on a CPU: auto (default: OpenVINO, else ONNX "
                             "Runtime, for models of 128 px or more), openvino, onnxruntime or torch (eager PyTorch)")
    parser.add_argument("--preset", default=choices.DEFAULT_PRESET, help="intensity preset: auto, ct-abdomen, ct:W/L, mr, rgb, ...")
    parser.add_argument("--top-k", type=int, default=None,
                        help=f"volume mode: references fused per slice (default 1, at most {choices.MAX_TOP_K})")
    parser.add_argument("--largest-component", action="store_true",
                        help="keep only the largest 3D connected component of each structure")
    parser.add_argument("--flip-tta", default=None, action=argparse.BooleanOptionalAction,
                        help="also segment the left-right mirrored target with the mirrored reference and "
                             "average the two (twice the compute; default: the engine's, see EngineOptions)")
    parser.add_argument("--overlap", default=None, choices=choices.OVERLAPS,
                        help="auto (default): structures sharing a layer in the reference stay exclusive; "
                             "layers: every structure keeps its own mask (may overlap); argmax: all exclusive")
    parser.add_argument("--contested", default=None, choices=choices.CONTESTED,
                        help="who keeps a voxel two exclusive structures claim: the smaller structure (default) "
                             "or the more probable one")
    parser.add_argument("--output", required=True, metavar="OUT",
                        help="output file (.seg.nrrd, .nii.gz, .nrrd), or a folder when there are several targets, "
                             "or a pattern such as results/{name}-ksam.seg.nrrd")
    parser.add_argument("--format", default="seg.nrrd", choices=OUTPUT_FORMATS,
                        help="file type written into an output folder (default seg.nrrd)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--max-image-gb", type=float, default=None, metavar="GB",
                        help="largest image (decoded, in memory) to read; default: a quarter of the free memory "
                             "(or $KNOWLEDGESAM_MAX_IMAGE_GB)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


# ------------------------------------------------------------------------------------------ parsing

def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _ints(text: str | None, what: str) -> list[int]:
    try:
        return [int(part) for part in _split(text)]
    except ValueError:
        raise InputError(f"{what} must be integers separated by commas, got {text!r}") from None


def shard(items: Sequence[Any]) -> tuple[list[Any], int, int]:
    """This process's share of ``items`` under torchrun (``RANK``/``WORLD_SIZE``); all of them otherwise."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise KnowledgeSAMError(f"invalid torchrun environment RANK={rank} WORLD_SIZE={world}")
    return list(items[rank::world]), rank, world


def _device_for_rank(device: str, world: int) -> str:
    """Under torchrun with CUDA, each process takes its own GPU (``LOCAL_RANK``)."""
    if world > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"
    return device


# ------------------------------------------------------------------------------------------- running

def _say(kind: str, message: str) -> None:
    """Warnings, notices and reports go to stderr: stdout holds only results."""
    print(f"knowledgesam: {kind}: {message}", file=sys.stderr)


@dataclass
class Inputs:
    """The parsed and checked command: reference read once, targets as paths (read one at a time)."""

    targets: list[Path]
    outputs: list[Path]
    reference_path: Path | None
    labels_path: Path
    wanted: list[Any]
    target_voxels: list[int] = field(default_factory=list)  # from the headers: the outputs' size on disk
    limit: ImageSizeLimit | None = None


def _wanted(args: argparse.Namespace) -> list[Any]:
    """``--labels``/``--segments`` as given; a list that names nothing (``--labels ,``) is refused, not "all"."""
    if args.labels is not None:
        values = _ints(args.labels, "--labels")
        if not values:
            raise InputError(f"--labels {args.labels!r} names no label value; give values such as 1,3 "
                             "(or leave --labels out to segment all)")
        return values
    if args.segments is not None:
        names = _split(args.segments)
        if not names:
            raise InputError(f"--segments {args.segments!r} names no segment; give names such as cortex,medulla "
                             "(or leave --segments out to segment all)")
        return names
    return []


def _size_limit(args: argparse.Namespace) -> ImageSizeLimit:
    if args.max_image_gb is None:
        return ImageSizeLimit.default()
    if not args.max_image_gb > 0:
        raise InputError(f"--max-image-gb must be positive, got {args.max_image_gb}")
    return ImageSizeLimit.from_gb(args.max_image_gb, f"set by --max-image-gb {args.max_image_gb:g}")


def check_inputs(args: argparse.Namespace) -> Inputs:
    """Everything that can fail without reading voxels or the model: fail fast, before compute.

    Reads every input's header (sizes against the memory limit, voxel data present) and plans every output
    (not an input, writable, not existing unless --overwrite)."""
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    wanted = _wanted(args)
    limit = _size_limit(args)
    targets = expand_targets(args.target)
    labels_path = Path(args.reference_labels).expanduser()
    if not labels_path.exists():
        raise InputError(f"{labels_path}: reference labels not found")
    reference_path = Path(args.reference).expanduser() if args.reference else None
    if reference_path is not None and not reference_path.exists():
        raise InputError(f"{reference_path}: reference image not found")
    voxels = [check_image_file(target, limit, "image", data=False).voxels for target in targets]
    if reference_path is not None:
        check_image_file(reference_path, limit, "image")
    check_image_file(labels_path, limit, "label")
    inputs = [labels_path] + ([reference_path] if reference_path is not None else [])
    outputs = plan_outputs(targets, args.output, args.format, overwrite=args.overwrite, sidecars=True,
                           inputs=inputs, refuse_existing=False)  # checked under the lock, after recovery
    return Inputs(targets, outputs, reference_path, labels_path, wanted, voxels, limit)


def _options(args: argparse.Namespace):
    from ..infer.request import EngineOptions

    changes: dict[str, Any] = {}
    if args.top_k is not None:
        if args.top_k < 1:
            raise InputError(f"--top-k must be at least 1, got {args.top_k}")
        if args.top_k > choices.MAX_TOP_K:
            _say("warning", f"--top-k {args.top_k} capped at {choices.MAX_TOP_K}: each fused reference slice costs "
                            "one decoder pass per slice and structure")
        changes["top_k"] = min(args.top_k, choices.MAX_TOP_K)
    if args.largest_component:
        changes["largest_component"] = True
    for option in ("overlap", "contested", "flip_tta", "cpu_runtime"):
        if getattr(args, option) is not None:
            changes[option] = getattr(args, option)
    return EngineOptions(**changes)


def _slice_range(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError:
        raise InputError(f"--slice-range must look like A:B, got {text!r}") from None
    return start, stop


class _Bar:
    """tqdm bar driven by the engine's ``progress(done, total)`` callback."""

    def __init__(self, description: str, disable: bool, position: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=1, desc=description, unit="step", disable=disable, position=position, leave=True,
                        dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        pause_point("compute")
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``), handled like Ctrl+C: stop, say exactly what was written, exit 143."""


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    def stop(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_report(written: Sequence[Path], planned: int) -> str:
    """Exactly what an interrupted run left behind (every output is complete or absent)."""
    if not written:
        return "no output was written"
    names = ", ".join(str(path) for path in written)
    return (f"{len(written)} of {planned} output(s) written, each with its .ksam.json: {names}; "
            "nothing else was written")


@dataclass
class _Run:
    """What every target of one command shares."""

    args: argparse.Namespace
    inputs: Inputs
    segmenter: Any
    reference: Any
    labels: Any
    wanted: list[Any]
    fields: dict[str, Any]  # the SegmentRequest fields every target shares (mode, axis, options, ...)
    position: int
    told: set[str] = field(default_factory=set)  # notices already shown (one reference: once per command)


def _request_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The request as the arguments give it; every problem here is refused before any file is read."""
    from ..infer.roi import parse_roi

    if args.slice and args.keep_slices:
        raise InputError("give the annotator's slices once: --slice or --keep-slices")
    reference_slices = _ints(args.slice or args.keep_slices, "--keep-slices" if args.keep_slices else "--slice") or None
    if args.update is not None and reference_slices is None:
        raise InputError("--update needs --keep-slices (the annotator's slices; the rest is an earlier result)")
    return dict(mode=args.mode, axis=args.axis, reference_slices=reference_slices,
                slice_range=_slice_range(args.slice_range), batch_size=args.batch_size, preset=args.preset,
                options=_options(args), roi=parse_roi(args.roi), absent_slices=_absent_spec(args.absent_slices))


def _prepare(args: argparse.Namespace, inputs: Inputs, fields: dict[str, Any], position: int) -> _Run:
    """Read the reference and its labels, load the model: everything before the first target's compute."""
    from ..data.io import read_image, read_labels
    from ..infer.segmenter import Segmenter

    reference = read_image(inputs.reference_path, inputs.limit) if inputs.reference_path else None
    labels = read_labels(inputs.labels_path, inputs.limit)
    wanted = [find_segment(labels, key, inputs.labels_path) for key in inputs.wanted]
    segmenter = Segmenter(args.model, args.sam_checkpoint, sam_sha256=args.sam_sha256)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        segmenter.load_model()
    for warning in caught:
        _say("warning", str(warning.message))
    return _Run(args, inputs, segmenter, reference, labels, wanted, fields, position)


def _segment_one(run: _Run, target_path: Path, output_path: Path, written: list[Path]) -> None:
    from ..data.io import read_image
    from ..infer import SegmentRequest
    from ..infer.output import write_result
    from ..infer.segmenter import Sources

    args = run.args
    target = read_image(target_path, run.inputs.limit)
    request = SegmentRequest(target=target, reference=run.reference if run.reference is not None else target,
                             reference_labels=run.labels, segments=run.wanted, **run.fields)
    for note in run.segmenter.check(request).notes:  # bad input is refused here, before any compute
        if note not in run.told:
            run.told.add(note)
            _say("notice", note)
    sources = Sources(target=str(target_path), reference=str(run.inputs.reference_path or target_path),
                      reference_labels=str(run.inputs.labels_path))
    bar = _Bar(target_path.name, args.quiet, run.position)
    try:
        if args.update is not None:  # the annotator's loop: only the slab the corrected slice can change
            from ..infer.interactive import update_slab
            from ..infer.output import earlier_confidence

            result = update_slab(lambda r: run.segmenter.segment(r, progress=bar, sources=sources), request,
                                 args.update, earlier_confidence(run.inputs.labels_path, request.axis))
        else:
            result = run.segmenter.segment(request, progress=bar, sources=sources)
    finally:
        bar.close()
    written_files = write_result(result, output_path, overwrite=args.overwrite,
                                 on_commit=lambda: written.append(output_path))
    for warning in result.provenance.get("warnings", []):
        _say("warning", warning)
    summary = ", ".join(f"{s.name}={int(result.labels.mask(s).sum())} voxels" for s in result.labels.segments)
    print(f"{output_path}: {result.provenance['mode']} mode on {result.provenance['device']} "
          f"in {result.provenance['timings']['total_s']:.1f} s ({summary}); provenance in {written_files[-1].name}")
    look = result.provenance.get("next_slice_to_check")
    if look:  # propagate mode: where a correction pays most (the most likely-wrong voxels around it)
        confidence = "" if look["confidence"] is None else f", confidence {look['confidence']:.2f}"
        print(f"{output_path}: next slice to check: {look['slice']} ({look['segment']}{confidence})")
    pause_point("written")


def run(args: argparse.Namespace) -> int:
    from ..infer.claims import OutputClaims

    inputs = check_inputs(args)
    fields = _request_fields(args)
    jobs, rank, world = shard(list(zip(inputs.targets, inputs.outputs, inputs.target_voxels)))
    fields["device"] = _device_for_rank(args.device, world)
    written: list[Path] = []
    with OutputClaims([output for _, output, _ in jobs], [voxels for *_, voxels in jobs], overwrite=args.overwrite,
                      on_note=lambda note: _say("notice", note)):
        try:
            with _terminate_as_interrupt():
                prepared = _prepare(args, inputs, fields, rank if world > 1 else 0)
                for target_path, output_path, _ in jobs:
                    _segment_one(prepared, target_path, output_path, written)
        except KeyboardInterrupt as stop:
            cause = "terminated" if isinstance(stop, Terminated) else "interrupted"
            _say(cause, interrupted_report(written, len(jobs)))
            return 143 if isinstance(stop, Terminated) else 130
    return 0


def _absent_spec(text: str | None) -> list[int] | dict[str, list[int]] | None:
    """``--absent-slices``: '12,30' (every structure) or 'head=12,30;body=5' (per structure)."""
    if not text or not text.strip():
        return None
    if "=" not in text:
        return _ints(text, "--absent-slices")
    out: dict[str, list[int]] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, _, ks = part.partition("=")
        if not name.strip() or not ks.strip():
            raise InputError(f"--absent-slices must look like 'head=12,30;body=5', got {text!r}")
        out[name.strip()] = _ints(ks, "--absent-slices")
    return out


def find_segment(labels, key: Any, path: Path):
    """A reference segment by label value (``--labels``) or name (``--segments``), or a clear error."""
    have = ", ".join(f"{s.name}={s.label_value}" for s in labels.segments) or "no segments"
    if isinstance(key, int):
        matches = [s for s in labels.segments if s.label_value == key]
        if len(matches) > 1:
            names = ", ".join(s.name for s in matches)
            raise InputError(f"{path}: label value {key} is used by several segments ({names}) on different "
                             "layers; choose with --segments NAME")
        if not matches:
            raise InputError(f"{path}: label value {key} is not in the reference labels ({have})")
        return matches[0]
    try:
        return labels.find(key)
    except KeyError:
        raise InputError(f"{path}: segment {key!r} is not in the reference labels ({have})") from None
