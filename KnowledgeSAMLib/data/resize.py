"""Fit a 2D slice into the model's square input, keeping its physical aspect, and map results back.

Why: the model sees ``size × size`` pixels, but slices are rarely square and pixels are often not
(a sagittal CT slice may have 0.8 × 5 mm pixels). Stretching would change the shape of anatomy
between a reference and a target with different grids, so we resample to square pixels such that
the longer *physical* side fills ``size`` and pad the other side symmetrically. ``to_original`` is the
exact inverse grid map: it crops the padding and resamples back onto the original pixel grid.

Pixel-centre convention (as ``torch.nn.functional.interpolate(..., align_corners=False)``): original
pixel ``r`` covers ``[r, r + 1)``; its centre ``r + 0.5`` lands at ``pad + (r + 0.5) * inner / n``
in model pixels (see :meth:`SquareFit.to_model_coords`).

Interpolation ``order``:

* ``1`` — linear, for images (grey or RGB) and for probability/logit maps; anti-aliased when shrinking.
* ``0`` — nearest (pixel-centre exact), for integer label maps whose values must survive.
* ``"area"`` — for binary reference masks: when shrinking, each model pixel gets the *fraction* of its
  area covered by the mask (box averaging); when enlarging, linear. The result is a soft mask in
  ``[0, 1]``; we keep it soft (the model's mask path area-averages anyway), and threshold at 0.5 only
  where a hard mask is needed. Nearest-neighbour shrinking would drop thin structures (a 3-pixel
  artery at 512 → 64) or keep them at random.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["SquareFit", "Order"]

Order = int | str  # 0, 1 or "area"


@dataclass(frozen=True)
class SquareFit:
    """Maps an ``(h, w)`` slice with pixel spacing ``(sy, sx)`` mm to ``size × size`` and back."""

    shape_hw: tuple[int, int]
    spacing_hw: tuple[float, float] = (1.0, 1.0)
    size: int = 512
    inner_hw: tuple[int, int] = field(init=False)  # size of the resampled content before padding
    pad_hw: tuple[int, int] = field(init=False)  # padding before the content (top, left)

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.shape_hw)
        sy, sx = (float(v) for v in self.spacing_hw)
        if h < 1 or w < 1 or self.size < 1 or sy <= 0 or sx <= 0:
            raise ValueError(f"SquareFit needs positive shape, spacing and size; got {self.shape_hw}, "
                             f"{self.spacing_hw}, {self.size}")
        extent_y, extent_x = h * sy, w * sx
        pixel = max(extent_y, extent_x) / self.size  # mm per model pixel (square)
        inner = (min(self.size, max(1, round(extent_y / pixel))), min(self.size, max(1, round(extent_x / pixel))))
        object.__setattr__(self, "shape_hw", (h, w))
        object.__setattr__(self, "spacing_hw", (sy, sx))
        object.__setattr__(self, "inner_hw", inner)
        object.__setattr__(self, "pad_hw", ((self.size - inner[0]) // 2, (self.size - inner[1]) // 2))

    # ----------------------------------------------------------------------------- coordinates

    def to_model_coords(self, rows_cols: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous ``(row, col)`` original pixel coordinates -> model pixel coordinates (``(..., 2)``)."""
        rc = np.asarray(rows_cols, dtype=float)
        scale = np.array(self.inner_hw) / np.array(self.shape_hw)
        return np.array(self.pad_hw) + (rc + 0.5) * scale - 0.5

    def to_original_coords(self, rows_cols: Sequence[float] | np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_model_coords`."""
        rc = np.asarray(rows_cols, dtype=float)
        scale = np.array(self.shape_hw) / np.array(self.inner_hw)
        return (rc - np.array(self.pad_hw) + 0.5) * scale - 0.5

    # ------------------------------------------------------------------------------- resampling

    def to_model(self, array: Any, order: Order = 1, pad_value: float = 0.0) -> Any:
        """Resample a slice ``(h, w)``, ``(h, w, C)`` or a stack ``(..., h, w)`` (numpy or torch) to
        ``size × size`` in the same layout. numpy in -> numpy out (float32, or the input's integer type
        for ``order=0``); torch in -> torch out."""
        tensor, restore = _as_nchw(array, self.shape_hw)
        inner = _resample(tensor, self.inner_hw, order)
        top, left = self.pad_hw
        bottom = self.size - self.inner_hw[0] - top
        right = self.size - self.inner_hw[1] - left
        import torch.nn.functional as F

        out = F.pad(inner, (left, right, top, bottom), value=float(pad_value))
        return restore(out, order)

    def to_original(self, array: Any, order: Order = 1) -> Any:
        """Crop the padding of a ``size × size`` map (same layouts as :meth:`to_model`) and resample it
        onto the original ``(h, w)`` pixel grid."""
        tensor, restore = _as_nchw(array, (self.size, self.size))
        top, left = self.pad_hw
        inner = tensor[..., top:top + self.inner_hw[0], left:left + self.inner_hw[1]]
        return restore(_resample(inner, self.shape_hw, order), order)


def _as_nchw(array: Any, shape_hw: tuple[int, int]):
    """View ``array`` as an (N, C, h, w) float tensor and return a function restoring the layout."""
    import torch

    is_torch = isinstance(array, torch.Tensor)
    tensor = array if is_torch else torch.from_numpy(np.ascontiguousarray(array))
    dtype = tensor.dtype
    shape = tuple(tensor.shape)
    hw = tuple(shape_hw)
    # (h, w, C) is channels-last only when C is a colour axis (<= 4); a stack of n square slices with
    # n == h == w, e.g. (64, 64, 64), is a stack.
    channels_last = tensor.ndim == 3 and shape[:2] == hw and (shape[-1] <= 4 or shape[-2:] != hw)
    if shape == hw:
        layout = "hw"
        nchw = tensor[None, None]
    elif channels_last:
        layout = "hwc"
        nchw = tensor.permute(2, 0, 1)[None]
    elif tensor.ndim >= 3 and shape[-2:] == hw:
        layout = "lead"
        nchw = tensor.reshape((-1, 1) + tuple(shape_hw))
    else:
        raise ValueError(f"expected an array of shape {shape_hw}, {shape_hw + (3,)} or (..., *{shape_hw}); "
                         f"got {shape}")
    lead = shape[:-2]
    nchw = nchw.float()

    def restore(out, order: Order):
        h, w = out.shape[-2:]
        if layout == "hw":
            result = out[0, 0]
        elif layout == "hwc":
            result = out[0].permute(1, 2, 0)
        else:
            result = out.reshape(lead + (h, w))
        if order == 0 and not dtype.is_floating_point:
            result = result.round().to(dtype)
        if is_torch:
            if dtype.is_floating_point and dtype != result.dtype:
                result = result.to(dtype)
            return result.contiguous()
        return result.contiguous().numpy()

    return nchw, restore


def _resample(tensor, out_hw: tuple[int, int], order: Order):
    """Resample an (N, C, h, w) float tensor to ``out_hw`` with the pixel-centre convention."""
    import torch.nn.functional as F

    in_hw = tuple(tensor.shape[-2:])
    if in_hw == tuple(out_hw):
        return tensor
    if order == 0:
        return F.interpolate(tensor, size=out_hw, mode="nearest-exact")
    if order == 1:
        shrinking = out_hw[0] < in_hw[0] or out_hw[1] < in_hw[1]
        return F.interpolate(tensor, size=out_hw, mode="bilinear", align_corners=False, antialias=shrinking)
    if order == "area":  # separable: box average along shrinking axes, linear along enlarging ones
        for axis in (0, 1):
            target = list(tensor.shape[-2:])
            if target[axis] == out_hw[axis]:
                continue
            target[axis] = out_hw[axis]
            if out_hw[axis] < in_hw[axis]:
                tensor = F.interpolate(tensor, size=tuple(target), mode="area")
            else:
                tensor = F.interpolate(tensor, size=tuple(target), mode="bilinear", align_corners=False)
        return tensor
    raise ValueError(f"order must be 0, 1 or 'area', got {order!r}")
