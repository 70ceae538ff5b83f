"""Random fields for the unseen phantoms: B-spline lattices and spectrally shaped noise.

Why these two and why written this way: the unseen family must not share its texture model with the
training generators, and every field must be byte-identical for a seed on any machine. So the fields
are built from gathers and element-wise sums only (no BLAS matrix products, whose summation order can
depend on the thread count), from a ``numpy.random.Generator`` the caller owns.

* :func:`bspline_field` — a smooth field: Gaussian control values on a coarse lattice, evaluated with
  the uniform cubic B-spline kernel axis by axis (4 taps per axis), scaled to unit variance.
* :func:`spectral_noise` — 2D noise with a chosen power spectrum (power law between two cut-offs),
  synthesised by FFT on a small working grid and brought to full size with :func:`bspline_upsample`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["bspline_field", "bspline_upsample", "bspline_at", "spectral_noise"]


def _cubic_bspline_weights(frac: np.ndarray) -> np.ndarray:
    """The four uniform cubic B-spline weights for fractional positions ``frac`` in [0, 1), shape (4, n)."""
    t = frac
    t2, t3 = t * t, t * t * t
    return np.stack([(1 - t) ** 3 / 6.0, (3 * t3 - 6 * t2 + 4) / 6.0,
                     (-3 * t3 + 3 * t2 + 3 * t + 1) / 6.0, t3 / 6.0]).astype(np.float32)


def _expand_axis(values: np.ndarray, axis: int, n_out: int) -> tuple[np.ndarray, float]:
    """Evaluate a cubic B-spline along ``axis`` whose control values are ``values`` (``c + 3`` of them,
    covering ``c`` intervals) at ``n_out`` evenly spaced points. Returns the result and the mean squared
    weight sum (how much the kernel shrinks the variance of independent control values)."""
    intervals = values.shape[axis] - 3
    position = (np.arange(n_out, dtype=np.float64) + 0.5) * (intervals / n_out)
    first = np.minimum(np.floor(position).astype(np.int64), intervals - 1)
    weights = _cubic_bspline_weights((position - first).astype(np.float32))
    shape = [1] * values.ndim
    shape[axis] = n_out
    out = None
    for k in range(4):
        term = np.take(values, first + k, axis=axis) * weights[k].reshape(shape)
        out = term if out is None else out + term
    return out, float(np.mean(np.sum(weights.astype(np.float64) ** 2, axis=0)))


def bspline_at(values: np.ndarray, positions: Sequence[np.ndarray]) -> np.ndarray:
    """Evaluate the cubic B-spline with control lattice ``values`` (``c + 3`` per axis) at lattice
    positions given per axis (1D arrays in [0, c]; clipped), as an outer-product grid. The positions can
    come from physical coordinates, so a lattice drawn once evaluates identically on any voxel grid."""
    field = values.astype(np.float32, copy=False)
    for axis, pos in enumerate(positions):
        intervals = field.shape[axis] - 3
        pos = np.clip(np.asarray(pos, dtype=np.float64), 0.0, intervals - 1e-6)
        first = np.floor(pos).astype(np.int64)
        weights = _cubic_bspline_weights((pos - first).astype(np.float32))
        shape = [1] * field.ndim
        shape[axis] = len(pos)
        out = None
        for k in range(4):
            term = np.take(field, first + k, axis=axis) * weights[k].reshape(shape)
            out = term if out is None else out + term
        field = out
    return field


def bspline_upsample(values: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, float]:
    """Cubic B-spline evaluation of a control lattice ``values`` on a grid of ``shape`` (same ndim).
    Returns the field and its variance factor (variance of the output per unit control variance)."""
    field = values.astype(np.float32, copy=False)
    factor = 1.0
    # least-enlarged axes first: the intermediate arrays stay as small as possible
    for axis in np.argsort(np.asarray(shape) / np.asarray(values.shape), kind="stable"):
        field, shrink = _expand_axis(field, int(axis), int(shape[axis]))
        factor *= shrink
    return field, factor


def bspline_field(rng: np.random.Generator, shape: Sequence[int], intervals: Sequence[int]) -> np.ndarray:
    """A smooth, zero-mean, approximately unit-variance float32 field on ``shape``.

    ``intervals`` is the number of spline intervals per axis: the field's features are about
    ``shape / intervals`` voxels across."""
    lattice = rng.standard_normal(tuple(int(c) + 3 for c in intervals)).astype(np.float32)
    field, factor = bspline_upsample(lattice, shape)
    field *= np.float32(1.0 / np.sqrt(factor))
    return field


def spectral_noise(rng: np.random.Generator, shape: tuple[int, int], *, exponent: float,
                   band: tuple[float, float], work: int = 192) -> np.ndarray:
    """2D noise with power ∝ f^-exponent for spatial frequencies within ``band`` (cycles per image
    height), zero mean and unit variance, on ``shape``.

    Synthesised on a ``work``-pixel grid (aspect kept), so the finest band limit should stay below
    about ``work / 3``."""
    height, width = shape
    wh = int(work)
    ww = max(8, int(round(work * width / height)))
    white = rng.standard_normal((wh, ww))
    spectrum = np.fft.rfft2(white)
    fy = np.fft.fftfreq(wh)[:, None] * wh
    fx = np.fft.rfftfreq(ww)[None, :] * ww * (wh / ww)
    radius = np.hypot(fy, fx)
    low, high = band
    gain = np.where((radius >= low) & (radius <= high), np.maximum(radius, 1e-6) ** (-exponent / 2.0), 0.0)
    # soft roll-off at the top of the band, so the noise does not ring
    gain *= np.exp(-((radius / max(high, 1e-6)) ** 4))
    small = np.fft.irfft2(spectrum * gain, s=(wh, ww))
    small -= small.mean()
    small /= max(small.std(), 1e-12)
    padded = np.pad(small, 2, mode="wrap")[1:, 1:]  # c + 3 control values for c intervals per axis
    field, _ = bspline_upsample(padded.astype(np.float32), shape)
    field -= field.mean()
    field /= max(float(field.std()), 1e-12)
    return field.astype(np.float32)
