"""Window scans through the engine: where ``roi="auto"`` looks for the reference's structures in another image.

* one image (a whole photograph): :func:`scan_one_image` replaces the coarse pass (:mod:`.scan` says why);
* a volume: :func:`scan_volume_regions` looks at windows of each reference region's size on the few target slices
  that the coarse pass's stack alignment maps to where the reference's structures are largest. The coarse pass
  alone, at whole-slice zoom, took bone, vessels and bowel for kidney; at the reference's zoom the findings are
  good enough to compare with the reference's structures (:func:`.scan.unlikeness`).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from ..data.volume import Labels
from .modes import RunContext, positions_in_reference
from .passes import (complete_run, expected_side, found_masks, merge_runs, region_prompt, region_slices, run_pass,
                     voxel_box)
from .roi import Crop, overlaps
from .scan import Look, centred, image_scale, look, scan_regions, window_cost, window_grid

__all__ = ["scan_one_image", "scan_volume_regions", "SCAN_SLICES", "MISSING"]

SCAN_SLICES = 2  # target slices a volume's windows are scanned on (per reference region)
MISSING = 3.0  # cost of a structure not found in a window of a volume's slice (a found one costs at most this)


def _reference_slice(runner) -> int:
    """The reference slice whose labels show the most of the requested structures."""
    labels = runner.prepared.reference_labels
    masks = [labels.layers[s.layer] == s.label_value for s in runner.prepared.segments]
    return int(np.argmax(sum(runner.rview.slice_has(m).astype(int) for m in masks)))


def _reference_looks(runner, labels: Labels, segments, k: int) -> dict[str, Look]:
    """Each structure's :class:`~.scan.Look` on reference slice ``k``, its area in target pixels (``labels`` are
    the region's: the structures of other regions are not in them)."""
    pixels = runner.rview.get(runner.request.reference.array, k)
    (ref_r, ref_c), (tgt_r, tgt_c) = runner.rview.spacing_hw, runner.tview.spacing_hw
    area_scale = (ref_r * ref_c) / (tgt_r * tgt_c)
    scale = image_scale(pixels)
    looks = {}
    for seg in segments:
        seen = look(pixels, runner.rview.get(labels.layers[seg.layer] == seg.label_value, k), scale, area_scale)
        if seen is not None:
            looks[seg.name] = seen
    return looks


@contextmanager
def _scan_caches(runner):
    """While windows are scanned, the target's window embeddings are not kept (not worth the cache's room). The
    reference region's embeddings and prompts are: the engine's cache holds them for the fine pass over the
    same region."""
    kept = runner.target_key
    runner.target_key = None
    try:
        yield
    finally:
        runner.target_key = kept


def _holds_centre(outer: Crop, inner: Crop) -> bool:
    """Whether ``inner``'s centre lies in ``outer`` (two kidneys side by side have overlapping windows)."""
    r, c = (inner[0] + inner[1]) / 2.0, (inner[2] + inner[3]) / 2.0
    return outer[0] <= r < outer[1] and outer[2] <= c < outer[3]


def scan_one_image(runner, slices: list[int], ref_regions: list[Crop]) -> tuple[RunContext, dict] | None:
    """Fine passes where the window scan (:mod:`.scan`) finds each reference region's structures in the one target
    image; None when it finds none."""
    k = int(slices[0])
    threshold = runner.opts.byte_threshold
    passes, used, chosen, windows = [], [], [], 0
    plane_t = runner.tview.get(runner.request.target.array, k)
    reference_k = _reference_slice(runner)
    with _scan_caches(runner):
        for reference_crop in ref_regions:
            prompt = region_prompt(runner, reference_crop)
            if prompt is None:
                continue
            labels, segments = prompt

            def run_window(window: Crop, reference_crop=reference_crop, labels=labels, segments=segments):
                nonlocal windows
                windows += 1
                return runner.run([k], target_crop=window, reference_crop=reference_crop, segments=segments,
                                  labels=labels)

            side = expected_side(runner, [reference_crop])
            wanted = _reference_looks(runner, labels, segments, reference_k)
            found = [c for c in scan_regions(run_window, runner.tview, k, side, 1 + len(chosen), threshold,
                                             runner.opts.propagate_min_pixels, plane_t, wanted)
                     if not any(overlaps(c, other) for other in chosen)][:1]
            for crop in found:
                chosen.append(crop)
                passes.append(run_pass(runner, [k], target_crop=crop, reference_crop=reference_crop,
                                    segments=segments, labels=labels))
                used.append({"target": voxel_box(runner.tview, crop, [k]), "reference": list(reference_crop)})
    if not passes:
        return None
    record = {"mode": "auto", "scan_windows": windows, "regions": used}
    return complete_run(merge_runs(passes), runner.prepared.segments, runner.request.target.shape, slices), record


def _scan_slices(runner, coarse: RunContext, coarse_slices: list[int], ref_crop: Crop, labels: Labels,
                 segments) -> list[tuple[int, int]]:
    """``(target slice, reference slice)`` pairs to scan: the coarse slices that the stack alignment maps to the
    reference slices where the region's structures are largest (without an alignment: spread over the middle)."""
    rview = runner.rview
    area = np.zeros(rview.n)
    r0, r1, c0, c1 = ref_crop
    for seg in segments:
        mask = labels.layers[seg.layer] == seg.label_value
        for k in np.flatnonzero(rview.slice_has(mask)):
            area[k] += rview.get(mask, int(k))[r0:r1, c0:c1].sum()
    if coarse.alignment is not None:
        pos = positions_in_reference(coarse.alignment, runner.tview, rview, coarse_slices)
        ref_k = [int(rview.ordered(int(np.clip(round(p * (rview.n - 1)), 0, rview.n - 1)))) for p in pos]
    else:
        ref_k = [int(np.clip(round(i * (rview.n - 1) / max(1, len(coarse_slices) - 1)), 0, rview.n - 1))
                 for i in range(len(coarse_slices))]
    order = sorted(range(len(coarse_slices)), key=lambda i: -area[ref_k[i]])
    return [(coarse_slices[i], ref_k[i]) for i in order[:SCAN_SLICES] if area[ref_k[i]] > 0]


def _slice_costs(runner, k: int, ref_k: int, reference_crop: Crop, prompt, grid: list[Crop], chosen: list[Crop],
                 extra: dict) -> tuple[np.ndarray, list]:
    """Per window of ``grid`` on target slice ``k``: how unlike reference slice ``ref_k``'s structures the model's
    findings look (infinite where a region already found is), and what it found there."""
    labels, segments = prompt
    threshold = runner.opts.byte_threshold
    plane = runner.tview.get(runner.request.target.array, k)
    scale = image_scale(plane)
    wanted = _reference_looks(runner, labels, segments, ref_k)
    costs, unions = np.full(len(grid), np.inf), [None] * len(grid)
    for i, window in enumerate(grid):
        if any(_holds_centre(c, window) for c in chosen):  # the region already found
            continue
        ctx = runner.run([k], target_crop=window, reference_crop=reference_crop, segments=segments, labels=labels,
                         **extra)
        costs[i], unions[i] = window_cost(ctx, k, window, runner.tview, threshold, runner.opts.propagate_min_pixels,
                                          plane, scale, wanted, MISSING)
        ctx.probabilities = {}  # the run's counters stay for the provenance, its full-size maps go
    return costs, unions


def scan_volume_regions(runner, coarse: RunContext, coarse_slices: list[int], stride: int, slices: list[int],
                        ref_regions: list[Crop]) -> tuple[list[tuple[Crop, list[int], Crop]], int]:
    """Regions of the target, each with its slices and the reference region it was found with, and the number of
    windows run. Windows at each reference region's zoom run on a few slices (those the alignment maps to where the
    reference's structures are largest); a window's cost is how unlike the reference's structures its findings
    look, summed over those slices."""
    tview = runner.tview
    shape = tuple(int(v) for v in tview.slice_shape)
    masks = found_masks(runner, coarse)
    found_plane = np.zeros(shape, dtype=bool)
    for mask in masks:
        for k in coarse_slices:
            found_plane |= tview.get(mask, int(k))
    chosen: list[Crop] = []
    pairs_found: list[tuple[Crop, list[int], Crop]] = []
    windows = 0
    with _scan_caches(runner):
        for reference_crop in ref_regions:
            prompt = region_prompt(runner, reference_crop)
            pairs = [] if prompt is None else _scan_slices(runner, coarse, coarse_slices, reference_crop, *prompt)
            if not pairs:
                continue
            grid = window_grid(shape, expected_side(runner, [reference_crop]))
            # windows where the coarse pass found nothing at all are not worth a look
            grid = [w for w in grid if found_plane[w[0]:w[1], w[2]:w[3]].any()] or grid
            total, unions = np.zeros(len(grid)), [[] for _ in grid]
            for k, ref_k in pairs:
                extra = {} if coarse.alignment is None else {
                    "target_pos": positions_in_reference(coarse.alignment, tview, runner.rview, [k])}
                costs, found = _slice_costs(runner, k, ref_k, reference_crop, prompt, grid, chosen, extra)
                windows += int(np.isfinite(costs).sum())
                total += costs
                for i, union in enumerate(found):
                    if union is not None:
                        unions[i].append(union)
            best = int(np.argmin(total))
            if np.isfinite(total[best]) and unions[best]:
                window = grid[best]
                crop = centred(np.any(np.stack(unions[best]), axis=0), window,
                               (window[1] - window[0], window[3] - window[2]), shape)
                chosen.append(crop)
                ks = region_slices(tview, masks, crop, coarse_slices, stride, slices)
                pairs_found.append((crop, list(slices) if ks is None else ks, reference_crop))
    return pairs_found, windows
