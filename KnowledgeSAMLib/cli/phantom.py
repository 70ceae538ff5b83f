"""``knowledgesam phantom kidney|fundus``: write procedural cases with ground truth, for demos and tests.

Files: ``case_XXX_image.nii.gz`` (kidney CT) or ``case_XXX_image.png`` (fundus), each with
``case_XXX_labels.seg.nrrd`` (Slicer segmentation: names, colours, layers). Case ``i`` uses seed
``--seed + i``, so a set is reproducible. Nothing is overwritten without ``--overwrite``, and the check is
made for every file before the first one is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError

KINDS = ("kidney", "kidney-roi", "fundus")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom", help="write procedural phantom cases (kidney CT or fundus photo) with labels",
        description=__doc__.split("\n\n")[0].split(": ", 1)[-1])
    parser.add_argument("kind", choices=KINDS, help="kidney: 3D abdominal CT (artery/medulla/cortex); "
                                                    "kidney-roi: the same cropped around one kidney (the data the "
                                                    "default model is made for); fundus: 2D colour photo (disc/cup)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    parser.add_argument("--n", type=int, default=1, help="number of cases (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0)")
    parser.add_argument("--size", type=int, default=256, help="fundus: image side in pixels (default 256)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(40, 128, 128),
                        help="kidney: volume shape (default 40 128 128)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), default=(1.5, 1.5, 3.0),
                        help="kidney: voxel size in mm (default 1.5 1.5 3.0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case files")
    parser.set_defaults(func=run)


def case_paths(out: Path, kind: str, index: int, width: int) -> tuple[Path, Path]:
    stem = f"case_{index:0{width}d}"
    image_ext = ".png" if kind == "fundus" else ".nii.gz"
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
    if args.kind == "fundus" and args.size < 32:
        raise InputError(f"--size must be at least 32, got {args.size}")
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
        if args.kind == "kidney":
            image, labels = make_kidney_phantom(seed, shape=tuple(args.shape), spacing=tuple(args.spacing))
        elif args.kind == "kidney-roi":
            image, labels = make_kidney_roi_phantom(seed)
        else:
            image, labels = make_fundus_phantom(seed, size=args.size)
        write_image(image, image_path, overwrite=args.overwrite)
        write_labels(labels, labels_path, overwrite=args.overwrite)
    print(f"wrote {args.n} {args.kind} case(s) to {out}")
    return 0
