"""The unit of training data: one volume (or 2D image) as model-size slices with per-task masks.

Its own module because both the sources (which volumes become cases) and the views (how a volume is seen)
build cases: a shared leaf keeps the two free of an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SliceCase"]


@dataclass(eq=False)  # identity comparison: cases hold big arrays
class SliceCase:
    """One volume (or 2D image) as model-size slices, with per-task masks and relative positions.

    ``images``: ``(n, S, S, 3)`` uint8; ``masks``: ``(n, T, S, S)`` uint8 in {0, 1} for ``tasks``;
    ``slice_index``: the original slice number of each stored slice (slices are consecutive).
    ``u[i, t]``: relative position of slice i within task t's extent (0 = first slice with the structure,
    1 = last; outside [0, 1] beyond it), the quantity cross-case references are matched on.
    """

    name: str
    source: str
    images: np.ndarray
    masks: np.ndarray
    tasks: list[str]
    slice_index: np.ndarray
    is_volume: bool = True
    # (n, C, G, G) float16 frozen-encoder embeddings of ``images`` (a memmap view), set by embedding_store
    embeddings: np.ndarray | None = field(default=None, repr=False)
    present: np.ndarray = field(init=False)
    u: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        n, s = self.images.shape[0], self.images.shape[1]
        if self.images.dtype != np.uint8 or self.images.shape != (n, s, s, 3):
            raise ValueError(f"{self.name}: images must be (n, S, S, 3) uint8, got {self.images.shape} {self.images.dtype}")
        if self.masks.shape != (n, len(self.tasks), s, s):
            raise ValueError(f"{self.name}: masks must be (n, T, S, S) = {(n, len(self.tasks), s, s)}, got {self.masks.shape}")
        self.masks = self.masks.astype(np.uint8, copy=False)
        self.slice_index = np.asarray(self.slice_index, dtype=np.int64)
        self.present = self.masks.reshape(n, len(self.tasks), -1).any(-1)
        self.u = np.full((n, len(self.tasks)), 0.5, dtype=np.float32)
        for t in range(len(self.tasks)):
            rows = np.flatnonzero(self.present[:, t])
            if len(rows) and n > 1:
                z0, z1 = self.slice_index[rows[0]], self.slice_index[rows[-1]]
                self.u[:, t] = (self.slice_index - z0) / max(1, z1 - z0)

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def task_index(self, task: str) -> int:
        return self.tasks.index(task)
