"""Kidney region-of-interest crops of the CT phantom, as kidney-parsing datasets provide them.

Why: on a whole-abdomen slice the kidney is ~25 pixels wide at a 128-pixel model size, its medullary
pyramids a few pixels. Kidney-parsing datasets (KiPA22, and by all appearances the paper's KAS) work on
kidney ROI crops, as the hippocampus data (MSD crops) and the fundus data (disc-centred crops) do. This
module renders the abdomen at a finer in-plane spacing and crops a window around one kidney, so the
structures are large enough to be segmented at the small model size while the tissue context (fat,
bowel, spine, liver/spleen edges, the aorta the artery comes from) stays in the field of view.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..volume import Geometry, Image, Labels
from .kidney import kidney_phantom_case

__all__ = ["KidneyROIConfig", "make_kidney_roi_phantom", "crop_volume"]


@dataclass(frozen=True)
class KidneyROIConfig:
    """The abdomen is rendered at ``render_shape``/``render_spacing``; the crop is ``crop_xy`` pixels."""

    render_shape: tuple[int, int, int] = (40, 256, 256)  # (z, y, x): a 192 mm field of view
    render_spacing: tuple[float, float, float] = (0.75, 0.75, 3.0)  # (x, y, z) mm
    crop_xy: int = 96  # 72 mm square around the kidney
    jitter_px: int = 10  # random shift of the window centre (training variety)
    damage_probability: float = 0.35


def crop_volume(image: Image, labels: Labels, start_zyx: tuple[int, int, int],
                size_zyx: tuple[int, int, int]) -> tuple[Image, Labels]:
    """Crop both to the box ``start + size`` (clipped to the grid), keeping physical positions exact."""
    start = np.clip(np.asarray(start_zyx), 0, np.asarray(image.shape) - 1)
    stop = np.minimum(start + np.asarray(size_zyx), image.shape)
    region = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
    ijk = np.array([start[2], start[1], start[0], 1.0])  # (x, y, z) index of the new first voxel
    origin = (image.geometry.index_to_physical() @ ijk)[:3]
    geometry = replace(image.geometry, origin=tuple(float(v) for v in origin))
    cropped_image = Image(np.ascontiguousarray(image.array[region]), geometry, image.source)
    cropped_labels = Labels(np.ascontiguousarray(labels.layers[(slice(None),) + region]), geometry,
                            list(labels.segments), labels.source)
    return cropped_image, cropped_labels


def make_kidney_roi_phantom(seed: int, side: int | None = None,
                            config: KidneyROIConfig = KidneyROIConfig()) -> tuple[Image, Labels]:
    """A kidney-centred CT crop (``artery``/``medulla``/``cortex`` as in :func:`make_kidney_phantom`).

    ``side`` -1 = patient right, +1 = left, None = chosen by the seed. Deterministic per (seed, side).
    """
    rng = np.random.default_rng([seed, 7919])
    case = kidney_phantom_case(seed, config.render_shape, config.render_spacing, config.damage_probability)
    image, labels = case.image, case.labels
    side = side if side is not None else int(rng.choice([-1, 1]))
    kidney = labels.layers[0] > 0
    nz, ny, nx = kidney.shape
    half = nx // 2
    # +x is patient left in LPS with identity direction: the left kidney lies at larger x.
    on_side = kidney.copy()
    if side > 0:
        on_side[..., :half] = False
    else:
        on_side[..., half:] = False
    parenchyma = on_side & (labels.layers[0] != 1)  # centre on the kidney, not on the artery's path
    zz, yy, xx = np.nonzero(parenchyma if parenchyma.any() else on_side)
    if zz.size == 0:
        raise ValueError(f"kidney phantom seed {seed} has no kidney on side {side}")
    size = config.crop_xy
    jitter = rng.integers(-config.jitter_px, config.jitter_px + 1, size=2)
    cy = int(round(yy.mean())) + int(jitter[0]) - size // 2
    cx = int(round(xx.mean())) + int(jitter[1]) - size // 2
    cy, cx = int(np.clip(cy, 0, ny - size)), int(np.clip(cx, 0, nx - size))
    roi_image, roi_labels = crop_volume(image, labels, (0, cy, cx), (nz, size, size))
    source = f"kidney ROI phantom seed {seed} side {'left' if side > 0 else 'right'}"
    roi_image.source = roi_labels.source = source
    return roi_image, roi_labels
