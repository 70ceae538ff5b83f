"""One pass of a focused run over a region pair, and how the passes of a run combine (``infer/focus.py`` and
``infer/focus_scan.py`` both build on these)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.volume import Labels
from .modes import RunContext, average_runs
from .roi import Crop, restrict_to_crop
from .slicing import AxisView

__all__ = ["merge_runs", "complete_run", "run_pass", "present_segments", "voxel_box", "region_prompt", "region_pass",
           "expected_side", "found_masks", "region_slices"]


def merge_runs(runs: list[RunContext]) -> RunContext:
    """Combine passes over different regions: per voxel the highest probability, per slice the highest
    confidence. The first pass carries the result."""
    first = runs[0]
    for run in runs[1:]:
        for name, prob in run.probabilities.items():
            if name in first.probabilities:
                np.maximum(first.probabilities[name], prob, out=first.probabilities[name])
            else:
                first.probabilities[name] = prob
            if name in first.confidence:
                first.confidence[name] = np.fmax(first.confidence[name], run.confidence[name])
            else:
                first.confidence[name] = run.confidence[name]
    return first  # heads and notes are counted over every run by the provenance, not here


def complete_run(ctx: RunContext, segments, shape, slices: Sequence[int]) -> RunContext:
    """Every requested structure has a probability map and a confidence row (zeros / NaN where not run)."""
    for seg in segments:
        ctx.probabilities.setdefault(seg.name, np.zeros(shape, dtype=np.uint8))
        ctx.confidence.setdefault(seg.name, np.full(ctx.target.n, np.nan, dtype=np.float32))
    ctx.segments = list(segments)
    ctx.slices = list(slices)
    return ctx


def run_pass(runner, slices: list[int], **kwargs) -> RunContext:
    """One pass per orientation (flip test-time augmentation), averaged."""
    return average_runs([runner.run(slices, mirrored=m, **kwargs) for m in runner.orientations()])


def present_segments(prepared, labels: Labels, view: AxisView) -> list:
    return [seg for seg in prepared.segments if view.slice_has(labels.layers[seg.layer] == seg.label_value).any()]


def voxel_box(view: AxisView, crop: Crop, slices: Sequence[int]) -> list[int]:
    """A canonical crop over slices as a voxel box ``[x0, y0, z0, x1, y1, z1]`` (inclusive), for provenance."""
    mask = np.zeros(view.shape, dtype=bool)
    plane = np.zeros(view.slice_shape, dtype=bool)
    plane[crop[0]:crop[1], crop[2]:crop[3]] = True
    for k in slices:
        view.put(mask, int(k), plane)
    zyx = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    (z0, z1), (y0, y1), (x0, x1) = ((int(v[0]), int(v[-1])) for v in zyx)
    return [x0, y0, z0, x1, y1, z1]


def region_prompt(runner, reference_crop: Crop) -> tuple[Labels, list] | None:
    """The reference labels with everything outside ``reference_crop`` removed (the other kidney's slices must not
    become prompts for this one), and the requested structures left in it; None when none is."""
    prepared = runner.prepared
    layers = restrict_to_crop(prepared.reference_labels.layers, runner.rview, reference_crop)
    labels = Labels(layers, prepared.reference_labels.geometry, prepared.reference_labels.segments,
                    prepared.reference_labels.source)
    segments = present_segments(prepared, labels, runner.rview)
    if segments and runner.request.reference_slices is not None:
        allowed = set(int(k) for k in runner.request.reference_slices)
        segments = [s for s in segments
                    if any(int(k) in allowed for k in np.flatnonzero(
                        runner.rview.slice_has(labels.layers[s.layer] == s.label_value)))]
    return (labels, segments) if segments else None


def region_pass(runner, slices: list[int], target_crop: Crop, reference_crop: Crop, **kwargs) -> RunContext | None:
    """A fine pass over one region pair; None when the region holds no requested structure."""
    prompt = region_prompt(runner, reference_crop)
    if prompt is None or not slices:
        return None
    labels, segments = prompt
    return run_pass(runner, slices, target_crop=target_crop, reference_crop=reference_crop, segments=segments,
                 labels=labels, **kwargs)


def expected_side(runner, ref_regions: list[Crop]) -> tuple[int, int]:
    """The largest reference region's (rows, cols), in target pixels (millimetres carried over)."""
    (ref_r, ref_c), (tgt_r, tgt_c) = runner.rview.spacing_hw, runner.tview.spacing_hw
    rows = max(c[1] - c[0] for c in ref_regions) * ref_r / tgt_r
    cols = max(c[3] - c[2] for c in ref_regions) * ref_c / tgt_c
    return max(1, int(round(rows))), max(1, int(round(cols)))


def found_masks(runner, ctx: RunContext) -> list[np.ndarray]:
    """What a pass found, per structure (whole target grid), at the run's threshold."""
    threshold = runner.opts.byte_threshold
    return [p > threshold for p in ctx.probabilities.values()]


def region_slices(view: AxisView, masks: list[np.ndarray], crop: Crop, coarse_slices: Sequence[int], stride: int,
                  slices: Sequence[int]) -> list[int] | None:
    """The slices of ``slices`` a region spans: where the coarse pass found anything in it, widened by a stride;
    None when it found nothing there."""
    r0, r1, c0, c1 = crop
    seen = [k for k in coarse_slices if any(view.get(m, k)[r0:r1, c0:c1].any() for m in masks)]
    if not seen:
        return None
    low, high = min(seen) - stride - 1, max(seen) + stride + 1
    return [k for k in slices if low <= k <= high]
