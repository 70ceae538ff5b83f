"""What every mode works in: :class:`RunContext` (the model, the device policy, the target's slices and cached
embeddings, the reference bank) and where a mode leaves its per-structure probabilities and confidences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from ..data.volume import Segment
from .cancel import Progress
from .device import DevicePolicy
from .reference import EmbeddingCache, ReferenceBank, SliceSource
from .request import EngineOptions

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """Everything a mode needs, and where it leaves its results."""

    model: object
    policy: DevicePolicy
    options: EngineOptions
    progress: Progress
    target: SliceSource
    targets: EmbeddingCache
    bank: ReferenceBank
    segments: list[Segment]
    slices: list[int]  # target slice indices to segment, ascending
    same_volume: bool
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # name -> uint8 (z, y, x)
    confidence: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n,) float32, NaN = not run
    notes: list[str] = field(default_factory=list)
    heads_run: int = 0
    alignment: object | None = None  # volume mode, aligned prior: the fitted StackAlignment (reference → target)
    absent: dict[str, Sequence[int]] = field(default_factory=dict)  # name -> slices marked "structure absent"

    def __post_init__(self) -> None:
        shape = self.target.image.shape
        for seg in self.segments:
            self.probabilities.setdefault(seg.name, np.zeros(shape, dtype=np.uint8))
            self.confidence.setdefault(seg.name, np.full(self.target.n, np.nan, dtype=np.float32))

    def decode(self, embeddings: torch.Tensor, prompt) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads on a batch → (B×S×S probabilities float32 on CPU, B IoU scores float32 on CPU)."""
        logits, iou = self.model.decode(embeddings, prompt)
        self.heads_run += int(embeddings.shape[0])
        probs = torch.sigmoid(logits.float())[:, 0].cpu()
        return probs, iou.float().reshape(embeddings.shape[0], -1)[:, 0].cpu()

    def store(self, segment: Segment, k: int, square: np.ndarray | torch.Tensor, iou: float) -> None:
        """Write a slice's ``S×S`` probability map onto the target grid (uint8) and its confidence."""
        square = square.numpy() if isinstance(square, torch.Tensor) else square
        plane = self.target.to_slice(square)
        self.target.view.put(self.probabilities[segment.name], k,
                             np.clip(np.rint(plane * 255.0), 0, 255).astype(np.uint8))
        self.confidence[segment.name][k] = float(iou)

    def clear(self, segment: Segment, k: int, iou: float = float("nan")) -> None:
        self.target.view.put(self.probabilities[segment.name], k, np.zeros(self.target.view.slice_shape, np.uint8))
        self.confidence[segment.name][k] = iou

    def decode_pairs(self, segment: Segment, target_slices: Sequence[int], reference_slices: Sequence[int]
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads for (target slice, reference slice) pairs of one structure, batched under the policy."""
        n = len(target_slices)
        probs: list[torch.Tensor | None] = [None] * n
        ious: list[torch.Tensor | None] = [None] * n

        def run(start: int, stop: int) -> None:
            embeddings = self.targets.get(target_slices[start:stop])
            refs = list(reference_slices[start:stop])
            prompt = self.bank.prompts(segment, refs[:1] if len(set(refs)) == 1 else refs)
            p, q = self.decode(embeddings, prompt)
            for i in range(stop - start):
                probs[start + i], ious[start + i] = p[i], q[i]

        self.policy.run_chunks(n, run)
        return torch.stack(probs), torch.stack(ious)  # type: ignore[arg-type]
