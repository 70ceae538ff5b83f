"""Intensity presets: how raw voxel values become the ``[0, 1]`` RGB slices the model sees.

Why explicit presets: the reference and the target must go through *the same* mapping, chosen once
per volume (not per slice: per-slice min–max makes the same tissue look different on every slice,
a known flaw of earlier SAM extensions). A preset is fitted to a volume (:meth:`IntensityPreset.fit`),
giving an :class:`IntensityMapping` = a linear map ``[low, high] -> [0, 1]`` plus clipping. Both are
plain dataclasses with ``to_dict``/``from_dict`` so they can be stored in a model config or in the
provenance of a result.

Kinds:

* ``ct``: a window ``W/L`` in Hounsfield units (``low = L - W/2``, ``high = L + W/2``);
* ``mr``: the ``[low_percentile, high_percentile]`` range of the volume's intensities, computed once
  on a deterministic subsample (about a million voxels), so a 512×512×300 volume costs milliseconds;
* ``rgb``: divide by 255 (or by the maximum for 16-bit colour);
* ``auto``: RGB if the image is colour, CT if it looks like Hounsfield units (minimum below -500),
  otherwise MR.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from ..errors import InputError
from .volume import Image

__all__ = ["IntensityPreset", "IntensityMapping", "get_preset", "PRESETS", "DEFAULT_CT_PRESET"]

KINDS = ("ct", "mr", "rgb", "auto")
DEFAULT_CT_PRESET = "ct-abdomen"
HU_MINIMUM_THRESHOLD = -500.0  # "auto": a minimum below this means the image is CT in Hounsfield units
MR_SAMPLE_SIZE = 1 << 20  # voxels used for the percentiles of large volumes


@dataclass(frozen=True)
class IntensityMapping:
    """A fitted linear map ``[low, high] -> [0, 1]`` (clipped), the same for every slice it is applied to.

    ``rgb_input`` says whether slices carry a trailing colour axis (then each channel is mapped);
    grey slices are replicated to three channels.
    """

    kind: str
    low: float
    high: float
    rgb_input: bool = False
    preset: str = ""

    def __post_init__(self) -> None:
        if not np.isfinite([self.low, self.high]).all() or self.high <= self.low:
            raise ValueError(f"intensity mapping needs finite low < high, got [{self.low}, {self.high}]")

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Map a slice ``(y, x)`` / ``(y, x, 3)`` (or a stack ``(..., y, x[, 3])``) to float32
        ``(..., y, x, 3)`` in ``[0, 1]``."""
        array = np.asarray(array)
        if self.rgb_input and array.shape[-1] != 3:
            raise ValueError(f"this mapping was fitted on an RGB image; got an array of shape {array.shape}")
        scale = np.float32(1.0 / (self.high - self.low))
        out = (array.astype(np.float32, copy=False) - np.float32(self.low)) * scale
        np.clip(out, 0.0, 1.0, out=out)
        if not self.rgb_input:
            out = np.repeat(out[..., None], 3, axis=-1)
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IntensityMapping":
        return cls(kind=str(data["kind"]), low=float(data["low"]), high=float(data["high"]),
                   rgb_input=bool(data.get("rgb_input", False)), preset=str(data.get("preset", "")))


@dataclass(frozen=True)
class IntensityPreset:
    """How to choose the mapping for a volume. ``window``/``level`` are used by ``ct`` (and by ``auto``
    when the image turns out to be CT), the percentiles by ``mr`` (and ``auto`` for non-CT grey)."""

    kind: str = "ct"
    window: float = 400.0
    level: float = 40.0
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"intensity preset kind must be one of {KINDS}, got {self.kind!r}")
        if self.window <= 0:
            raise ValueError(f"CT window width must be positive, got {self.window}")
        if not 0.0 <= self.low_percentile < self.high_percentile <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got "
                             f"{self.low_percentile}, {self.high_percentile}")

    def fit(self, image: Image | np.ndarray) -> IntensityMapping:
        """Compute the mapping for one volume (statistics once per volume, never per slice)."""
        array = image.array if isinstance(image, Image) else np.asarray(image)
        if isinstance(image, Image):
            rgb = image.is_rgb
        else:  # a bare array: (z, y, x, 3) is colour; (y, x, 3) only when the preset says colour
            rgb = array.shape[-1] == 3 and (array.ndim == 4 or (array.ndim == 3 and self.kind in ("rgb", "auto")))
        label = self.name or self.kind
        if array.size == 0:
            raise InputError(f"{_source(image)}: the image is empty")
        kind = self.kind
        if kind == "auto":
            kind = "rgb" if rgb else ("ct" if float(np.min(array)) < HU_MINIMUM_THRESHOLD else "mr")
        if kind == "rgb":
            top = float(np.max(array))
            return IntensityMapping("rgb", 0.0, 255.0 if top <= 255 else top, rgb_input=rgb, preset=label)
        if kind == "ct":
            half = self.window / 2.0
            return IntensityMapping("ct", self.level - half, self.level + half, rgb_input=rgb, preset=label)
        low, high = _percentiles(array, self.low_percentile, self.high_percentile)
        if high <= low:  # a constant image: any range that keeps it finite
            high = low + 1.0
        return IntensityMapping("mr", low, high, rgb_input=rgb, preset=label)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "IntensityPreset":
        known = {k: data[k] for k in ("kind", "window", "level", "low_percentile", "high_percentile", "name")
                 if k in data}
        return cls(**known)


def _source(image: Image | np.ndarray) -> str:
    return (image.source if isinstance(image, Image) else "") or "image"


def _percentiles(array: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Percentiles on a fixed, seeded subsample of at most ``MR_SAMPLE_SIZE`` voxels (deterministic)."""
    flat = array.reshape(-1)
    if flat.size > MR_SAMPLE_SIZE:
        index = np.random.default_rng(0).integers(0, flat.size, MR_SAMPLE_SIZE)
        flat = flat[index]
    flat = flat.astype(np.float64, copy=False)
    flat = flat[np.isfinite(flat)]
    if flat.size == 0:
        raise InputError("image has no finite intensities")
    lo, hi = np.percentile(flat, [low, high])
    return float(lo), float(hi)


PRESETS: dict[str, IntensityPreset] = {
    "ct-abdomen": IntensityPreset("ct", window=400, level=40, name="ct-abdomen"),
    "ct-soft": IntensityPreset("ct", window=350, level=50, name="ct-soft"),
    "ct-liver": IntensityPreset("ct", window=150, level=30, name="ct-liver"),
    "ct-angio": IntensityPreset("ct", window=600, level=170, name="ct-angio"),
    "ct-bone": IntensityPreset("ct", window=1800, level=400, name="ct-bone"),
    "ct-lung": IntensityPreset("ct", window=1500, level=-600, name="ct-lung"),
    "ct-brain": IntensityPreset("ct", window=80, level=40, name="ct-brain"),
    "mr": IntensityPreset("mr", low_percentile=0.5, high_percentile=99.5, name="mr"),
    "rgb": IntensityPreset("rgb", name="rgb"),
    "auto": IntensityPreset("auto", window=400, level=40, low_percentile=0.5, high_percentile=99.5, name="auto"),
}
PRESETS["ct"] = PRESETS[DEFAULT_CT_PRESET]


def get_preset(name: str | IntensityPreset | Mapping[str, Any]) -> IntensityPreset:
    """A preset by name (``ct-abdomen``, ``ct-bone``, ``mr``, ``rgb``, ``auto``, ...), or a custom one
    written ``ct:W/L`` (e.g. ``ct:400/40``) or ``mr:LOW/HIGH`` percentiles (e.g. ``mr:1/99``).
    Presets and their ``to_dict`` form pass through."""
    if isinstance(name, IntensityPreset):
        return name
    if isinstance(name, Mapping):
        return IntensityPreset.from_dict(name)
    key = str(name).strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    kind, _, values = key.partition(":")
    try:
        first, second = (float(v) for v in values.split("/"))
        if kind == "ct":
            return IntensityPreset("ct", window=first, level=second, name=key)
        if kind == "mr":
            return IntensityPreset("mr", low_percentile=first, high_percentile=second, name=key)
    except ValueError:
        pass
    raise InputError(f"unknown intensity preset {name!r} (use one of {', '.join(sorted(PRESETS))}, "
                     "'ct:W/L' or 'mr:LOW/HIGH')")
