"""``knowledgesam evaluate``: Dice and HD95 per structure of a prediction against a ground truth.

Examples::

    knowledgesam evaluate --prediction pred.seg.nrrd --truth truth.nii.gz
    knowledgesam evaluate --prediction p.nii.gz --truth t.nii.gz --labels 1,2 --json
    knowledgesam evaluate --prediction p.seg.nrrd --truth t.seg.nrrd --segments head,body \\
        --image t1.nii.gz --overlay check.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError

__all__ = ["register", "run"]


def _label_values(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated label values such as 1,3; got {text!r}")
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"label values must be positive integers; got {text!r}")
    return values


def _segment_names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated segment names such as head,body; got {text!r}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="Dice and 95%% Hausdorff distance per structure of a prediction against a ground truth",
        description="Score a predicted segmentation against a ground truth: Dice and HD95 (mm) per structure "
                    "and their mean. Structures are paired by name when both files name them, else by label "
                    "value. A prediction on another grid is resampled onto the truth grid (nearest neighbour).",
    )
    parser.add_argument("--prediction", required=True, metavar="P",
                        help="predicted labels (.seg.nrrd, .nii.gz, .nrrd, .mha, .png)")
    parser.add_argument("--truth", required=True, metavar="T", help="ground-truth labels")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--labels", type=_label_values, metavar="1,3", help="evaluate these label values")
    which.add_argument("--segments", type=_segment_names, metavar="head,body", help="evaluate these segment names")
    parser.add_argument("--missing-as-empty", action="store_true",
                        help="score a structure absent from the prediction as an empty prediction instead of failing")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    parser.add_argument("--overlay", metavar="OUT.png",
                        help="also write a PNG montage of truth and prediction outlines")
    parser.add_argument("--image", metavar="I", help="image shown under the overlay outlines (on the truth grid)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --overlay file")
    parser.set_defaults(func=run)


def _check_overlay_path(path: str, overwrite: bool) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise InputError(f"{out}: the overlay is written as PNG; give a file name ending in .png")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: file exists; pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist")
    return out


def _overlay_image(path: str, truth):
    """The image under the outlines; it must lie on the truth grid (images are not resampled here)."""
    from ..data import io

    image = io.read_image(path)
    if image.shape == truth.shape and image.geometry.same_grid(truth.geometry):
        return image.array
    raise InputError(f"{path}: image grid {image.shape} (spacing {image.geometry.spacing}, origin "
                     f"{image.geometry.origin}) differs from the truth grid {truth.shape}; give the image "
                     "the truth was drawn on")


def run(args: argparse.Namespace) -> int:
    from ..data import io
    from ..evaluation.report import evaluate_labels, format_table

    overlay_path = _check_overlay_path(args.overlay, args.overwrite) if args.overlay else None
    if args.image and not args.overlay:
        raise InputError("--image is only used for the --overlay picture; add --overlay OUT.png")
    for path, what in ((args.prediction, "prediction"), (args.truth, "truth"), (args.image, "image")):
        if path and not Path(path).exists():
            raise InputError(f"{path}: {what} file not found")

    truth = io.read_labels(args.truth)
    prediction = io.read_labels(args.prediction)
    report = evaluate_labels(prediction, truth, args.labels, args.segments, args.missing_as_empty,
                             keep_masks=overlay_path is not None)

    if overlay_path is not None:
        from ..evaluation.overlay import render_overlay, save_overlay

        image = _overlay_image(args.image, truth) if args.image else None
        picture = render_overlay([(n, t) for n, _, t in report.masks], [(n, p) for n, p, _ in report.masks],
                                 truth.geometry, image)
        save_overlay(picture, overlay_path, overwrite=args.overwrite)

    if args.json:
        payload = report.to_json()
        if overlay_path is not None:
            payload["overlay"] = str(overlay_path)
        print(json.dumps(payload, indent=2, allow_nan=False))
    else:
        print(format_table(report))
        if overlay_path is not None:
            print(f"overlay written to {overlay_path}")
    return 0
