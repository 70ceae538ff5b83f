"""Training views of a labelled volume: the whole slice or a region of interest, with domain randomisation.

Why views: at inference the engine shows the model either whole slices (a first, coarse look) or the region
around the wanted structures (``--roi auto``: the reference's labelled structures plus a margin, and the same
region found in the target). Training must show both, with the margins and the slight off-centring the engine
produces, and with the intensity, noise, blur and resolution differences real scanners add — so that a scan
from another source looks familiar. A frozen encoder's embeddings are then cached per view
(:mod:`.embedding_store`), which is why randomisation happens here, once per view, and not per step.

A view is described by :class:`ViewSpec` (drawn per case from the source's settings and a seeded generator)
and applied by :func:`volume_view` to give a :class:`~.sources.SliceCase`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.volume import Image, Labels
from ..errors import InputError

__all__ = ["ViewSpec", "draw_view", "volume_view"]


@dataclass(frozen=True)
class ViewSpec:
    """One drawn view: crop, intensity change and degradations (identity when every field is neutral)."""

    roi: bool = False
    margin: float = 0.3  # added on each side, as a fraction of the structures' larger in-plane extent
    shift: tuple[float, float] = (0.0, 0.0)  # crop centre offset (rows, cols), fraction of the crop side
    window_scale: float = 1.0  # CT: window width factor; MR/RGB: contrast factor around mid-grey
    level_shift: float = 0.0  # CT: level change in HU; MR/RGB: brightness change in [0, 1] units
    gamma: float = 1.0
    noise: float = 0.0  # Gaussian noise sigma on the [0, 1] image
    blur: float = 0.0  # Gaussian blur sigma in original pixels
    downsample: float = 1.0  # resample by 1/downsample and back (loss of resolution)
    per_region: bool = False  # ROI around one separate structure group (one kidney), as --roi auto's windows
    bias: float = 0.0  # log-amplitude of a smooth multiplicative field (coil shading, uneven illumination)
    colour: float = 0.0  # sd of log per-channel gains (colour photographs only: white balance, camera)


def draw_view(rng: np.random.Generator, *, roi: bool, margin_range: tuple[float, float] = (0.15, 0.5),
              shift: float = 0.1, randomise: float = 0.0, per_region: bool = False) -> ViewSpec:
    """A random :class:`ViewSpec`; ``randomise`` in [0, 1] scales every intensity and degradation range."""
    r = float(randomise)
    return ViewSpec(
        roi=roi,
        per_region=per_region and roi,
        margin=float(rng.uniform(*margin_range)),
        shift=(float(rng.uniform(-shift, shift)), float(rng.uniform(-shift, shift))) if roi else (0.0, 0.0),
        window_scale=float(np.exp(rng.uniform(-0.4, 0.4) * r)),
        level_shift=float(rng.uniform(-1.0, 1.0) * r),
        gamma=float(np.exp(rng.uniform(-0.3, 0.3) * r)),
        noise=float(rng.uniform(0.0, 0.04) * r),
        blur=float(rng.uniform(0.0, 1.2) * r) if rng.random() < 0.5 else 0.0,
        downsample=float(rng.uniform(1.0, 1.0 + 1.0 * r)) if rng.random() < 0.4 else 1.0,
        bias=float(rng.uniform(0.0, 0.3) * r) if rng.random() < 0.5 else 0.0,
        colour=float(rng.uniform(0.0, 0.12) * r),
    )


def _as_nchw(planes: np.ndarray):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32))
    return t.permute(0, 3, 1, 2) if t.ndim == 4 else t[:, None]


def _from_nchw(t, like: np.ndarray) -> np.ndarray:
    out = t.permute(0, 2, 3, 1) if like.ndim == 4 else t[:, 0]
    return out.contiguous().numpy()


def _gaussian_blur(planes: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of ``(n, h, w[, 3])`` planes in-plane (reflect padding)."""
    import torch
    from torch.nn import functional as F

    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    t = _as_nchw(planes)
    c = t.shape[1]
    t = F.pad(t, (radius, radius, radius, radius), mode="reflect")
    t = F.conv2d(t, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    t = F.conv2d(t, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return _from_nchw(t, planes)


def _lower_resolution(planes: np.ndarray, factor: float) -> np.ndarray:
    """Down- (area) and up-sample (bilinear) in-plane: the look of a coarser acquisition."""
    from torch.nn import functional as F

    t = _as_nchw(planes)
    h, w = t.shape[-2:]
    small = F.interpolate(t, size=(max(2, round(h / factor)), max(2, round(w / factor))), mode="area")
    return _from_nchw(F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False), planes)


def _bias_field(shape_hw: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth positive field ``exp(strength * n)`` (``n`` a 4×4 normal grid, bilinearly upsampled): the slow
    shading a coil, a lamp or vignetting adds, shared by every slice of the view."""
    import torch
    from torch.nn import functional as F

    coarse = torch.from_numpy(rng.normal(0.0, 1.0, (1, 1, 4, 4)).astype(np.float32))
    smooth = F.interpolate(coarse, size=shape_hw, mode="bilinear", align_corners=True)[0, 0].numpy()
    return np.exp(strength * smooth).astype(np.float32)


def _recolour(planes: np.ndarray, spec: ViewSpec, rng: np.random.Generator) -> np.ndarray:
    """Shading (every image) and per-channel gains (only where the channels differ: a grey scan stays grey)."""
    if spec.bias > 0:
        planes = planes * _bias_field(planes.shape[1:3], spec.bias, rng)[None, :, :, None]
    if spec.colour > 0 and not np.array_equal(planes[..., 0], planes[..., 1]):
        planes = planes * np.exp(rng.normal(0.0, spec.colour, 3)).astype(np.float32)
    return planes


def _region_box(task_masks: list[np.ndarray], view, spec: ViewSpec, rng: np.random.Generator):
    """The crop around one separate structure group (chosen at random; e.g. one of two kidneys), grown and shifted
    as the spec says; None when the tasks are absent."""
    from ..infer.roi import region_crops, union_plane

    crops = region_crops(union_plane(task_masks, view), view, spec.margin)
    if not crops:
        return None
    r0, r1, c0, c1 = crops[int(rng.integers(len(crops)))]
    h, w = view.slice_shape
    dr, dc = int(round(spec.shift[0] * (r1 - r0))), int(round(spec.shift[1] * (c1 - c0)))
    r0, r1 = max(0, r0 + dr), min(h, r1 + dr)
    c0, c1 = max(0, c0 + dc), min(w, c1 + dc)
    return (r0, r1, c0, c1) if r1 - r0 >= 2 and c1 - c0 >= 2 else None


def _intensity(image: Image, preset: str, spec: ViewSpec):
    """The preset's mapping, changed as the spec says (CT window and level, MR/RGB contrast and brightness)."""
    from dataclasses import replace

    from ..data.intensity import get_preset

    mapping = get_preset(preset).fit(image)
    if spec.window_scale == 1.0 and spec.level_shift == 0.0:
        return mapping
    centre, half = (mapping.low + mapping.high) / 2, (mapping.high - mapping.low) / 2 * spec.window_scale
    if mapping.kind == "ct":
        centre += 40.0 * spec.level_shift
    else:
        centre -= 2 * half * 0.1 * spec.level_shift
    return replace(mapping, low=centre - half, high=centre + half)


def _spread(order: list[int], labelled: set[int], count: int) -> list[int]:
    """``count`` slices of ``order``: evenly over the labelled ones, plus one empty margin slice on each side
    when there is room (the negatives), in ``order``'s order."""
    inside = [k for k in order if k in labelled]
    outside_low = [k for k in order[: order.index(inside[0])]]
    outside_high = [k for k in order[order.index(inside[-1]) + 1:]]
    margins = [m for m in ((outside_low[len(outside_low) // 2],) if outside_low else ()) +
               ((outside_high[len(outside_high) // 2],) if outside_high else ())] if count >= 4 else []
    n_inside = max(1, count - len(margins))
    picks = np.unique(np.linspace(0, len(inside) - 1, min(n_inside, len(inside))).round().astype(int))
    chosen = set(margins) | {inside[i] for i in picks}
    return [k for k in order if k in chosen]


def volume_view(name: str, source: str, image: Image, labels: Labels, tasks: list[str], preset: str, size: int,
                spec: ViewSpec, rng: np.random.Generator, axis: str = "axial", margin_slices: int = 3,
                max_slices: int = 0):
    """Slice one labelled volume (or 2D image) into a :class:`~.sources.SliceCase` seen through ``spec``.

    Keeps the slices spanned by the union of the tasks plus ``margin_slices`` (the negatives pool), at most
    ``max_slices`` of them evenly spread (0 = all). Returns None when none of the tasks is present.
    """
    from ..data.resize import SquareFit
    from ..infer.roi import structure_box
    from ..infer.slicing import axis_view
    from .cases import SliceCase

    if labels.shape != image.shape:
        raise InputError(f"{name}: labels grid {labels.shape} differs from image grid {image.shape}")
    try:
        task_masks = [labels.mask(t) for t in tasks]
    except KeyError as error:
        raise InputError(f"{name}: {error.args[0]}") from None
    if axis not in ("axial", "coronal", "sagittal"):
        raise InputError(f"unknown slicing axis {axis!r} (axial, coronal, sagittal)")
    is_volume = image.geometry.ndim != 2 and image.shape[0] > 1
    # The engine's own slicing (axis in patient space, canonical in-plane orientation and slice order): a volume
    # stored with a flipped direction must look at training exactly as it will at inference.
    view = axis_view(image.shape, image.geometry, axis if is_volume else "axial")
    present = np.stack([view.slice_has(m) for m in task_masks], axis=1)
    rows = np.flatnonzero(present.any(1))
    if not len(rows):
        return None
    lo, hi = max(0, rows[0] - margin_slices), min(view.n, rows[-1] + 1 + margin_slices)
    order = list(range(lo, hi))[::-1] if view.reverse_slices else list(range(lo, hi))  # canonical order
    if max_slices and len(order) > max_slices:
        order = _spread(order, set(int(k) for k in rows), max_slices)
    if spec.roi and spec.per_region:
        box = _region_box(task_masks, view, spec, rng)
    else:
        box = structure_box(task_masks, view, spec.margin, spec.shift) if spec.roi else None
    r0, r1, c0, c1 = box if box is not None else (0, view.slice_shape[0], 0, view.slice_shape[1])
    fit = SquareFit((r1 - r0, c1 - c0), view.spacing_hw, size)
    mapping = _intensity(image, preset, spec)
    planes = np.stack([view.get(image.array, k)[r0:r1, c0:c1] for k in order])
    planes = _recolour(mapping.apply(planes), spec, rng)  # (n, h, w, 3), about [0, 1]
    if spec.blur > 0:
        planes = _gaussian_blur(planes, spec.blur)
    if spec.downsample > 1.0 and min(planes.shape[1:3]) > 16:
        planes = _lower_resolution(planes, spec.downsample)
    if spec.gamma != 1.0:
        planes = np.clip(planes, 0, 1) ** spec.gamma
    if spec.noise > 0:
        planes = planes + rng.normal(0.0, spec.noise, planes.shape).astype(np.float32)
    planes = np.clip(planes, 0.0, 1.0).astype(np.float32)
    rgb = np.asarray(fit.to_model(np.ascontiguousarray(planes.transpose(0, 3, 1, 2)), order=1))
    images = np.clip(np.rint(rgb.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)
    stack = np.stack([[view.get(m, k)[r0:r1, c0:c1] for m in task_masks] for k in order]).astype(np.float32)
    masks = (np.asarray(fit.to_model(stack, order="area")) > 0.5).astype(np.uint8)
    slice_index = np.array([view.ordered(k) for k in order], dtype=np.int64)
    return SliceCase(name=name, source=source, images=images, masks=masks, tasks=list(tasks),
                     slice_index=slice_index, is_volume=is_volume)
