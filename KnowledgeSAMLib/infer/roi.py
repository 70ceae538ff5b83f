"""Regions of interest: where in each slice the model looks, and how a user's box is read.

Why: a clinician's CT slice is 512×512 with the kidney ~100 px wide among spine, bowel and vessels. Shown the whole
slice at the model's 256 px, the kidney is 50 px and its medulla a few pixels; shown the region around it, the
same structures fill the input at the resolution the model was trained for. The engine therefore looks at an
in-plane box (the same on every slice) and a range of slices, and pastes its result back into the full target.

* :func:`structure_box` — the box around structures over all their slices, grown by a margin (the reference
  side of ``--roi auto``, and the target side from a first, coarse pass);
* :class:`RoiBox` — a user's box in voxel indices (``--roi x0,y0,z0,x1,y1,z1``, inclusive) or RAS millimetres
  (``--roi ras:...``), checked against the image and turned into slice-plane crops for an axis view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.volume import Geometry, Image
from ..errors import InputError
from .slicing import AxisView

__all__ = ["Crop", "RoiBox", "structure_box", "parse_roi", "is_focus", "union_plane", "region_crops", "crop_centre",
           "restrict_to_crop", "overlaps", "RoiChoice", "resolve_roi", "DEFAULT_MARGIN", "FULL_SLICE_FRACTION",
           "MIN_SIDE_MM"]

DEFAULT_MARGIN = 0.3  # box grows by this fraction of the structures' larger extent on each side (training: 0.15-0.5)
# never look at less than 4 cm: tiny structures need context, and a tighter crop shows the model a zoom it never
# trained at. With 2 cm, 2 of 40 MSD hippocampus volumes the model never trained on (msd-hippocampus-more, one
# labelled slice per structure, propagate) fell to 0.49 / 0.46 Dice in two same-volume crops of ~30 mm; with 4 cm
# all 40 matched whole slices (mean 0.820 -> 0.838), and 3.2 cm still failed one
MIN_SIDE_MM = 40.0
FULL_SLICE_FRACTION = 0.6  # a box covering more of the slice than this is no focus: look at the whole slice

Crop = tuple[int, int, int, int]  # (r0, r1, c0, c1): canonical slice rows/columns, end exclusive


def structure_box(masks: Sequence[np.ndarray], view: AxisView, margin: float = DEFAULT_MARGIN,
                  shift: tuple[float, float] = (0.0, 0.0), min_side_mm: float = MIN_SIDE_MM,
                  slices: Sequence[int] | None = None) -> Crop | None:
    """The in-plane box around the union of ``masks`` (``(z, y, x)`` arrays) over their slices (or only
    ``slices``), grown by ``margin`` × its larger physical side on each side, square in millimetres, shifted by
    ``shift`` × its side (training jitter) and clipped to the slice. None when the masks are empty there."""
    h, w = view.slice_shape
    rows = np.zeros(h, dtype=bool)
    cols = np.zeros(w, dtype=bool)
    for m in masks:
        ks = np.flatnonzero(view.slice_has(m)) if slices is None else [int(k) for k in slices]
        for k in ks:
            plane = view.get(m, int(k))
            rows |= plane.any(axis=1)
            cols |= plane.any(axis=0)
    if not rows.any():
        return None
    sy, sx = view.spacing_hw
    r_idx, c_idx = np.flatnonzero(rows), np.flatnonzero(cols)
    centre = np.array([(r_idx[0] + r_idx[-1] + 1) / 2 * sy, (c_idx[0] + c_idx[-1] + 1) / 2 * sx])
    extent = max((r_idx[-1] - r_idx[0] + 1) * sy, (c_idx[-1] - c_idx[0] + 1) * sx)
    side = max(min_side_mm, extent * (1.0 + 2.0 * margin))
    centre = centre + np.asarray(shift, dtype=float) * side
    r0, r1 = int(np.floor((centre[0] - side / 2) / sy)), int(np.ceil((centre[0] + side / 2) / sy))
    c0, c1 = int(np.floor((centre[1] - side / 2) / sx)), int(np.ceil((centre[1] + side / 2) / sx))
    r0, r1, c0, c1 = max(0, r0), min(h, r1), max(0, c0), min(w, c1)
    if r1 - r0 < 2 or c1 - c0 < 2:
        return None
    return r0, r1, c0, c1


def is_focus(crop: Crop | None, view: AxisView, fraction: float = FULL_SLICE_FRACTION) -> bool:
    """True when ``crop`` is small enough to be worth looking at alone (not most of the slice)."""
    if crop is None:
        return False
    h, w = view.slice_shape
    r0, r1, c0, c1 = crop
    return (r1 - r0) * (c1 - c0) < fraction * h * w


@dataclass(frozen=True)
class RoiBox:
    """A box in the target's voxel indices ``(x, y, z)``, inclusive on both ends (as Slicer's IJK extents)."""

    lower: tuple[int, int, int]
    upper: tuple[int, int, int]

    def check(self, shape_zyx: Sequence[int], what: str = "the target") -> "RoiBox":
        """Clip to the image; an ROI that misses the image entirely is an :class:`InputError`."""
        size = (int(shape_zyx[2]), int(shape_zyx[1]), int(shape_zyx[0]))  # x, y, z
        lower = tuple(max(0, v) for v in self.lower)
        upper = tuple(min(n - 1, v) for v, n in zip(self.upper, size))
        if any(lo > hi for lo, hi in zip(lower, upper)):
            raise InputError(f"--roi {self.describe()} does not overlap {what} (voxels 0..{size[0] - 1}, "
                             f"0..{size[1] - 1}, 0..{size[2] - 1} in x, y, z)")
        return RoiBox(lower, upper)  # type: ignore[arg-type]

    def describe(self) -> str:
        return ",".join(str(v) for v in (*self.lower, *self.upper))

    def as_mask_bounds(self) -> tuple[slice, slice, slice]:
        """numpy ``(z, y, x)`` slices of the box."""
        (x0, y0, z0), (x1, y1, z1) = self.lower, self.upper
        return slice(z0, z1 + 1), slice(y0, y1 + 1), slice(x0, x1 + 1)

    def crop_and_slices(self, view: AxisView) -> tuple[Crop, list[int]]:
        """The slice-plane crop (canonical rows/columns) and the slice indices the box spans along ``view``."""
        box = np.zeros(view.shape, dtype=bool)
        box[self.as_mask_bounds()] = True
        slices = [int(k) for k in np.flatnonzero(view.slice_has(box))]
        plane = view.get(box, slices[0])
        rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
        return (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1), slices

    @classmethod
    def from_ras(cls, corner_a: Sequence[float], corner_b: Sequence[float], geometry: Geometry) -> "RoiBox":
        """The voxel box spanned by two RAS points (mm; Slicer's coordinates), rounded outward."""
        lps = np.array([[-a[0], -a[1], a[2]] for a in (corner_a, corner_b)], dtype=float)
        to_index = np.linalg.inv(geometry.index_to_physical())
        index = (to_index @ np.c_[lps, np.ones(2)].T).T[:, :3]
        lower = np.floor(index.min(axis=0) + 0.5).astype(int)
        upper = np.ceil(index.max(axis=0) - 0.5).astype(int)
        return cls(tuple(int(v) for v in lower), tuple(int(v) for v in np.maximum(upper, lower)))  # type: ignore[arg-type]


def parse_roi(text: str | None) -> str | RoiBox | tuple[tuple[float, ...], tuple[float, ...]]:
    """``--roi`` text → ``"auto"``, ``"none"``, a voxel :class:`RoiBox`, or two RAS points (``ras:...``; they
    become a box once the target's geometry is known). Malformed text is an :class:`InputError`."""
    if text is None or text.strip().lower() in ("", "auto"):
        return "auto"
    text = text.strip()
    if text.lower() in ("none", "off", "full"):
        return "none"
    ras = text.lower().startswith("ras:")
    body = text[4:] if ras else text
    try:
        values = [float(v) for v in body.split(",")]
    except ValueError:
        values = []
    if len(values) != 6:
        raise InputError(f"--roi must be auto, none, x0,y0,z0,x1,y1,z1 (voxels, inclusive) or ras:R0,A0,S0,R1,A1,S1 "
                         f"(mm), got {text!r}")
    if ras:
        return tuple(values[:3]), tuple(values[3:])
    if any(v != int(v) for v in values):
        raise InputError(f"--roi voxel indices must be whole numbers, got {text!r} (use ras:... for millimetres)")
    lower = tuple(int(min(values[i], values[i + 3])) for i in range(3))
    upper = tuple(int(max(values[i], values[i + 3])) for i in range(3))
    return RoiBox(lower, upper)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- regions

def union_plane(masks: Sequence[np.ndarray], view: AxisView, slices: Sequence[int] | None = None) -> np.ndarray:
    """The canonical-plane union of ``masks`` over their slices (or ``slices``): where the structures lie in-plane."""
    plane = np.zeros(view.slice_shape, dtype=bool)
    for m in masks:
        ks = np.flatnonzero(view.slice_has(m)) if slices is None else slices
        for k in ks:
            plane |= view.get(m, int(k))
    return plane


def _components(plane: np.ndarray) -> list[np.ndarray]:
    import SimpleITK as sitk

    labelled = sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(plane.astype(np.uint8)), True))
    return [labelled == i for i in range(1, int(labelled.max()) + 1)]


def region_crops(plane: np.ndarray, view: AxisView, margin: float = DEFAULT_MARGIN,
                 min_share: float = 0.15, min_side_mm: float = MIN_SIDE_MM) -> list[Crop]:
    """One crop per separate structure group of an in-plane union (e.g. the left and the right kidney), each
    grown by ``margin``; groups smaller than ``min_share`` of the largest are dropped (stray pixels of a coarse
    pass), crops that mostly overlap are merged (two kidneys whose arteries meet at the aorta stay two)."""
    parts = [c for c in _components(plane) if c.any()]
    if not parts:
        return []
    largest = max(int(c.sum()) for c in parts)
    parts = [c for c in parts if c.sum() >= min_share * largest]
    crops = [structure_box([c[None]], _plane_view(view), margin, min_side_mm=min_side_mm) for c in parts]
    crops = [c for c in crops if c is not None]
    merged = True
    while merged and len(crops) > 1:
        merged = False
        for i in range(len(crops)):
            for j in range(i + 1, len(crops)):
                a, b = crops[i], crops[j]
                if _overlap(a, b) > 0.5 * min(_area(a), _area(b)):  # mostly the same region: look once
                    crops[i] = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))
                    del crops[j]
                    merged = True
                    break
            if merged:
                break
    return crops


def _area(crop: Crop) -> int:
    return (crop[1] - crop[0]) * (crop[3] - crop[2])


def _overlap(a: Crop, b: Crop) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[2], b[2]))


def overlaps(a: Crop, b: Crop) -> bool:
    """Whether two crops share any pixel."""
    return _overlap(a, b) > 0


def _plane_view(view: AxisView) -> AxisView:
    """A one-slice view with the same in-plane shape and spacing (for boxes of a single canonical plane)."""
    from dataclasses import replace

    h, w = view.slice_shape
    return replace(view, shape=(1, h, w), slice_axis=0, row_axis=1, col_axis=2, flip_rows=False, flip_cols=False,
                   reverse_slices=False)


def crop_centre(crop: Crop, view: AxisView) -> np.ndarray:
    """The crop's centre as a fraction of the slice (rows, cols): how regions of two scans are matched."""
    h, w = view.slice_shape
    return np.array([(crop[0] + crop[1]) / 2 / h, (crop[2] + crop[3]) / 2 / w])


def restrict_to_crop(layers: np.ndarray, view: AxisView, crop: Crop) -> np.ndarray:
    """``(L, z, y, x)`` label layers with everything outside the in-plane ``crop`` set to 0."""
    keep_plane = np.zeros(view.slice_shape, dtype=bool)
    r0, r1, c0, c1 = crop
    keep_plane[r0:r1, c0:c1] = True
    keep = np.zeros(view.shape, dtype=bool)
    for k in range(view.n):
        view.put(keep, k, keep_plane)
    return np.where(keep[None], layers, 0).astype(layers.dtype, copy=False)


@dataclass(frozen=True)
class RoiChoice:
    """``kind`` "none" (whole slices), "auto" or "box" (a user's box, with its slices along the axis)."""

    kind: str
    crop: Crop | None = None
    slices: tuple[int, ...] = ()
    text: str = ""


def resolve_roi(roi, target: Image, view: AxisView, slices: Sequence[int]) -> RoiChoice:
    """A request's ``roi`` (``"auto"``, ``"none"``, a :class:`RoiBox`, two RAS points or their text) checked against
    the target; an ROI that misses the image or the requested slices is an :class:`InputError`."""
    if roi is None or isinstance(roi, str) and not isinstance(roi, RoiBox):
        roi = parse_roi(roi)
    if roi == "auto" or roi == "none":
        return RoiChoice(kind=str(roi))
    if isinstance(roi, tuple) and len(roi) == 2 and not isinstance(roi, RoiBox):
        roi = RoiBox.from_ras(roi[0], roi[1], target.geometry)
    if not isinstance(roi, RoiBox):
        raise InputError(f"roi must be 'auto', 'none' or a box, got {roi!r}")
    box = roi.check(target.shape, target.source or "the target")
    crop, box_slices = box.crop_and_slices(view)
    wanted = [k for k in box_slices if k in set(slices)]
    if not wanted:
        raise InputError(f"--roi {box.describe()} covers no slice of the requested slice range")
    return RoiChoice(kind="box", crop=crop, slices=tuple(wanted), text=box.describe())
