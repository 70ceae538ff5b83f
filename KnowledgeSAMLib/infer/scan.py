"""Find small structures in one large image by looking at it window by window, at the reference's zoom.

Why: ``roi="auto"`` finds the structures in another volume with a coarse pass over whole slices. That works while the
structures are a fair part of the slice (a kidney in an abdominal CT), but not in a whole fundus photograph: shown
the whole photograph at the model's 128 px, the optic disc is 6 px wide and its cup 3 px, far smaller than anything
the model learnt them at, and the coarse pass finds nothing or the wrong thing. For one image (a photograph, one
slice) the windows are affordable: the target is tiled by windows of the reference region's physical size, overlapping
by half, so the structure appears in some window at the zoom it has in the reference crop; the window where the
model finds every requested structure most like the reference's wins, and the fine pass looks at a window of the
same size centred on what it found there. Which window wins is not the model's confidence (as high on a bright lesion
as on the disc) but how much what it found there looks like the reference's structures: their contrast to their
surroundings and their area.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .roi import Crop, overlaps

__all__ = ["window_grid", "scan_regions", "single_image", "Look", "look", "window_cost", "image_scale", "unlikeness",
           "SCAN_OVERLAP", "MAX_WINDOWS"]

SCAN_OVERLAP = 0.5  # neighbouring windows share half their side: a structure up to half a window wide is whole in one
MAX_WINDOWS = 400  # beyond this the windows grow (a reference region tiny against the target): the scan stays bounded


def _starts(length: int, side: int, step: int) -> list[int]:
    if side >= length:
        return [0]
    starts = list(range(0, length - side + 1, max(1, step)))
    if starts[-1] != length - side:
        starts.append(length - side)  # the last window ends at the border
    return starts


def window_grid(shape: tuple[int, int], side: tuple[int, int], overlap: float = SCAN_OVERLAP,
                max_windows: int = MAX_WINDOWS) -> list[Crop]:
    """Windows of ``side`` (rows, cols) covering a slice of ``shape``, neighbours overlapping by ``overlap``; at most
    ``max_windows`` (the windows grow when more would be needed)."""
    h, w = shape
    rows, cols = max(1, min(h, side[0])), max(1, min(w, side[1]))
    while True:
        r_starts = _starts(h, rows, int(rows * (1.0 - overlap)))
        c_starts = _starts(w, cols, int(cols * (1.0 - overlap)))
        if len(r_starts) * len(c_starts) <= max_windows:
            return [(r, r + rows, c, c + cols) for r in r_starts for c in c_starts]
        rows, cols = min(h, int(rows * 1.25) + 1), min(w, int(cols * 1.25) + 1)


def centred(found: np.ndarray, window: Crop, side: tuple[int, int], shape: tuple[int, int]) -> Crop:
    """A window of ``side`` centred on the pixels ``found`` inside ``window`` (the scan window, clipped to the
    slice): the structure may sit at the edge of the window that found it."""
    rows, cols = np.nonzero(found)
    centre_r = window[0] + (rows.min() + rows.max() + 1) / 2.0
    centre_c = window[2] + (cols.min() + cols.max() + 1) / 2.0
    h, w = shape
    r0 = int(round(min(max(centre_r - side[0] / 2.0, 0), h - side[0])))
    c0 = int(round(min(max(centre_c - side[1] / 2.0, 0), w - side[1])))
    return r0, r0 + side[0], c0, c0 + side[1]


@dataclass(frozen=True)
class Look:
    """How a structure looks: its contrast to the ring around it (per channel, in units of the image's standard
    deviation) and its area in target pixels."""

    contrast: np.ndarray
    area: float


def _grow(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by a square of ``radius`` (a box filter on the integral image: no SciPy needed)."""
    integral = np.pad(mask.astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    h, w = mask.shape
    r0 = np.clip(np.arange(h) - radius, 0, h)
    r1 = np.clip(np.arange(h) + radius + 1, 0, h)
    c0 = np.clip(np.arange(w) - radius, 0, w)
    c1 = np.clip(np.arange(w) + radius + 1, 0, w)
    total = (integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0])
    return total > 0


def look(plane: np.ndarray, mask: np.ndarray, scale: np.ndarray, area_scale: float = 1.0) -> Look | None:
    """The :class:`Look` of ``mask`` on ``plane`` (``(h, w)`` or ``(h, w, channels)``); ``area_scale`` converts its
    pixels to target pixels. None when the mask is empty or has no surroundings."""
    area = int(mask.sum())
    if area == 0:
        return None
    ring = _grow(mask, max(1, int(round(np.sqrt(area) / 2)))) & ~mask
    if not ring.any():
        return None
    values = plane.reshape(plane.shape[0], plane.shape[1], -1).astype(np.float64)
    contrast = (values[mask].mean(0) - values[ring].mean(0)) / scale
    return Look(contrast=contrast, area=area * area_scale)


def image_scale(plane: np.ndarray) -> np.ndarray:
    """Per channel standard deviation of a slice (1 where flat): contrasts of two images become comparable."""
    values = plane.reshape(plane.shape[0], plane.shape[1], -1).astype(np.float64)
    spread = values.reshape(-1, values.shape[-1]).std(0)
    return np.where(spread > 0, spread, 1.0)


def unlikeness(found: Look, wanted: Look) -> float:
    """How far a found structure is from the reference's: contrast distance plus the log of the area ratio."""
    return float(np.linalg.norm(found.contrast - wanted.contrast) + abs(np.log(found.area / wanted.area)))


def window_cost(ctx, k: int, window: Crop, view, threshold: int, min_pixels: int, plane: np.ndarray,
                scale: np.ndarray, wanted: dict[str, Look], missing: float) -> tuple[float, np.ndarray | None]:
    """The summed :func:`unlikeness` of what the model found in ``window`` of slice ``k`` to the reference's
    structures (``wanted``), and the union of what it found. A structure not found costs ``missing``: infinite
    for one image (every structure must be there), finite for a slice of a volume (a slice may miss one structure
    where the others are)."""
    cost, union = 0.0, None
    for name, want in wanted.items():
        prob = ctx.probabilities.get(name)
        if prob is None:
            cost += missing
            continue
        found = view.get(prob, k)[window[0]:window[1], window[2]:window[3]] > threshold
        seen = look(plane[window[0]:window[1], window[2]:window[3]], found, scale) \
            if int(found.sum()) >= min_pixels else None
        if seen is None:
            cost += missing
            continue
        cost += min(missing, unlikeness(seen, want))
        union = found if union is None else union | found
    return cost, union


def scan_regions(run_window, view, k: int, side: tuple[int, int], count: int, threshold: int,
                 min_pixels: int, plane: np.ndarray, wanted: dict[str, Look]) -> list[Crop]:
    """Up to ``count`` non-overlapping windows of ``side`` on slice ``k`` of ``view`` where the structures are, best
    first.

    ``run_window(crop)`` runs the model on one target window (with the reference region) and returns its
    :class:`~.context.RunContext`. The model finds *something* in almost every window, and its own confidence is as
    high on a bright lesion as on the optic disc; what tells them apart is the reference: a window counts by how much
    what it found looks like the reference's structures (``wanted``: contrast to their surroundings, area)."""
    shape = tuple(int(v) for v in view.slice_shape)
    scale = image_scale(plane)
    scored: list[tuple[float, Crop]] = []
    for window in window_grid(shape, side):
        ctx = run_window(window)
        cost, union = window_cost(ctx, k, window, view, threshold, min_pixels, plane, scale, wanted, np.inf)
        ctx.probabilities = {}  # the run's counters stay for the provenance, its full-size maps go
        if union is not None and np.isfinite(cost):
            scored.append((cost, centred(union, window, (window[1] - window[0], window[3] - window[2]), shape)))
    scored.sort(key=lambda item: item[0])
    chosen: list[Crop] = []
    for _, crop in scored:
        if len(chosen) == count:
            break
        if all(not overlaps(crop, other) for other in chosen):
            chosen.append(crop)
    return chosen


def single_image(slices: Sequence[int]) -> bool:
    """Whether a run is over one image (a photograph or one slice), where scanning windows is affordable."""
    return len(slices) == 1
