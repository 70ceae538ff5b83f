"""Same volume, propagate mode: between two labelled slices of a structure, its shape interpolated from both
is blended into the model's probabilities.

Why: the walkers of :mod:`.propagate` carry the structure from slice to slice through the model alone; between
two slices the annotator drew, the drawn shapes themselves say a lot about the slices in between (Slicer's
"Fill between slices" uses nothing else). The interpolation is the signed distance to each drawn outline,
after moving both outlines to their interpolated centroid (so a structure that shifts across the gap is not
shrunk), mixed linearly by position in the gap. Its weight ``g / (g + gap)`` falls with the gap: close labelled
slices predict the slices between them well, distant ones do not.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .slicing import AxisView

__all__ = ["blend_between_labelled", "fill_between_labelled"]


def _signed_distance(mask: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Millimetres to the outline of ``mask``: negative inside, positive outside (``spacing`` = rows, cols)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing((float(spacing[1]), float(spacing[0])))  # SimpleITK: (x, y)
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    # Maurer's map is 0 on the mask's own outermost pixels: half a pixel inwards puts the outline between them
    # and the first pixel outside, so a mask's own field gives the mask back
    return sitk.GetArrayFromImage(distance).astype(np.float32) - 0.5 * float(min(spacing))


def _shifted(field: np.ndarray, shift: np.ndarray, fill: float) -> np.ndarray:
    """``field`` moved by a whole number of pixels (rows, columns); what comes in from outside is ``fill``."""
    dr, dc = int(shift[0]), int(shift[1])
    out = np.full_like(field, fill)
    h, w = field.shape
    if abs(dr) >= h or abs(dc) >= w:
        return out
    out[max(dr, 0):h + min(dr, 0), max(dc, 0):w + min(dc, 0)] = field[max(-dr, 0):h + min(-dr, 0),
                                                                       max(-dc, 0):w + min(-dc, 0)]
    return out


class _Outline:
    """A drawn slice's signed distance field and centroid, computed once for every slice it bounds."""

    def __init__(self, mask: np.ndarray, spacing: tuple[float, float]) -> None:
        self.distance = _signed_distance(mask, spacing)
        self.centre = np.argwhere(mask).mean(axis=0)
        self.far = float(np.abs(self.distance).max()) + 1.0


def interpolated_shape(lower: _Outline, upper: _Outline, t: float, softness_mm: float = 1.0) -> np.ndarray:
    """Probability of the structure at fraction ``t`` of the way from outline ``lower`` to ``upper``: both moved
    to their interpolated centroid, their distances mixed linearly."""
    centre = (1 - t) * lower.centre + t * upper.centre
    distance = ((1 - t) * _shifted(lower.distance, np.rint(centre - lower.centre), lower.far)
                + t * _shifted(upper.distance, np.rint(centre - upper.centre), upper.far))
    return 1.0 / (1.0 + np.exp(np.clip(distance / softness_mm, -50.0, 50.0)))


def blend_between_labelled(probabilities: np.ndarray, drawn: Mapping[int, np.ndarray], view: AxisView,
                           weight: float, absent: Sequence[int] = (), slices: Sequence[int] | None = None) -> int:
    """Blend, in place, the interpolated shape into the uint8 ``probabilities`` of one structure on every slice
    strictly between two of its ``drawn`` slices (slice -> plane mask) with no ``absent`` slice between them;
    ``weight`` is ``g`` of ``g / (g + gap)`` (0: nothing changes); only ``slices`` are touched when given.
    Returns how many slices were blended."""
    if weight <= 0:
        return 0
    return _between(probabilities, drawn, view, lambda gap: weight / (weight + gap), absent, slices)


def fill_between_labelled(probabilities: np.ndarray, drawn: Mapping[int, np.ndarray], view: AxisView,
                          absent: Sequence[int] = (), slices: Sequence[int] | None = None) -> int:
    """The interpolated shape alone (what Slicer's "Fill between slices" does), in place, on the same slices as
    :func:`blend_between_labelled`; returns how many slices were written."""
    return _between(probabilities, drawn, view, lambda gap: 1.0, absent, slices)


def _between(probabilities: np.ndarray, drawn: Mapping[int, np.ndarray], view: AxisView, share_for,
             absent: Sequence[int], slices: Sequence[int] | None) -> int:
    wanted = None if slices is None else set(int(k) for k in slices)
    barriers = set(int(k) for k in absent)
    labelled = sorted(k for k, plane in drawn.items() if plane.any())
    outlines: dict[int, _Outline] = {}
    written = 0
    for low, high in zip(labelled[:-1], labelled[1:]):
        gap = high - low
        inside = [k for k in range(low + 1, high) if wanted is None or k in wanted]
        if gap < 2 or not inside or any(low < b < high for b in barriers):
            continue
        for k in (low, high):
            if k not in outlines:
                outlines[k] = _Outline(drawn[k], view.spacing_hw)
        share = share_for(gap)
        for k in inside:
            shape = interpolated_shape(outlines[low], outlines[high], (k - low) / gap)
            model = view.get(probabilities, k).astype(np.float32) / 255.0
            mixed = (1.0 - share) * model + share * shape
            view.put(probabilities, k, np.clip(np.rint(mixed * 255.0), 0, 255).astype(np.uint8))
            written += 1
    return written
