"""Point and box prompts drawn from a truth mask: what a user clicking on the structure would give.

Why these rules (the benchmark protocol, docs/benchmarks.md):

* **point** — one positive point per connected component (largest components first, at most
  ``max_points``), each at the interior pixel farthest from the component's boundary: the most
  unambiguous click a user could make. Training and testing use the same rule.
* **box** — the bounding box of the whole mask on the slice, each side moved independently by up to
  ``box_jitter_512`` pixels at 512-pixel-equivalent (scaled to the model size), as MedSAM's 20-pixel
  box perturbation.

Coordinates are ``(x, y)`` in model pixels, as SAM's prompt encoder expects. Components and distances
come from SimpleITK (no SciPy dependency).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

__all__ = ["PromptConfig", "point_prompt", "box_prompt", "pack_points"]


@dataclass(frozen=True)
class PromptConfig:
    """How prompts are drawn from a truth mask (shared by training and evaluation)."""

    max_points: int = 4  # positive points per slice: one per component, largest components first
    box_jitter_512: float = 20.0  # largest shift of each box side, in pixels at 512-px-equivalent

    def box_jitter(self, size: int) -> float:
        """The jitter in model pixels for a ``size``-pixel model (5 px at 128, 20 px at 512)."""
        return self.box_jitter_512 * size / 512.0


def point_prompt(mask: np.ndarray, max_points: int = PromptConfig.max_points) -> np.ndarray:
    """``(K, 2)`` float ``(x, y)`` points: the deepest interior pixel of each of the ``K <= max_points``
    largest 4-connected components of a 2D mask. An empty mask gives ``(0, 2)``."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"point_prompt needs a 2D mask, got shape {mask.shape}")
    if not mask.any():
        return np.zeros((0, 2), dtype=np.float32)
    padded = np.pad(mask, 1).astype(np.uint8)  # the grid edge counts as boundary
    image = sitk.GetImageFromArray(padded)
    components = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(image)))  # 1 = largest
    depth = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=True, squaredDistance=False, useImageSpacing=False))
    yy, xx = np.indices(padded.shape)
    points = []
    for label in range(1, min(int(components.max()), max_points) + 1):
        member = components == label
        # deepest pixel; among (near-)ties, the one closest to the component's centroid
        offcentre = np.hypot(yy - yy[member].mean(), xx - xx[member].mean())
        inside = np.where(member, depth - 1e-3 * offcentre, -np.inf)
        y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
        points.append((x - 1, y - 1))  # undo the padding
    return np.asarray(points, dtype=np.float32)


def box_prompt(mask: np.ndarray, jitter: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray | None:
    """``(4,)`` float ``(x0, y0, x1, y1)``: the mask's bounding box, each side shifted by up to ``jitter``
    pixels (uniformly, independently) and kept inside the image; None for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    box = np.array([cols.min(), rows.min(), cols.max(), rows.max()], dtype=np.float64)
    if jitter > 0:
        rng = rng if rng is not None else np.random.default_rng()
        box = box + rng.uniform(-jitter, jitter, 4)
    h, w = mask.shape
    box = np.clip(box, 0, [w - 1, h - 1, w - 1, h - 1])
    x0, x1 = sorted((box[0], box[2]))
    y0, y1 = sorted((box[1], box[3]))
    return np.array([x0, y0, x1, y1], dtype=np.float32)


def pack_points(points: list[np.ndarray], max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch of variable-length point lists → ``(B, K, 2)`` coordinates and ``(B, K)`` labels
    (1 = positive, -1 = padding, SAM's "not a point"), K = the longest list (at least 1)."""
    k = max(1, min(max_points, max((len(p) for p in points), default=1)))
    coords = np.zeros((len(points), k, 2), dtype=np.float32)
    labels = np.full((len(points), k), -1, dtype=np.int64)
    for i, p in enumerate(points):
        p = np.asarray(p, dtype=np.float32).reshape(-1, 2)[:k]
        coords[i, : len(p)] = p
        labels[i, : len(p)] = 1
    return coords, labels
