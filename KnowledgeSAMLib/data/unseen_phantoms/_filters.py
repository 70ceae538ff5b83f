"""Small separable filters on float32 arrays, written with shifted slices (no index gathers, no BLAS):
a 3-tap smoothing for partial-volume and optical blur, and linear 2× upsampling for smooth fields."""

from __future__ import annotations

import numpy as np

__all__ = ["smooth_121", "upsample_linear"]


def _along(axis: int, part: slice, ndim: int = 3) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[axis] = part
    return tuple(index)


def smooth_121(volume: np.ndarray, axis: int, weight: float) -> np.ndarray:
    """A 3-tap smoothing [w, 1 - 2w, w] along ``axis`` (edges repeated), float32, by shifted slices."""
    if weight <= 0 or volume.shape[axis] < 2:
        return volume
    n = volume.ndim
    neighbours = np.empty_like(volume)
    neighbours[_along(axis, slice(1, None), n)] = volume[_along(axis, slice(None, -1), n)]
    neighbours[_along(axis, slice(0, 1), n)] = volume[_along(axis, slice(0, 1), n)]
    neighbours[_along(axis, slice(None, -1), n)] += volume[_along(axis, slice(1, None), n)]
    neighbours[_along(axis, slice(-1, None), n)] += volume[_along(axis, slice(-1, None), n)]
    neighbours *= np.float32(weight)
    out = volume * np.float32(1 - 2 * weight)
    out += neighbours
    return out


def upsample_linear(field: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Double ``field`` along ``axis`` by linear interpolation (midpoints between samples), cut to ``size``."""
    n = field.ndim
    shape = list(field.shape)
    shape[axis] = 2 * field.shape[axis]
    out = np.empty(shape, dtype=field.dtype)
    out[_along(axis, slice(0, None, 2), n)] = field
    odd = out[_along(axis, slice(1, None, 2), n)]
    odd[_along(axis, slice(None, -1), n)] = field[_along(axis, slice(None, -1), n)]
    odd[_along(axis, slice(None, -1), n)] += field[_along(axis, slice(1, None), n)]
    odd[_along(axis, slice(None, -1), n)] *= np.float32(0.5)
    odd[_along(axis, slice(-1, None), n)] = field[_along(axis, slice(-1, None), n)]
    return out[_along(axis, slice(0, size), n)]
