"""Small numpy building blocks for the phantoms: blur, smooth random fields, tubes along polylines.

numpy only (no scipy in the dependencies, no torch needed to make test data), and fast enough for a
40×128×128 volume in well under a second.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def gaussian_blur(array: np.ndarray, sigmas: Sequence[float]) -> np.ndarray:
    """Separable Gaussian blur with reflected borders; ``sigmas`` in voxels per axis (0 = leave the axis)."""
    out = np.asarray(array, dtype=np.float32)
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0 or out.shape[axis] < 2:
            continue
        radius = max(1, int(np.ceil(3 * sigma)))
        taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
        taps /= taps.sum()
        moved = np.moveaxis(out, axis, 0)
        pad = min(radius, moved.shape[0] - 1)
        padded = np.pad(moved, [(pad, pad)] + [(0, 0)] * (moved.ndim - 1), mode="reflect")
        if pad < radius:  # axis shorter than the kernel: extend the reflection with edge values
            padded = np.pad(padded, [(radius - pad, radius - pad)] + [(0, 0)] * (moved.ndim - 1), mode="edge")
        acc = np.zeros_like(moved)
        n = moved.shape[0]
        for i, weight in enumerate(taps):
            acc += weight * padded[i:i + n]
        out = np.moveaxis(acc, 0, axis)
    return out


def smooth_noise(rng: np.random.Generator, shape: Sequence[int], correlation: Sequence[float] | float) -> np.ndarray:
    """Zero-mean, unit-std random field whose features are about ``correlation`` voxels wide per axis
    (white noise low-passed with a Gaussian in Fourier space)."""
    shape = tuple(int(s) for s in shape)
    corr = np.broadcast_to(np.asarray(correlation, dtype=float), (len(shape),))
    spectrum = np.fft.rfftn(rng.standard_normal(shape).astype(np.float32))
    gain = np.ones(spectrum.shape, dtype=np.float32)
    for axis, (n, c) in enumerate(zip(shape, corr)):
        freq = np.fft.rfftfreq(n) if axis == len(shape) - 1 else np.fft.fftfreq(n)
        sigma_f = 1.0 / (2 * np.pi * max(c, 1e-3))
        view = [1] * len(shape)
        view[axis] = freq.size
        gain = gain * np.exp(-0.5 * (freq / sigma_f) ** 2).astype(np.float32).reshape(view)
    field = np.fft.irfftn(spectrum * gain, s=shape, axes=tuple(range(len(shape)))).astype(np.float32)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def tube_mask(coords: Sequence[np.ndarray], spacing_world: Sequence[float], points: np.ndarray,
              radii: Sequence[float] | float) -> np.ndarray:
    """Boolean mask of the voxels within ``radius`` of a polyline.

    ``coords`` are the world coordinates of the voxel grid as broadcastable arrays ``(Z, Y, X)`` (1-D
    along their own axis, i.e. an axis-aligned grid), ``spacing_world`` the voxel size in the same units,
    ``points`` a ``(n, 3)`` array of ``(x, y, z)`` vertices and ``radii`` one radius per vertex (linearly
    interpolated along each segment). Each segment is evaluated only inside its bounding box.
    """
    zc, yc, xc = (np.asarray(c).ravel() for c in coords)
    shape = (zc.size, yc.size, xc.size)
    mask = np.zeros(shape, dtype=bool)
    points = np.asarray(points, dtype=np.float64)
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(points),))
    origin = np.array([xc[0], yc[0], zc[0]])
    step = np.asarray(spacing_world, dtype=np.float64)  # (sx, sy, sz)
    for (p0, p1), (r0, r1) in zip(zip(points[:-1], points[1:]), zip(radii[:-1], radii[1:])):
        reach = max(r0, r1)
        lo = np.floor((np.minimum(p0, p1) - reach - origin) / step).astype(int)
        hi = np.ceil((np.maximum(p0, p1) + reach - origin) / step).astype(int) + 1
        lo = np.clip(lo, 0, [shape[2], shape[1], shape[0]])
        hi = np.clip(hi, 0, [shape[2], shape[1], shape[0]])
        if np.any(hi <= lo):
            continue
        x = xc[lo[0]:hi[0]][None, None, :]
        y = yc[lo[1]:hi[1]][None, :, None]
        z = zc[lo[2]:hi[2]][:, None, None]
        d = p1 - p0
        length2 = float(d @ d) or 1e-12
        t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / length2, 0.0, 1.0)
        dist2 = (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2
        radius = r0 + t * (r1 - r0)
        mask[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]] |= dist2 <= radius ** 2
    return mask


def bezier(p0: np.ndarray, control: np.ndarray, p1: np.ndarray, n: int) -> np.ndarray:
    """``n + 1`` points along a quadratic Bézier curve (smooth vessel paths)."""
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * control + t ** 2 * p1
