"""Views of a ``(z, y, x)`` array as 2D slices along a *physical* axis (axial, coronal, sagittal).

Why physical and canonical: "axial" must mean the patient's axial plane whatever order the file stores
its voxels in (a sagittally acquired MR has index z along left-right). Each slice is also turned into one
canonical in-plane orientation (radiological display: axial rows anterior->posterior, columns
right->left; coronal/sagittal rows superior->inferior), so a reference and a target stored with different
direction matrices still show the model the same picture. Extraction and insertion are exact inverses
(flips and a transpose only), so predictions land on exactly the target's voxels.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..data.volume import Geometry

__all__ = ["AxisView", "axis_view", "slice_count"]

# physical LPS axis (0=x L, 1=y P, 2=z S) normal to each plane
_NORMAL = {"axial": 2, "coronal": 1, "sagittal": 0}
# canonical (physical axis, sign) of slice rows and columns
_IN_PLANE = {"axial": ((1, 1), (0, 1)), "coronal": ((2, -1), (0, 1)), "sagittal": ((2, -1), (1, 1))}


def _index_axis_of_physical(direction: np.ndarray) -> list[int]:
    """For each physical axis p, the ITK index axis i best aligned with it (a permutation)."""
    weights = np.abs(direction)
    best = max(itertools.permutations(range(3)), key=lambda perm: sum(weights[p, perm[p]] for p in range(3)))
    return list(best)


@dataclass(frozen=True)
class AxisView:
    """How to cut a ``(z, y, x[, 3])`` array into canonical 2D slices along one axis, and put them back."""

    axis: str
    shape: tuple[int, int, int]  # (z, y, x) of the volume
    slice_axis: int  # numpy axis cut
    row_axis: int  # numpy axis that becomes slice rows
    col_axis: int
    flip_rows: bool
    flip_cols: bool
    reverse_slices: bool  # True when increasing slice index runs against the canonical direction
    spacing_hw: tuple[float, float]  # physical size of a slice pixel (rows, cols), mm
    slice_spacing: float = 1.0  # mm between slices

    @property
    def n(self) -> int:
        return int(self.shape[self.slice_axis])

    @property
    def slice_shape(self) -> tuple[int, int]:
        return int(self.shape[self.row_axis]), int(self.shape[self.col_axis])

    def get(self, array: np.ndarray, k: int) -> np.ndarray:
        """Slice ``k`` (index along the numpy slice axis) as a canonical ``(h, w[, 3])`` view."""
        plane = np.take(array, int(k), axis=self.slice_axis)
        remaining = [a for a in range(3) if a != self.slice_axis]
        if remaining[0] != self.row_axis:
            plane = plane.swapaxes(0, 1)
        if self.flip_rows:
            plane = plane[::-1]
        if self.flip_cols:
            plane = plane[:, ::-1]
        return plane

    def put(self, out: np.ndarray, k: int, plane: np.ndarray) -> None:
        """Write a canonical ``(h, w)`` plane back into ``out`` at slice ``k`` (inverse of :meth:`get`)."""
        if plane.shape[:2] != self.slice_shape:
            raise ValueError(f"plane shape {plane.shape[:2]} does not match slice shape {self.slice_shape}")
        if self.flip_cols:
            plane = plane[:, ::-1]
        if self.flip_rows:
            plane = plane[::-1]
        remaining = [a for a in range(3) if a != self.slice_axis]
        if remaining[0] != self.row_axis:
            plane = plane.swapaxes(0, 1)
        index: list[object] = [slice(None)] * 3
        index[self.slice_axis] = int(k)
        out[tuple(index)] = plane

    def ordered(self, k: int | np.ndarray) -> int | np.ndarray:
        """Slice position counted along the canonical physical direction (for relative positions)."""
        return (self.n - 1 - k) if self.reverse_slices else k

    def positions_mm(self, k: int | np.ndarray) -> np.ndarray:
        """Slice positions in mm along the canonical physical direction, from the first slice there."""
        return np.asarray(self.ordered(np.asarray(k)), dtype=np.float64) * float(self.slice_spacing)

    def slice_has(self, mask: np.ndarray) -> np.ndarray:
        """Boolean ``(n,)``: which slices of a ``(z, y, x)`` mask contain any foreground."""
        other = tuple(a for a in range(3) if a != self.slice_axis)
        return np.asarray(mask.any(axis=other))

    def slice_sizes(self, mask: np.ndarray) -> np.ndarray:
        """``(n,)`` foreground voxels per slice of a ``(z, y, x)`` mask."""
        other = tuple(a for a in range(3) if a != self.slice_axis)
        return np.asarray(np.count_nonzero(mask, axis=other))


def axis_view(shape_zyx: tuple[int, ...], geometry: Geometry, axis: str) -> AxisView:
    """Build the :class:`AxisView` of a grid for ``axis`` in {"axial", "coronal", "sagittal"}."""
    shape = tuple(int(s) for s in shape_zyx[:3])
    spacing_of = {a: geometry.spacing[2 - a] for a in range(3)}  # numpy axis -> mm
    if geometry.ndim == 2:  # a 2D image is its own single axial slice, kept as stored
        return AxisView(axis, shape, 0, 1, 2, False, False, False, (spacing_of[1], spacing_of[2]), spacing_of[0])
    direction = geometry.direction_matrix
    index_of = _index_axis_of_physical(direction)  # physical p -> ITK index axis
    normal = _NORMAL[axis]
    slice_axis = 2 - index_of[normal]
    reverse = direction[normal, index_of[normal]] < 0
    (row_p, row_sign), (col_p, col_sign) = _IN_PLANE[axis]
    row_axis, col_axis = 2 - index_of[row_p], 2 - index_of[col_p]
    flip_rows = np.sign(direction[row_p, index_of[row_p]]) != row_sign
    flip_cols = np.sign(direction[col_p, index_of[col_p]]) != col_sign
    return AxisView(axis, shape, slice_axis, row_axis, col_axis, bool(flip_rows), bool(flip_cols),
                    bool(reverse), (spacing_of[row_axis], spacing_of[col_axis]), spacing_of[slice_axis])


def slice_count(image, axis: str) -> int:
    """Number of slices of an Image (or Labels) along ``axis``."""
    return axis_view(image.shape, image.geometry, axis).n
