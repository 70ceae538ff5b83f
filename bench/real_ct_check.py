#!/usr/bin/env python
"""Real-CT check: KSAM against LiteMedSAM with boxes and atlas registration on a real abdominal CT.

Data: ``../shared/data/totalsegmentator-example`` (Apache-2.0; labels are TotalSegmentator's *model
predictions*, so this is a check, not an accuracy claim). The reference is the labelled upper slab
(``example_ct_sm`` + ``example_seg``: slices 82–111 of the scan); the target is the whole scan
(``example_ct``), scored only on slices 0–81, which the reference does not contain, against
``example_seg_fast_force_split``. Structures: right and left kidney, liver, aorta, inferior vena cava — the five
present on both sides, and never a training task in CT (``train/sources.py: TOTALSEG_CT_HELD_OUT``; the MR
volume of the same folder does train them).

Rows: KSAM (``--model``, default engine settings, ``roi auto``), LiteMedSAM with the truth's box on every slice
where the structure is, LiteMedSAM with one box from the reference (bench/baselines/litemedsam_box.py), and
atlas registration (SimpleITK affine + B-spline; the reference slab is placed at its true position in the scan,
so its labels cannot reach slices it does not cover).

    python bench/real_ct_check.py --threads 2 --json runs/real_ct_check.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STRUCTURES = ("kidney_right", "kidney_left", "liver", "aorta", "inferior_vena_cava")
SLAB_START = 82  # example_ct_sm is slices 82..111 of example_ct
FILES = ("example_ct.nii.gz", "example_seg_fast_force_split.nii.gz", "example_ct_sm.nii.gz", "example_seg.nii.gz")


def load(root: Path):
    """Target image and truth, reference image and labels (named structures only, reference at its true place)."""
    from KnowledgeSAMLib.data.io import read_image, read_labels
    from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment
    from KnowledgeSAMLib.train.sources import TOTALSEG_CT_NAMES

    ids = {name: value for value, name in TOTALSEG_CT_NAMES.items() if name in STRUCTURES}

    def named(labels):
        layer = np.where(np.isin(labels.layers[0], list(ids.values())), labels.layers[0], 0)
        segments = [Segment(name, ids[name], 0) for name in STRUCTURES]
        return Labels(layer[None].astype(np.uint8), labels.geometry, segments, labels.source)

    target, truth = read_image(root / FILES[0]), named(read_labels(root / FILES[1]))
    reference, ref_labels = read_image(root / FILES[2]), named(read_labels(root / FILES[3]))
    # the sub-block's header repeats the scan's origin: put it where it really is (slice 82 of the scan)
    corner = target.geometry.index_to_physical() @ np.array([0, 0, SLAB_START, 1.0])
    geometry = Geometry(reference.geometry.spacing, tuple(corner[:3]), reference.geometry.direction)
    reference = Image(reference.array, geometry, reference.source)
    ref_labels = Labels(ref_labels.layers, geometry, ref_labels.segments, ref_labels.source)
    return target, truth, reference, ref_labels


def scored(masks: dict[str, np.ndarray], truth) -> dict[str, float]:
    """Dice per structure on the target slices the reference does not contain."""
    from KnowledgeSAMLib.evaluation.metrics import dice

    return {name: dice(masks[name][:SLAB_START], truth.mask(name)[:SLAB_START]) for name in STRUCTURES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default=None, help="totalsegmentator-example folder (default ../shared/data/...)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma-separated rows to skip: ksam, box_per_slice, "
                                                   "box_reference, atlas")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from KnowledgeSAMLib.infer import SegmentRequest, segment
    from KnowledgeSAMLib.model.box_prompt import build_box_model
    from KnowledgeSAMLib.model.registry import resolve_model
    from bench.baselines.litemedsam_box import run_box_from_reference, run_box_per_slice
    from bench.baselines.slicewise import slice_source, truth_on_model

    torch.set_num_threads(args.threads)
    root = Path(args.data) if args.data else REPO.parent / "shared" / "data" / "totalsegmentator-example"
    if not (root / FILES[0]).is_file():
        raise SystemExit(f"{root}: the TotalSegmentator example data is not here")
    target, truth, reference, ref_labels = load(root)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rows: dict[str, dict] = {}
    device = torch.device("cpu")

    def record(name: str, masks: dict[str, np.ndarray], seconds: float) -> None:
        dices = scored(masks, truth)
        rows[name] = {"dice": dices, "mean": float(np.mean(list(dices.values()))), "seconds": seconds}
        print(f"{name:<16} " + "  ".join(f"{k} {v:.3f}" for k, v in dices.items())
              + f"  mean {rows[name]['mean']:.3f}  ({seconds:.0f} s)", flush=True)

    if "ksam" not in skip:
        model = resolve_model(args.model).eval()
        started = time.perf_counter()
        result = segment(SegmentRequest(target, reference, ref_labels, preset="ct-abdomen"), model)
        record("ksam", {s: result.labels.mask(s) for s in STRUCTURES}, time.perf_counter() - started)
        rows["ksam"]["roi"] = result.provenance["roi"]
    if not {"box_per_slice", "box_reference"} <= skip:
        box_model = build_box_model("lite")
        size = box_model.image_size
        t_src, r_src = slice_source(target, "ct-abdomen", size), slice_source(reference, "ct-abdomen", size)
        if "box_per_slice" not in skip:
            started = time.perf_counter()
            oracle = {s: truth_on_model(t_src, truth, s) for s in STRUCTURES}
            record("box_per_slice", run_box_per_slice(box_model, t_src, oracle, device), time.perf_counter() - started)
        if "box_reference" not in skip:
            started = time.perf_counter()
            masks = run_box_from_reference(box_model, t_src, r_src, ref_labels, STRUCTURES, device)
            record("box_reference", masks, time.perf_counter() - started)
    if "atlas" not in skip:
        from bench.atlas_registration import AtlasConfig, atlas_segment

        started = time.perf_counter()
        warped = atlas_segment(target, reference, ref_labels, AtlasConfig(metric="correlation"))
        record("atlas", {s: warped.mask(s) for s in STRUCTURES}, time.perf_counter() - started)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "structures": STRUCTURES, "rows": rows}, indent=1),
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
