"""Synthetic slice cases for the training tests: a bright square and a grey disc per slice.

Each case has two tasks ("square", "disc") whose structures sit at random, non-overlapping places, so a
model can only tell which one is wanted from the reference mask; slices at both ends lack one or both
structures (the negatives pool). Built directly as SliceCase arrays: no data layer, no files.
"""

from __future__ import annotations

import numpy as np

from KnowledgeSAMLib.train.sources import SliceCase, Source

TASKS = ["square", "disc"]


def synthetic_case(rng: np.random.Generator, name: str, source: str, n: int = 10, size: int = 64,
                   volume: bool = True) -> SliceCase:
    n = n if volume else 1
    yy, xx = np.mgrid[:size, :size]
    images = rng.integers(10, 40, (n, size, size, 3)).astype(np.uint8)
    masks = np.zeros((n, 2, size, size), np.uint8)
    half = size // 2
    # square in one half, disc in the other (random which), random position inside that half
    flip = rng.random() < 0.5
    for z in range(n):
        s_side = rng.integers(size // 8, size // 5)
        sy, sx = rng.integers(s_side, size - s_side), rng.integers(s_side, half - s_side)
        dy, dx = rng.integers(size // 6, size - size // 6), rng.integers(half + size // 8, size - size // 8)
        if flip:
            sx, dx = sx + half, dx - half
        square = (abs(yy - sy) < s_side) & (abs(xx - sx) < s_side)
        disc = (yy - dy) ** 2 + (xx - dx) ** 2 < (size // 9) ** 2
        has_square = not volume or 1 <= z < n - 1
        has_disc = not volume or 2 <= z < n - 2
        if has_square:
            images[z][square] = 200
            masks[z, 0][square] = 1
        if has_disc:
            images[z][disc & ~square] = 120
            masks[z, 1][disc & ~square] = 1
    return SliceCase(name=name, source=source, images=images, masks=masks, tasks=list(TASKS),
                     slice_index=np.arange(n) + 5, is_volume=volume)


def synthetic_sources(seed: int = 0, n_train: int = 4, n_val: int = 2, size: int = 64, n: int = 10,
                      with_2d: bool = False) -> list[Source]:
    rng = np.random.default_rng(seed)
    sources = [Source(name="synth3d", kind="synthetic", weight=1.0, tasks=list(TASKS),
                      train=[synthetic_case(rng, f"s3d_{i}", "synth3d", n, size) for i in range(n_train)],
                      val=[synthetic_case(rng, f"s3d_val_{i}", "synth3d", n, size) for i in range(n_val)])]
    if with_2d:
        sources.append(Source(name="synth2d", kind="synthetic", weight=1.0, tasks=list(TASKS),
                              train=[synthetic_case(rng, f"s2d_{i}", "synth2d", 1, size, False) for i in range(n_train)],
                              val=[synthetic_case(rng, f"s2d_val_{i}", "synth2d", 1, size, False) for i in range(n_val)]))
    return sources
