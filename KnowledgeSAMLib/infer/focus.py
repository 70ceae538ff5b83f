"""Segment where the structures are: the passes of one run when it focuses on regions of interest.

``roi="auto"`` (the default):

* the reference's requested structures, united over their slices, give one region per separate group (the left
  and the right kidney are two), each grown by a margin (:func:`~.roi.region_crops`). A region covering most of
  the slice is no focus: the run then looks at whole slices, as without ROI;
* the same volume (anchor, propagate): the target regions are the reference's;
* another image of one slice (a photograph): a **window scan** (:mod:`.scan`) at the reference region's zoom finds
  the structures, which a whole-slice look at the model's input size shows too small to find;
* another volume: a **coarse pass** on whole slices (every second or third target slice) finds the structures
  in the target; its regions, grown by the same margin, are matched to the reference's by their position in
  the slice, and each pair gets a **fine pass** in which target and reference are cropped alike, over the
  slices where the coarse pass found the region (plus a margin). Volume mode's slice alignment is fitted once
  in the coarse pass and reused.

A user's box (``roi=RoiBox``) is one target region over its slices; the reference's region is found as above.
Results of the fine passes are pasted into the whole target grid (outside them: 0) and combined by maximum.

Colour photographs get a wider margin and no 4 cm floor (:data:`PHOTO_MARGIN`): their millimetres are not the scale
the model learnt them at, the structure's share of the crop is.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from .modes import RunContext, positions_in_reference
from .focus_scan import scan_one_image, scan_volume_regions
from .passes import (complete_run, expected_side, found_masks, merge_runs, region_pass, region_slices, run_pass,
                     voxel_box)
from .roi import (DEFAULT_MARGIN, MIN_SIDE_MM, Crop, RoiChoice, crop_centre, is_focus, region_crops, resolve_roi,
                  union_plane)
from .scan import centred, single_image
from .slicing import AxisView

__all__ = ["RoiChoice", "resolve_roi", "run_focused", "SAME_VOLUME_MARGIN"]

SAME_VOLUME_MARGIN = 0.5  # the labelled slices show only part of the structures: look wider around them
# colour photographs: a crop 3 x the structure, as the fundus crops the model trained on (PAPILA's disc-centred crops
# are 3 disc diameters wide, data.datasets.PAPILA_CROP_FACTOR; the fundus phantoms' disc is about a quarter of the
# image); their pixel spacing says nothing about that zoom, so no floor in millimetres
PHOTO_MARGIN = 1.0


def _reference_regions(runner, margin: float, min_side_mm: float = MIN_SIDE_MM) -> list[Crop]:
    prepared, request = runner.prepared, runner.request
    labels = prepared.reference_labels
    masks = [labels.layers[seg.layer] == seg.label_value for seg in prepared.segments]
    plane = union_plane(masks, runner.rview, slices=request.reference_slices)
    return region_crops(plane, runner.rview, margin, min_side_mm=min_side_mm)


def _photographs(runner) -> bool:
    """Colour photographs on both sides (fundus photographs), not CT or MR slices."""
    return bool(runner.request.target.is_rgb and runner.request.reference.is_rgb)


def _coarse_slices(slices: list[int]) -> tuple[list[int], int]:
    stride = 3 if len(slices) >= 36 else 2 if len(slices) >= 16 else 1
    return slices[::stride], stride


OVERSIZE = 1.5  # a coarse region this much wider or taller than the reference's largest region is searched in


def _best_windows(votes: np.ndarray, crop: Crop, side: tuple[int, int], count: int,
                  keep: float = 0.3) -> list[Crop]:
    """Up to ``count`` non-overlapping ``side``-sized windows inside ``crop`` where the coarse pass found every
    structure most often (score: the sum over structures of log(1 + votes in the window); a window keeps at
    least ``keep`` of the first one's score).

    Why: false positives of the coarse pass on whole slices (bone, vessels, bowel) join the true structures
    into one region that fills most of the body, and a fine pass over it sees the structure hardly larger
    than a whole slice does. The structures are where all of them are found together, in a window of the
    size the reference's region has in millimetres (whole-abdomen kidney phantoms of our generator, 384²,
    validation seeds 4000-4003: mean Dice 0.214 -> 0.475)."""
    r0, r1, c0, c1 = crop
    sub = votes[:, r0:r1, c0:c1].astype(np.float64)
    h, w = min(side[0], sub.shape[1]), min(side[1], sub.shape[2])
    out: list[Crop] = []
    first = None
    for _ in range(count):
        integral = np.pad(sub.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
        per_structure = (integral[:, h:, w:] - integral[:, :-h, w:] - integral[:, h:, :-w]
                         + integral[:, :-h, :-w])
        sums = np.log1p(per_structure).sum(0)  # where every structure is found, not where one is found most
        y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
        best = float(sums[y, x])
        if best <= 0 or (first is not None and best < keep * first):
            break
        first = best if first is None else first
        y, x = _centre_on_votes(sub, int(y), int(x), h, w)
        out.append((r0 + y, r0 + y + h, c0 + x, c0 + x + w))
        sub[:, y:y + h, x:x + w] = 0
    return out


def _centre_on_votes(votes: np.ndarray, y: int, x: int, h: int, w: int) -> tuple[int, int]:
    """The corner of an ``h`` × ``w`` window at ``(y, x)`` moved so that the votes inside it are at its centre.

    Why: every window holding the same votes scores the same, and the first of them (the top left one) has the
    structures at its bottom right edge, where the fine pass sees them cut off."""
    inside = votes[:, y:y + h, x:x + w].sum(0) > 0
    if not inside.any():
        return y, x
    new_y, _, new_x, _ = centred(inside, (y, y + h, x, x + w), (h, w), votes.shape[1:])
    return new_y, new_x


def _target_regions(coarse: RunContext, runner, coarse_slices: list[int], stride: int,
                    slices: list[int], ref_regions: list[Crop]) -> list[tuple[Crop, list[int]]]:
    """Regions the coarse pass found in the target, each with the slices (of ``slices``) it spans; a region much
    larger than the reference's is narrowed to the windows of the reference's size where the votes are."""
    view = runner.tview
    masks = found_masks(runner, coarse)
    if not masks:
        return []
    votes = np.zeros((len(masks),) + tuple(view.slice_shape), dtype=np.int32)
    for k in coarse_slices:  # per structure: on how many coarse slices each pixel was found
        votes += np.stack([view.get(m, int(k)) for m in masks])
    plane = votes.any(axis=0)  # the in-plane union of what the coarse pass found
    side = expected_side(runner, ref_regions)
    crops = []
    for crop in region_crops(plane, view, DEFAULT_MARGIN):
        if crop[1] - crop[0] > OVERSIZE * side[0] or crop[3] - crop[2] > OVERSIZE * side[1]:
            crops += _best_windows(votes, crop, side, len(ref_regions))
        else:
            crops.append(crop)
    spans = [(crop, region_slices(view, masks, crop, coarse_slices, stride, slices)) for crop in crops]
    return [(crop, ks) for crop, ks in spans if ks is not None]


def run_focused(runner, slices: list[int], roi: RoiChoice) -> tuple[RunContext, dict]:
    """Run the request's mode over ``slices`` looking where ``roi`` says; returns the combined pass and a
    provenance record of the regions used."""
    prepared = runner.prepared
    shape = runner.request.target.shape

    def whole(note: str) -> tuple[RunContext, dict]:
        return run_pass(runner, slices), {"mode": roi.kind, "used": "whole slices", "note": note}

    if roi.kind == "none":
        return whole("roi none")
    margin = SAME_VOLUME_MARGIN if runner.same else DEFAULT_MARGIN
    photographs = _photographs(runner)
    ref_regions = _reference_regions(runner, PHOTO_MARGIN, 0.0) if photographs else _reference_regions(runner, margin)
    if not all(is_focus(c, runner.rview) for c in ref_regions):
        ref_regions = []  # one region fills most of the slice: every structure is seen on whole slices
    if roi.kind == "box":
        reference_crop = _match(roi.crop, runner.tview, ref_regions, runner.rview) if ref_regions else None
        if runner.same:
            reference_crop = roi.crop
        extent = None
        if prepared.mode == "volume" and len(roi.slices) > 1:
            ordered = np.asarray(runner.tview.ordered(np.asarray(roi.slices)), dtype=float)
            extent = (float(ordered.min()), float(ordered.max()))
        ctx = (region_pass(runner, list(roi.slices), roi.crop, reference_crop, extent=extent)
               if reference_crop is not None else
               run_pass(runner, list(roi.slices), target_crop=roi.crop, extent=extent))
        if ctx is None:
            raise InputError("the reference holds none of the requested structures near the given box")
        record = {"mode": "box", "box": roi.text, "regions": [{
            "target": voxel_box(runner.tview, roi.crop, roi.slices),
            "reference": None if reference_crop is None else list(reference_crop)}]}
        return complete_run(ctx, prepared.segments, shape, roi.slices), record
    if not ref_regions:
        return whole("the reference's structures fill most of the slice")
    if runner.same:
        passes = [p for p in (region_pass(runner, slices, crop, crop) for crop in ref_regions) if p is not None]
        if not passes:
            return whole("no region holds a requested structure")
        record = {"mode": "auto", "regions": [{"target": voxel_box(runner.tview, c, slices), "reference": list(c)}
                                              for c in ref_regions]}
        return complete_run(merge_runs(passes), prepared.segments, shape, slices), record
    if single_image(slices):  # one image: windows at the reference's zoom find the regions in the target
        scanned = scan_one_image(runner, slices, ref_regions)
        if scanned is None:
            ctx, record = whole("the window scan found no requested structure")
            return ctx, record
        return scanned
    # another volume: a coarse look at whole slices finds the regions in the target
    coarse_slices, stride = _coarse_slices(slices)
    coarse = runner.run(coarse_slices)
    regions, scan_windows = scan_volume_regions(runner, coarse, coarse_slices, stride, slices, ref_regions)
    regions = regions or [(crop, ks, _match(crop, runner.tview, ref_regions, runner.rview))
                          for crop, ks in _target_regions(coarse, runner, coarse_slices, stride, slices, ref_regions)]
    focused = [region for region in regions if is_focus(region[0], runner.tview)]
    if not focused or len(focused) < len(regions):
        ctx, record = whole("the coarse pass found no focused region" if not focused else
                            "a region the coarse pass found fills most of the slice")
        record["coarse_slices"] = len(coarse_slices)
        return ctx, record
    kwargs = {}
    if coarse.alignment is not None:
        fit = coarse.alignment
        kwargs["target_pos_for"] = lambda ks: positions_in_reference(fit, runner.tview, runner.rview, ks)
    passes, used = [], []
    for crop, ks, reference_crop in focused:
        extra = {"target_pos": kwargs["target_pos_for"](ks)} if kwargs else {}
        ctx = region_pass(runner, ks, crop, reference_crop, **extra)
        if ctx is not None:
            passes.append(ctx)
            used.append({"target": voxel_box(runner.tview, crop, ks), "reference": list(reference_crop)})
    if not passes:
        ctx, record = whole("no region pair holds a requested structure")
        return ctx, record
    record = {"mode": "auto", "coarse_slices": len(coarse_slices), "scan_windows": scan_windows, "regions": used}
    return complete_run(merge_runs(passes), prepared.segments, shape, slices), record


def _match(crop: Crop, view: AxisView, candidates: list[Crop], other_view: AxisView) -> Crop:
    """The candidate region (of the other scan) whose centre is nearest, in fractions of the slice."""
    centre = crop_centre(crop, view)
    distances = [float(np.linalg.norm(crop_centre(c, other_view) - centre)) for c in candidates]
    return candidates[int(np.argmin(distances))]
