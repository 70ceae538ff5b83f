"""``knowledgesam segment``: segment one or many targets with one labelled reference.

Examples::

    knowledgesam segment --target ct.nii.gz --reference-labels ct_slice40.seg.nrrd --slice 40 \\
        --output ct_kidney.seg.nrrd                       # same volume: anchor on the drawn slice
    knowledgesam segment --target patients/ --reference atlas.nrrd --reference-labels atlas.seg.nrrd \\
        --labels 1,3 --output results/                    # many targets, one cached reference

Every input is checked before any compute; outputs are written atomically (temporary file + rename),
never over an existing file without ``--overwrite``. Under ``torchrun`` the list of targets is split
across the processes (``RANK``/``WORLD_SIZE``), each on its own GPU (``LOCAL_RANK``).
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import choices
from ..errors import InputError, KnowledgeSAMError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".png")
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
    parser.add_argument("--axis", default=choices.DEFAULT_AXIS, choices=choices.AXES)
    parser.add_argument("--mode", default=choices.DEFAULT_MODE, choices=choices.MODES,
                        help="auto: anchor when the reference is the target, volume when it is another image")
    parser.add_argument("--model", default=choices.DEFAULT_MODEL,
                        help="'default' (embedded model), a saved model folder, or a config name (random weights)")
    parser.add_argument("--sam-checkpoint", metavar="PATH", help="SAM ViT-B checkpoint, for models built on it")
    parser.add_argument("--device", default=choices.DEFAULT_DEVICE, choices=choices.DEVICES)
    parser.add_argument("--batch-size", type=int, default=choices.DEFAULT_BATCH_SIZE, metavar="N")
    parser.add_argument("--preset", default=choices.DEFAULT_PRESET, help="intensity preset: auto, ct-abdomen, ct:W/L, mr, rgb, ...")
    parser.add_argument("--top-k", type=int, default=None, help="volume mode: references fused per slice (default 1)")
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
                        help="output file (.seg.nrrd, .nii.gz, .nrrd), or a folder when there are several targets")
    parser.add_argument("--format", default="seg.nrrd", choices=OUTPUT_FORMATS,
                        help="file type written into an output folder (default seg.nrrd)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
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


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes))


def _is_dicom_folder(folder: Path) -> bool:
    return not any(_has_suffix(p, IMAGE_SUFFIXES) for p in folder.iterdir() if p.is_file())


def expand_targets(items: Sequence[str]) -> list[Path]:
    """Files as given; a folder of images → its images (sorted); a DICOM folder → itself; a .txt → its lines."""
    targets: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_file() and path.suffix.lower() == ".txt":
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            targets.extend(Path(line).expanduser() if Path(line).is_absolute() else path.parent / line
                           for line in lines if line and not line.startswith("#"))
        elif path.is_dir() and not _is_dicom_folder(path):
            found = sorted(p for p in path.iterdir() if p.is_file() and _has_suffix(p, IMAGE_SUFFIXES)
                           and not p.name.lower().endswith(".seg.nrrd"))
            if not found:
                raise InputError(f"{path}: folder contains no images")
            targets.extend(found)
        else:
            targets.append(path)
    for target in targets:
        if not target.exists():
            raise InputError(f"{target}: target image not found")
    if not targets:
        raise InputError("no target images given")
    return targets


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def output_paths(targets: Sequence[Path], output: str, fmt: str) -> list[Path]:
    """One output per target: ``OUT`` itself for one target with a file name, else ``OUT/<stem>.<fmt>``."""
    out = Path(output).expanduser()
    as_file = _has_suffix(out, LABEL_SUFFIXES) and not out.is_dir()
    if len(targets) == 1 and as_file:
        return [out]
    if as_file:
        raise InputError(f"{out}: several targets need an output folder, not a file name")
    paths = [out / f"{_stem(t)}.{fmt}" for t in targets]
    seen: dict[Path, Path] = {}
    for target, path in zip(targets, paths):
        if path in seen:
            raise InputError(f"{target} and {seen[path]} would both be written to {path}; rename one of them")
        seen[path] = target
    return paths


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


def resolve_model(name_or_path: str, sam_checkpoint: str | None = None):
    """The model for ``--model``: through the registry (default model, folder or config name); falls back
    to loading a saved folder or building a config when the registry is unavailable."""
    try:
        from ..model.registry import resolve_model as registry_resolve
    except ImportError:  # pragma: no cover - the registry ships with the package
        registry_resolve = None
    if registry_resolve is not None:
        return registry_resolve(name_or_path, sam_checkpoint=sam_checkpoint)
    path = Path(name_or_path).expanduser()  # pragma: no cover
    if path.is_dir():  # pragma: no cover
        from ..model.weights import load_model

        return load_model(path, sam_checkpoint=sam_checkpoint)
    from ..model.build import build_model  # pragma: no cover

    return build_model(name_or_path, sam_checkpoint=sam_checkpoint)  # pragma: no cover


# ------------------------------------------------------------------------------------------- running

@dataclass
class Inputs:
    """The parsed command: reference read once, targets as paths (read one at a time)."""

    targets: list[Path]
    outputs: list[Path]
    reference_path: Path | None
    labels_path: Path
    wanted: list[Any]


def check_inputs(args: argparse.Namespace) -> Inputs:
    """Everything that can fail without reading images or the model: fail fast, before compute."""
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    targets = expand_targets(args.target)
    outputs = output_paths(targets, args.output, args.format)
    if not args.overwrite:
        from ..infer.output import sidecar_path

        for path in outputs:
            for candidate in (path, sidecar_path(path)):
                if candidate.exists():
                    raise InputError(f"{candidate}: file exists; not overwriting it (use --overwrite)")
    labels_path = Path(args.reference_labels).expanduser()
    if not labels_path.exists():
        raise InputError(f"{labels_path}: reference labels not found")
    reference_path = Path(args.reference).expanduser() if args.reference else None
    if reference_path is not None and not reference_path.exists():
        raise InputError(f"{reference_path}: reference image not found")
    wanted: list[Any] = _ints(args.labels, "--labels") if args.labels else _split(args.segments)
    return Inputs(targets, outputs, reference_path, labels_path, wanted)


def _options(args: argparse.Namespace):
    from ..infer.request import EngineOptions

    changes: dict[str, Any] = {}
    if args.top_k is not None:
        if args.top_k < 1:
            raise InputError(f"--top-k must be at least 1, got {args.top_k}")
        changes["top_k"] = args.top_k
    if args.largest_component:
        changes["largest_component"] = True
    for option in ("overlap", "contested", "flip_tta"):
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
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def run(args: argparse.Namespace) -> int:
    from ..data.io import read_image, read_labels
    from ..infer import SegmentRequest, segment
    from ..infer.output import write_result
    from ..infer.reference import ReferenceCache

    inputs = check_inputs(args)
    options = _options(args)
    slice_range = _slice_range(args.slice_range)
    reference_slices = _ints(args.slice, "--slice") or None
    targets, rank, world = shard(list(zip(inputs.targets, inputs.outputs)))
    device = _device_for_rank(args.device, world)

    reference = read_image(inputs.reference_path) if inputs.reference_path else None
    labels = read_labels(inputs.labels_path)
    wanted = [find_segment(labels, key, inputs.labels_path) for key in inputs.wanted]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = resolve_model(args.model, args.sam_checkpoint)
    for warning in caught:
        print(f"knowledgesam: warning: {warning.message}")
    cache = ReferenceCache()
    for target_path, output_path in targets:
        target = read_image(target_path)
        request = SegmentRequest(
            target=target, reference=reference if reference is not None else target, reference_labels=labels,
            segments=wanted, mode=args.mode, axis=args.axis, reference_slices=reference_slices,
            slice_range=slice_range, device=device, batch_size=args.batch_size, preset=args.preset,
            options=options)
        bar = _Bar(target_path.name, args.quiet, rank if world > 1 else 0)
        try:
            result = segment(request, model, progress=bar, reference_cache=cache)
        finally:
            bar.close()
        result.provenance["target"] = str(target_path)
        result.provenance["reference"] = str(inputs.reference_path or target_path)
        result.provenance["reference_labels"] = str(inputs.labels_path)
        result.provenance["model"]["source"] = str(args.model)
        written = write_result(result, output_path, overwrite=args.overwrite)
        summary = ", ".join(f"{s.name}={int(result.labels.mask(s).sum())} voxels" for s in result.labels.segments)
        print(f"{output_path}: {result.provenance['mode']} mode on {result.provenance['device']} "
              f"in {result.provenance['timings']['total_s']:.1f} s ({summary}); provenance in {written[-1].name}")
    return 0


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
