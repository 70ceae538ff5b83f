"""``knowledgesam phantom KIND``: write procedural cases with ground truth, for demos, tests and evaluation.

Kinds: ``kidney``, ``kidney-roi`` and ``fundus`` come from the training generators
(:mod:`KnowledgeSAMLib.data.phantoms`); ``kidney-full`` (whole abdominal CT, 512² slices in HU) and
``fundus-full`` (whole fundus photograph) come from the independent *unseen* generator family
(:mod:`KnowledgeSAMLib.data.unseen_phantoms`), which exists only to measure generalisation and is imported
here only when one of those kinds is asked for.

Files: ``case_XXX_image.nii.gz`` (CT) or ``case_XXX_image.png`` (fundus), each with
``case_XXX_labels.seg.nrrd`` (Slicer segmentation: names, colours, layers). Case ``i`` uses seed
``--seed + i``, so a set is reproducible. Nothing is overwritten without ``--overwrite``, and the check is
made for every file before the first one is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.phantoms.kidney_anatomy import PHASES
from ..errors import InputError

KINDS = ("kidney", "kidney-roi", "fundus", "kidney-full", "fundus-full")
UNSEEN_KINDS = ("kidney-full", "fundus-full")  # the evaluation-only generator family


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom", help="write procedural phantom cases (kidney CT or fundus photo) with labels",
        description=__doc__.split("\n\n")[0].split(": ", 1)[-1])
    parser.add_argument("kind", choices=KINDS, help="kidney: 3D abdominal CT (artery/medulla/cortex); "
                                                    "kidney-roi: the same cropped around one kidney (the data the "
                                                    "default model is made for); fundus: 2D colour photo (disc/cup); "
                                                    "kidney-full / fundus-full: whole-field CT / fundus photo from "
                                                    "the independent unseen generator (evaluation only)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--n", type=int, default=1, help="number of cases (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    parser.add_argument("--size", type=int, default=None,
                        help="fundus: image side in pixels (default 256); fundus-full: overrides the drawn size")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(40, 128, 128),
                        help="kidney: volume shape (default 40 128 128)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), default=(1.5, 1.5, 3.0),
                        help="kidney: voxel size in mm (default 1.5 1.5 3.0)")
    parser.add_argument("--matrix", type=int, default=512,
                        help="kidney-full: in-plane pixels (default 512; the field of view stays as drawn)")
    parser.add_argument("--slices", type=int, default=None,
                        help="kidney-full: number of slices (default: drawn per case, 40-80)")
    parser.add_argument("--organs", action="store_true",
                        help="kidney: also label kidney_right, kidney_left, liver, spleen, aorta, inferior_vena_cava, "
                             "vertebra and bowel (a second layer)")
    parser.add_argument("--phase", default="corticomedullary", choices=PHASES,
                        help="kidney: contrast phase (default corticomedullary; the others need --organs: cortex and "
                             "medulla look alike there, so only the organs are labelled)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case files")
    parser.set_defaults(func=run)


def case_paths(out: Path, kind: str, index: int, width: int) -> tuple[Path, Path]:
    stem = f"case_{index:0{width}d}"
    image_ext = ".png" if kind in ("fundus", "fundus-full") else ".nii.gz"
    return out / f"{stem}_image{image_ext}", out / f"{stem}_labels.seg.nrrd"


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.io import write_image, write_labels
    from ..data.phantoms import make_fundus_phantom, make_kidney_phantom, make_kidney_roi_phantom

    if args.n < 1:
        raise InputError(f"--n must be at least 1, got {args.n}")
    if args.kind == "kidney" and (min(args.shape) < 1 or min(args.shape[1:]) < 16):
        raise InputError(f"--shape must be positive with Y, X >= 16, got {' '.join(map(str, args.shape))}")
    if args.kind == "kidney" and min(args.spacing) <= 0:
        raise InputError(f"--spacing must be positive, got {' '.join(map(str, args.spacing))}")
    if args.kind in ("fundus", "fundus-full") and args.size is not None and args.size < 32:
        raise InputError(f"--size must be at least 32, got {args.size}")
    if (args.organs or args.phase != "corticomedullary") and args.kind != "kidney":
        raise InputError(f"--organs and --phase are for kidney phantoms, not {args.kind}")
    if args.phase != "corticomedullary" and not args.organs:
        raise InputError(f"--phase {args.phase} labels only the organs: add --organs")
    if args.kind == "kidney-full" and args.matrix < 32:
        raise InputError(f"--matrix must be at least 32, got {args.matrix}")
    if args.kind == "kidney-full" and args.slices is not None and args.slices < 4:
        raise InputError(f"--slices must be at least 4, got {args.slices}")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    width = max(3, len(str(args.n - 1)))
    paths = [case_paths(out, args.kind, i, width) for i in range(args.n)]
    if not args.overwrite:
        existing = [p for pair in paths for p in pair if p.exists()]
        if existing:
            more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
            raise InputError(f"{existing[0]}: file exists{more}; not overwriting (use --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    for index, (image_path, labels_path) in enumerate(tqdm(paths, desc=f"{args.kind} phantoms", unit="case")):
        seed = args.seed + index
        if args.kind in UNSEEN_KINDS:
            image, labels = _unseen_case(args, seed)
        elif args.kind == "kidney":
            image, labels = make_kidney_phantom(seed, shape=tuple(args.shape), spacing=tuple(args.spacing),
                                                anatomy=args.organs, phase=args.phase)
        elif args.kind == "kidney-roi":
            image, labels = make_kidney_roi_phantom(seed)
        else:
            image, labels = make_fundus_phantom(seed, size=args.size or 256)
        write_image(image, image_path, overwrite=args.overwrite)
        write_labels(labels, labels_path, overwrite=args.overwrite)
    print(f"wrote {args.n} {args.kind} case(s) to {out}")
    return 0


def _unseen_case(args: argparse.Namespace, seed: int):
    """A case of the unseen family; the package is imported here, only when such a kind is asked for."""
    from ..data.unseen_phantoms import make_fundus_full_phantom, make_kidney_full_phantom

    if args.kind == "kidney-full":
        return make_kidney_full_phantom(seed, matrix=args.matrix, slices=args.slices)
    return make_fundus_full_phantom(seed, size=args.size)
