"""A tissue-class canvas for the unseen CT phantom: structures are painted, in anatomical order, as
class numbers into one ``(z, y, x)`` uint8 volume, each only inside its own bounding box.

Why classes first and Hounsfield units last: the labels and the image then come from the same voxels
(a labelled voxel is exactly a voxel painted as that tissue), and the enhancement of a contrast phase
is one lookup table applied at the end. Painting is restricted with ``into`` (the classes a structure
may displace), which is how organs are kept from overlapping without any per-voxel logic.

Coordinates are millimetres in the patient frame (x towards the patient's left, y posterior, z
superior: LPS), the same numbers the returned geometry uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = ["Box", "Canvas"]


@dataclass(frozen=True)
class Box:
    """A sub-block of the canvas: its index slices and the voxel-centre coordinates (mm) as broadcastable
    ``(nz, 1, 1)``, ``(1, ny, 1)``, ``(1, 1, nx)`` float32 arrays."""

    slices: tuple[slice, slice, slice]
    z: np.ndarray
    y: np.ndarray
    x: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.z.shape[0], self.y.shape[1], self.x.shape[2])


class Canvas:
    """The class volume being painted, with its grid (spacing and origin in x, y, z order, mm)."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float],
                 origin: tuple[float, float, float]) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.spacing = tuple(float(s) for s in spacing)
        self.origin = tuple(float(o) for o in origin)
        self.tissue = np.zeros(self.shape, dtype=np.uint8)
        # additive Hounsfield adjustments applied after the class lookup: (slices, float32 array)
        self.adjustments: list[tuple[tuple[slice, slice, slice], np.ndarray]] = []

    # ------------------------------------------------------------------ grid
    def axis_coordinates(self, axis: str) -> np.ndarray:
        """All voxel-centre coordinates (mm) along ``axis`` ('x', 'y' or 'z')."""
        k = "xyz".index(axis)
        n = self.shape[2 - k]
        return (self.origin[k] + self.spacing[k] * np.arange(n)).astype(np.float32)

    def _index_range(self, low: float, high: float, k: int) -> tuple[int, int]:
        n = self.shape[2 - k]
        start = np.clip(np.ceil((low - self.origin[k]) / self.spacing[k]), 0, n)
        stop = np.clip(np.floor((high - self.origin[k]) / self.spacing[k]) + 1, 0, n)
        return int(start), int(stop)

    def box(self, low: Iterable[float], high: Iterable[float]) -> Box | None:
        """The voxels whose centres lie in the axis-aligned block [low, high] (x, y, z mm); None when empty."""
        low, high = list(low), list(high)
        ranges = [self._index_range(low[k], high[k], k) for k in range(3)]
        if any(stop <= start for start, stop in ranges):
            return None
        (x0, x1), (y0, y1), (z0, z1) = ranges
        coords = [(self.origin[k] + self.spacing[k] * np.arange(*ranges[k])).astype(np.float32) for k in range(3)]
        return Box(slices=(slice(z0, z1), slice(y0, y1), slice(x0, x1)),
                   z=coords[2][:, None, None], y=coords[1][None, :, None], x=coords[0][None, None, :])

    def inner(self, outer: Box, low: Iterable[float], high: Iterable[float]) -> tuple[tuple[slice, ...], Box] | None:
        """The part of ``outer`` inside [low, high]: its slices *relative to* ``outer`` and its own Box."""
        box = self.box(low, high)
        if box is None:
            return None
        local, glob = [], []
        for k in range(3):
            o, b = outer.slices[k], box.slices[k]
            start, stop = max(o.start, b.start), min(o.stop, b.stop)
            if stop <= start:
                return None
            local.append(slice(start - o.start, stop - o.start))
            glob.append(slice(start, stop))
        z, y, x = outer.z[local[0]], outer.y[:, local[1]], outer.x[..., local[2]]
        return tuple(local), Box(slices=tuple(glob), z=z, y=y, x=x)

    def whole(self) -> Box:
        box = self.box([-np.inf] * 3, [np.inf] * 3)
        assert box is not None
        return box

    # ------------------------------------------------------------------ painting
    def paint(self, box: Box, mask: np.ndarray, tissue: int, into: Iterable[int] | None = None) -> np.ndarray:
        """Set ``tissue`` where ``mask`` holds (and, with ``into``, where the current class is one of those).
        Returns the mask actually painted."""
        view = self.tissue[box.slices]
        mask = np.broadcast_to(mask, view.shape)
        if into is not None:
            allowed = np.zeros(256, dtype=bool)
            allowed[list(into)] = True
            mask = mask & allowed[view]
        view[mask] = tissue
        return mask

    def adjust(self, box: Box, delta: np.ndarray) -> None:
        """Add ``delta`` Hounsfield units to the box after the class lookup (enhancement gradients)."""
        self.adjustments.append((box.slices, np.broadcast_to(delta, box.shape).astype(np.float32)))

    # ------------------------------------------------------------------ tubes
    def tube_field(self, points: np.ndarray, radii: np.ndarray, margin: float = 2.0) -> tuple[Box, np.ndarray] | None:
        """Signed distance (mm, negative inside) to a tube of varying radius around the polyline
        ``points`` (n × 3, x y z mm), on the tube's bounding box; None when the tube misses the canvas.

        Each segment is a capsule whose radius varies linearly along it; the field is the minimum over
        segments, computed only inside each segment's own bounding block."""
        points = np.asarray(points, dtype=np.float64)
        radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(points),))
        reach = float(radii.max()) + margin
        box = self.box(points.min(axis=0) - reach, points.max(axis=0) + reach)
        if box is None:
            return None
        field = np.full(box.shape, np.inf, dtype=np.float32)
        starts = (box.slices[2].start, box.slices[1].start, box.slices[0].start)
        for i in range(len(points) - 1):
            a, b = points[i].astype(np.float32), points[i + 1].astype(np.float32)
            ra, rb = float(radii[i]), float(radii[i + 1])
            r = max(ra, rb) + margin
            lo, hi = np.minimum(a, b) - r, np.maximum(a, b) + r
            ranges = [self._index_range(lo[k], hi[k], k) for k in range(3)]
            local = [(max(s, starts[k]) - starts[k], min(e, starts[k] + box.shape[2 - k]) - starts[k])
                     for k, (s, e) in enumerate(ranges)]
            if any(e <= s for s, e in local):
                continue
            (xs, xe), (ys, ye), (zs, ze) = local
            x, y, z = box.x[..., xs:xe], box.y[:, ys:ye], box.z[zs:ze]
            ab = b - a
            length2 = float(np.sum(ab.astype(np.float64) ** 2)) or 1e-9
            t = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) * (1.0 / length2)
            np.clip(t, 0.0, 1.0, out=t)
            dx = x - (a[0] + t * ab[0])
            dy = y - (a[1] + t * ab[1])
            dz = z - (a[2] + t * ab[2])
            distance = np.sqrt(dx * dx + dy * dy + dz * dz) - (ra + t * (rb - ra))
            view = field[zs:ze, ys:ye, xs:xe]
            np.minimum(view, distance, out=view)
        return box, field
