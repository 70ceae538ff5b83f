#!/usr/bin/env python
"""The README's ROI picture: one whole-abdomen CT slice segmented on whole slices (``--roi none``) and with
``--roi auto``, the regions the model looked at drawn in.

The case is a pair of the *unseen* kidney family (:mod:`KnowledgeSAMLib.data.unseen_phantoms`: 512² slices,
spine, ribs, bowel, both kidneys), a generator no training or tuning step uses; a figure is not a tuning step.
The Dice printed under each panel is the 3D Dice of the whole case, per structure::

    python bench/roi_figure.py                       # writes docs/images/roi-auto.png
    python bench/roi_figure.py --target-seed 3 --out /tmp/roi.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# truth outlines green, prediction outlines warm (as the evaluation montage), one colour per structure
COLOURS = {"artery": (255, 40, 40), "medulla": (255, 0, 255), "cortex": (255, 170, 0)}
TRUTH = (0, 230, 0)
ROI = (0, 200, 255)


def _panel(grey: np.ndarray, masks: dict[str, np.ndarray], colours: dict[str, tuple], boxes=(),
           title: str = "") -> PILImage.Image:
    from KnowledgeSAMLib.evaluation.metrics import surface

    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for name, mask in masks.items():
        rgb[surface(mask)] = colours[name]
    image = PILImage.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle([x0, y0, x1, y1], outline=ROI, width=2)
    canvas = PILImage.new("RGB", (image.width, image.height + 34), (0, 0, 0))
    canvas.paste(image, (0, 34))
    ImageDraw.Draw(canvas).multiline_text((6, 2), title, fill=(255, 255, 255))
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target-seed", type=int, default=0)
    parser.add_argument("--reference-seed", type=int, default=100)
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "roi-auto.png")
    args = parser.parse_args(argv)

    from KnowledgeSAMLib.data.unseen_phantoms import make_kidney_full_phantom
    from KnowledgeSAMLib.evaluation import evaluate_labels
    from KnowledgeSAMLib.infer import SegmentRequest, segment
    from KnowledgeSAMLib.model.registry import resolve_model

    model = resolve_model(args.model).eval()
    target, truth = make_kidney_full_phantom(args.target_seed)
    reference, reference_labels = make_kidney_full_phantom(args.reference_seed)
    names = [s.name for s in truth.segments if s.name in COLOURS]
    runs = {}
    for roi in ("none", "auto"):
        result = segment(SegmentRequest(target=target, reference=reference, reference_labels=reference_labels,
                                        roi=roi), model)
        dice = {s.name: float(s.dice) for s in evaluate_labels(result.labels, truth).structures}
        runs[roi] = (result, dice)
        print(f"roi {roi}: " + ", ".join(f"{k} {v:.3f}" for k, v in dice.items()), flush=True)

    union = sum(truth.mask(n).reshape(target.shape[0], -1).sum(1) for n in names)
    z = int(np.argmax(union))  # the slice with most kidney
    data = np.asarray(target.array[z], dtype=np.float32)
    grey = (np.clip((data + 160) / 400, 0, 1) * 255).astype(np.uint8)  # abdomen window (W 400, L 40)
    truth_masks = {n: truth.mask(n)[z] for n in names}
    panels = [_panel(grey, truth_masks, {n: TRUTH for n in names}, title=f"truth (slice {z})")]
    for roi, label in (("none", "--roi none (whole slices)"), ("auto", "--roi auto")):
        result, dice = runs[roi]
        boxes = []
        for region in (result.provenance.get("roi") or {}).get("regions", []):
            x0, y0, z0, x1, y1, z1 = region["target"]
            if z0 <= z <= z1:
                boxes.append((x0, y0, x1, y1))
        scores = ", ".join(f"{k} {v:.2f}" for k, v in dice.items())
        panels.append(_panel(grey, {n: result.labels.mask(n)[z] for n in names}, COLOURS, boxes,
                             f"{label}\n3D Dice: {scores}"))
    width = sum(p.width for p in panels) + 4 * (len(panels) - 1)
    figure = PILImage.new("RGB", (width, max(p.height for p in panels)), (40, 40, 40))
    x = 0
    for panel in panels:
        figure.paste(panel, (x, 0))
        x += panel.width + 4
    from KnowledgeSAMLib.evaluation.overlay import save_overlay

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_overlay(figure, args.out, overwrite=True)  # atomic
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
