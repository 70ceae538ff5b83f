"""The fixed-task 2D U-Net of ``bench/unet_baseline.py`` on the benchmark's model-size slices.

Why an adapter: the U-Net baseline trains on whole grey volumes with one integer label map; the
benchmark gives every method the *same* training slices (the KSAM trainer's :class:`SliceCase`
arrays, already intensity-mapped and square-fitted) and must put predictions back on the target grid
through the engine's slice source. This module converts in both directions and lets the U-Net's own
``train_unet`` / ``predict_volume`` do the work.

Structures may nest (fundus disc ⊃ cup) or not (kidney, hippocampus), so the label map has one class per
*combination* of structures seen in training (:class:`ClassCoding`); a structure's mask is the union of
the classes that contain it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch

from KnowledgeSAMLib.infer.reference import SliceSource
from KnowledgeSAMLib.train.sources import SliceCase

from bench.unet_baseline import UNet2D, UNetConfig, predict_volume, train_unet

from .slicewise import paste

__all__ = ["ClassCoding", "train_unet_on_cases", "run_unet"]


@dataclass(frozen=True)
class ClassCoding:
    """Class ``c >= 1`` of the label map = the structures in ``patterns[c - 1]`` (a tuple of flags per task)."""

    tasks: tuple[str, ...]
    patterns: tuple[tuple[bool, ...], ...]

    @classmethod
    def from_cases(cls, cases: Sequence[SliceCase], tasks: Sequence[str]) -> "ClassCoding":
        found: set[tuple[bool, ...]] = set()
        for case in cases:
            idx = [case.task_index(t) for t in tasks]
            flags = case.masks[:, idx].astype(bool).transpose(0, 2, 3, 1).reshape(-1, len(idx))
            found.update(map(tuple, np.unique(flags[flags.any(1)], axis=0).tolist()))
        return cls(tuple(tasks), tuple(sorted(found, key=lambda p: (sum(p), p))))

    @property
    def classes(self) -> int:
        return len(self.patterns) + 1

    def encode(self, masks: np.ndarray) -> np.ndarray:
        """``(n, T, h, w)`` masks in ``tasks`` order → ``(n, h, w)`` uint8 class map (unseen combos → 0)."""
        flags = masks.astype(bool)
        out = np.zeros((flags.shape[0],) + flags.shape[2:], dtype=np.uint8)
        for c, pattern in enumerate(self.patterns, start=1):
            match = np.ones(out.shape, dtype=bool)
            for t, flag in enumerate(pattern):
                match &= flags[:, t] == flag
            out[match] = c
        return out

    def decode(self, labelmap: np.ndarray, task: str) -> np.ndarray:
        t = self.tasks.index(task)
        classes = [c for c, p in enumerate(self.patterns, start=1) if p[t]]
        return np.isin(labelmap, classes)


def _grey(images_uint8: np.ndarray) -> np.ndarray:
    """``(n, S, S, 3)`` uint8 model-size slices → ``(n, S, S)`` float grey in [0, 1]."""
    return images_uint8.astype(np.float32).mean(axis=-1) / 255.0


def train_unet_on_cases(cases: Sequence[SliceCase], tasks: Sequence[str], size: int, steps: int, batch_size: int,
                        seed: int, base: UNetConfig = UNetConfig()) -> tuple[UNet2D, UNetConfig, ClassCoding, dict]:
    """Train the U-Net on the slices of ``cases`` for exactly ``steps`` steps (no time cap)."""
    coding = ClassCoding.from_cases(cases, tasks)
    config = replace(base, tile=size, classes=coding.classes, batch_size=batch_size, max_steps=steps,
                     minutes=math.inf, seed=seed, axis="z", context=0)
    volumes = [(_grey(c.images), coding.encode(c.masks[:, [c.task_index(t) for t in tasks]])) for c in cases]
    model, stats = train_unet(volumes, config)
    return model, config, coding, stats


@torch.no_grad()
def run_unet(model: UNet2D, config: UNetConfig, coding: ClassCoding, src: SliceSource,
             structures: Sequence[str]) -> dict[str, np.ndarray]:
    """Every slice of the target through the U-Net; structure → bool mask on the target grid."""
    model.eval()
    images = src.images(range(src.n)).numpy()  # (n, 3, S, S) in [0, 1]
    labelmap = predict_volume(model, images.mean(axis=1), config)
    return {name: paste(src, dict(enumerate(coding.decode(labelmap, name).astype(np.float32))))
            for name in structures}
