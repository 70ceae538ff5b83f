"""A PNG montage for eyeballing a segmentation against its ground truth.

Why: a Dice of 0.8 can hide a structure that leaked into the neighbour, or a slice offset; one picture
of evenly spaced slices shows it at once. Truth outlines are drawn in cool colours, prediction outlines
in warm ones (one pair per structure, listed in a legend), over the image when one is given. Slices are
shown with square millimetres (anisotropic spacing is respected) and, for axis-aligned directions,
flipped so that patient left (+x in LPS) is on the right and anterior at the top, like Slicer's axial
view. Only PIL is used (matplotlib is not a dependency).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from ..data.volume import Geometry
from .metrics import surface

__all__ = ["OverlayStyle", "montage_slices", "render_overlay", "save_overlay"]

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class OverlayStyle:
    """Layout and colours of the montage."""

    tile_px: int = 256  # longest side of one slice tile, after correcting for spacing
    max_tiles: int = 12
    columns: int = 4
    line_px: int = 2  # outline thickness in display pixels
    gap_px: int = 4
    intensity_percentiles: tuple[float, float] = (1.0, 99.0)
    truth_colours: tuple[RGB, ...] = ((0, 230, 0), (0, 200, 255), (200, 255, 0), (0, 120, 255), (150, 255, 200))
    prediction_colours: tuple[RGB, ...] = ((255, 40, 40), (255, 0, 255), (255, 150, 0), (255, 110, 180),
                                           (180, 60, 0))


def montage_slices(truth_masks: Sequence[np.ndarray], n: int) -> list[int]:
    """Up to ``n`` evenly spaced z indices through the truth's extent (the whole volume if it is empty)."""
    depth = truth_masks[0].shape[0] if truth_masks else 1
    union = np.zeros(truth_masks[0].shape, bool) if truth_masks else np.zeros((depth, 1, 1), bool)
    for mask in truth_masks:
        union |= mask
    occupied = np.flatnonzero(union.reshape(depth, -1).any(axis=1))
    first, last = (int(occupied[0]), int(occupied[-1])) if occupied.size else (0, depth - 1)
    count = min(max(n, 1), last - first + 1)
    return sorted({int(round(v)) for v in np.linspace(first, last, count)})


def _intensity_to_uint8(image: np.ndarray | None, shape: tuple[int, int, int],
                        percentiles: tuple[float, float]) -> np.ndarray:
    """(z, y, x, 3) uint8 display volume; one window for the whole volume so slices compare."""
    if image is None:
        return np.zeros(shape + (3,), np.uint8)
    data = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(data, percentiles)
    scaled = np.clip((data - low) / max(float(high - low), 1e-6), 0.0, 1.0)
    rgb = (scaled * 255).astype(np.uint8)
    if rgb.ndim == 3:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    return rgb


def _display_flips(geometry: Geometry) -> tuple[bool, bool]:
    """Flip x / y for display when an axis-aligned direction points the negative way."""
    matrix = geometry.direction_matrix
    return bool(matrix[0, 0] < -0.5), bool(matrix[1, 1] < -0.5)


def _thicken(edge: np.ndarray, pixels: int) -> np.ndarray:
    out = edge.copy()
    for _ in range(max(pixels - 1, 0)):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _tile(rgb: np.ndarray, truth: Sequence[np.ndarray], prediction: Sequence[np.ndarray], size: tuple[int, int],
          flips: tuple[bool, bool], style: OverlayStyle) -> PILImage.Image:
    """One slice: image resized to ``size`` (w, h), truth then prediction outlines on top."""
    def orient(array: np.ndarray) -> np.ndarray:
        if flips[0]:
            array = array[:, ::-1]
        if flips[1]:
            array = array[::-1]
        return np.ascontiguousarray(array)

    canvas = np.asarray(PILImage.fromarray(orient(rgb)).resize(size, PILImage.BILINEAR)).copy()
    for masks, colours in ((truth, style.truth_colours), (prediction, style.prediction_colours)):
        for index, mask in enumerate(masks):
            big = PILImage.fromarray(orient(mask.astype(np.uint8) * 255)).resize(size, PILImage.NEAREST)
            edge = _thicken(surface(np.asarray(big) > 0), style.line_px)
            canvas[edge] = colours[index % len(colours)]
    return PILImage.fromarray(canvas)


def render_overlay(truth: Sequence[tuple[str, np.ndarray]], prediction: Sequence[tuple[str, np.ndarray]],
                   geometry: Geometry, image: np.ndarray | None = None,
                   style: OverlayStyle = OverlayStyle()) -> PILImage.Image:
    """Montage of evenly spaced axial slices with truth and prediction outlines.

    ``truth``/``prediction``: ``(name, (z, y, x) bool mask)`` per structure, in the same order and on
    the same grid; ``image``: ``(z, y, x)`` or ``(z, y, x, 3)`` on that grid, or None (black background).
    """
    if not truth:
        raise ValueError("render_overlay needs at least one structure")
    shape = tuple(int(s) for s in truth[0][1].shape)
    for _, mask in list(truth) + list(prediction):
        if mask.shape != shape:
            raise ValueError(f"all masks must share the grid {shape}; got {mask.shape}")
    if image is not None and tuple(image.shape[:3]) != shape:
        raise ValueError(f"image grid {tuple(image.shape[:3])} differs from the masks' grid {shape}")

    slices = montage_slices([m for _, m in truth], style.max_tiles)
    display = _intensity_to_uint8(image, shape, style.intensity_percentiles)
    sx, sy = geometry.spacing[0], geometry.spacing[1]
    width_mm, height_mm = shape[2] * sx, shape[1] * sy
    scale = style.tile_px / max(width_mm, height_mm)
    size = (max(int(round(width_mm * scale)), 1), max(int(round(height_mm * scale)), 1))
    flips = _display_flips(geometry)

    font = ImageFont.load_default()
    caption_px = 14
    columns = min(style.columns, len(slices))
    rows = -(-len(slices) // columns)
    legend_px = 16 * len(truth) + 8
    sheet_w = columns * (size[0] + style.gap_px) + style.gap_px
    sheet_h = rows * (size[1] + caption_px + style.gap_px) + style.gap_px + legend_px
    sheet = PILImage.new("RGB", (sheet_w, sheet_h), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for position, z in enumerate(slices):
        row, column = divmod(position, columns)
        left = style.gap_px + column * (size[0] + style.gap_px)
        top = style.gap_px + row * (size[1] + caption_px + style.gap_px)
        tile = _tile(display[z], [m[z] for _, m in truth], [m[z] for _, m in prediction], size, flips, style)
        sheet.paste(tile, (left, top + caption_px))
        label = f"slice {z}" if geometry.ndim == 3 and shape[0] > 1 else "2D"
        draw.text((left, top), label, fill=(230, 230, 230), font=font)

    top = sheet_h - legend_px + 4
    for index, (name, _) in enumerate(truth):
        y = top + 16 * index
        truth_colour = style.truth_colours[index % len(style.truth_colours)]
        pred_colour = style.prediction_colours[index % len(style.prediction_colours)]
        draw.rectangle((style.gap_px, y + 2, style.gap_px + 10, y + 12), fill=truth_colour)
        draw.text((style.gap_px + 14, y), f"truth {name}", fill=(230, 230, 230), font=font)
        offset = style.gap_px + 14 + 8 * (len(name) + 7)
        draw.rectangle((offset, y + 2, offset + 10, y + 12), fill=pred_colour)
        draw.text((offset + 14, y), f"prediction {name}", fill=(230, 230, 230), font=font)
    return sheet


def save_overlay(picture: PILImage.Image, path: str | Path, overwrite: bool = False) -> Path:
    """Write the montage as PNG atomically; an existing file is kept unless ``overwrite``."""
    from ..data.io import atomic_write

    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as temporary:
        picture.save(temporary, format="PNG")
    return path
