"""Overlap and surface-distance metrics per structure: Dice and the 95% Hausdorff distance.

Why these two: Dice says how much of the structure was found, HD95 says how far the worst (but not
single-outlier) boundary errors lie, in millimetres. Both are computed on boolean ``(z, y, x)`` masks
on one grid; distances use the grid's physical spacing, so anisotropic voxels are measured correctly.

Conventions (documented because every toolkit picks differently):

* **Dice** = 2|P∩T| / (|P| + |T|). Both masks empty: 1.0 (nothing to find, nothing found). Exactly one
  empty: 0.0.
* **Surface** of a mask = its voxels that have at least one face-neighbour (6-connectivity in 3D,
  4 in 2D) outside the mask; voxels on the border of the grid count as surface (the grid edge is
  treated as background). A one-slice volume (2D image, or ``geometry.ndim == 2``) is measured in 2D, so
  the whole slice is not "surface" through its missing neighbours above and below.
* **HD95** (symmetric) = max(P95 of distances from P's surface voxels to the nearest T surface voxel,
  P95 of distances from T's surface to P's surface): the directed 95th percentiles, then the maximum
  (the convention of MONAI's ``compute_hausdorff_distance(percentile=95)``). Distances are between
  voxel centres in millimetres. Both empty: 0.0. Exactly one empty: ``math.inf`` (undefined; JSON
  writers turn it into ``null``).
* Percentiles use numpy's default linear interpolation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "HD_PERCENTILE",
    "StructureScore",
    "dice",
    "surface",
    "surface_distances",
    "hausdorff",
    "hd95",
    "score_structure",
    "mean_scores",
]

HD_PERCENTILE = 95.0


@dataclass(frozen=True)
class StructureScore:
    """Metrics of one structure on one case; ``hd95_mm`` is ``math.inf`` when exactly one mask is empty."""

    name: str
    dice: float
    hd95_mm: float
    truth_voxels: int
    prediction_voxels: int
    truth_volume_mm3: float
    prediction_volume_mm3: float

    def to_json(self) -> dict:
        """Plain dict for ``json.dump``: infinite distances become ``None`` (JSON has no infinity)."""
        data = asdict(self)
        data["hd95_mm"] = None if not math.isfinite(self.hd95_mm) else self.hd95_mm
        return data


def _as_bool(mask: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim not in (2, 3):
        raise ValueError(f"{what} mask must be 2D (y, x) or 3D (z, y, x); got shape {array.shape}")
    return array.astype(bool, copy=False)


def _check_pair(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = _as_bool(prediction, "prediction")
    true = _as_bool(truth, "truth")
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {true.shape}; "
                         "resample the prediction onto the truth grid first")
    return pred, true


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice similarity coefficient of two boolean masks (1.0 when both are empty)."""
    pred, true = _check_pair(prediction, truth)
    total = int(pred.sum()) + int(true.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, true).sum()) / total


def _squeeze_2d(mask: np.ndarray, spacing_xyz: Sequence[float]) -> tuple[np.ndarray, tuple[float, ...]]:
    """Drop the z axis of one-slice volumes so surfaces and distances are 2D; returns spacing in (x, y[, z])."""
    spacing = tuple(float(s) for s in spacing_xyz)
    if mask.ndim == 2:
        return mask, spacing[:2]
    if mask.shape[0] == 1:
        # A single slice has no neighbours above or below: measuring it in 3D would make every voxel
        # "surface". Both real 2D images and single-slice volumes are therefore measured in-plane.
        return mask[0], spacing[:2]
    return mask, spacing[:3]


def surface(mask: np.ndarray) -> np.ndarray:
    """Boolean surface of a 2D or 3D mask: voxels with a face-neighbour outside (grid edge = outside)."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded.copy()
    for axis in range(mask.ndim):
        interior &= np.roll(padded, 1, axis=axis) & np.roll(padded, -1, axis=axis)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    return mask & ~interior[inner]


def _distance_to(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm) from every voxel centre to the nearest voxel centre of ``mask``."""
    import SimpleITK as sitk  # here, not at import: Dice alone (training's validation) needs no ITK

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(s) for s in spacing))
    distance = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False,
                                            useImageSpacing=True)
    # Inside the set the signed map is <= 0; outside it is the distance to the nearest member voxel.
    return np.maximum(sitk.GetArrayFromImage(distance), 0.0)


def surface_distances(from_mask: np.ndarray, to_mask: np.ndarray,
                      spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Distances (mm) from each surface voxel of ``from_mask`` to the nearest surface voxel of ``to_mask``.

    Both masks must be non-empty. ``spacing_xyz`` is in ``(x, y, z)`` order like :class:`Geometry`.
    """
    source, spacing = _squeeze_2d(np.asarray(from_mask, dtype=bool), spacing_xyz)
    target, _ = _squeeze_2d(np.asarray(to_mask, dtype=bool), spacing_xyz)
    if not source.any() or not target.any():
        raise ValueError("surface distances need two non-empty masks")
    distance = _distance_to(surface(target), spacing)
    return distance[surface(source)].astype(float)


def _crop_to_both(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cut to their joint bounding box plus one voxel (clipped at the grid edge).

    Distances between the two surfaces are unchanged (both sets lie inside the box) and a mask touching
    the grid edge still touches the box edge, so surfaces are unchanged too; big CT grids get cheap.
    """
    occupied = np.argwhere(a | b)
    low = np.maximum(occupied.min(axis=0) - 1, 0)
    high = np.minimum(occupied.max(axis=0) + 2, a.shape)
    box = tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))
    return a[box], b[box]


def hausdorff(prediction: np.ndarray, truth: np.ndarray, spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0),
              percentile: float = HD_PERCENTILE) -> float:
    """Symmetric percentile Hausdorff distance in mm (see module docstring for the conventions)."""
    pred, true = _check_pair(prediction, truth)
    has_pred, has_true = bool(pred.any()), bool(true.any())
    if not has_pred and not has_true:
        return 0.0
    if has_pred != has_true:
        return math.inf
    pred, true = _crop_to_both(pred, true)
    forward = surface_distances(pred, true, spacing_xyz)
    backward = surface_distances(true, pred, spacing_xyz)
    return float(max(np.percentile(forward, percentile), np.percentile(backward, percentile)))


def hd95(prediction: np.ndarray, truth: np.ndarray, spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0)) -> float:
    """95% symmetric Hausdorff distance in millimetres; ``math.inf`` when exactly one mask is empty."""
    return hausdorff(prediction, truth, spacing_xyz, HD_PERCENTILE)


def score_structure(name: str, prediction: np.ndarray, truth: np.ndarray,
                    spacing_xyz: Sequence[float] = (1.0, 1.0, 1.0)) -> StructureScore:
    """Dice, HD95 and volumes of one structure."""
    pred, true = _check_pair(prediction, truth)
    voxel_volume = float(np.prod([float(s) for s in spacing_xyz]))  # a 2D pixel counts its unit thickness
    return StructureScore(
        name=name,
        dice=dice(pred, true),
        hd95_mm=hd95(pred, true, spacing_xyz),
        truth_voxels=int(true.sum()),
        prediction_voxels=int(pred.sum()),
        truth_volume_mm3=int(true.sum()) * voxel_volume,
        prediction_volume_mm3=int(pred.sum()) * voxel_volume,
    )


def mean_scores(scores: Sequence[StructureScore]) -> dict[str, float]:
    """Mean Dice and mean HD95 over structures (HD95 mean is ``inf`` if any structure's is)."""
    if not scores:
        return {"dice": math.nan, "hd95_mm": math.nan}
    return {
        "dice": float(np.mean([s.dice for s in scores])),
        "hd95_mm": float(np.mean([s.hd95_mm for s in scores])),
    }
