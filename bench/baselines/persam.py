"""PerSAM-style one-shot segmentation: training-free, on the point-prompted SAM baseline.

Why this method: it is the best-known way to turn a reference image + mask into a prompt *without*
training a fusion module — the comparison KSAM's paper draws (its Table 1 PerSAM row). Following
PerSAM's training-free recipe (MIT, read for the method only):

1. the reference's **mean masked feature**: the reference mask area-averaged to the embedding grid
   weights the reference embedding (over every labelled reference slice of a volume), L2-normalised;
2. **cosine similarity** of that prototype with each target embedding cell, upsampled to model size;
3. the most similar location is a **positive point**, the least similar a **negative point**; the
   point-prompted SAM decodes the mask.

PerSAM's target-guided attention and semantic token need changes inside SAM's decoder and are left
out (named in docs/benchmarks.md). For volumes PerSAM has no way to know which slices hold the
structure, so a slice is segmented only when its best similarity reaches a threshold calibrated on the
*reference* volume alone: halfway between the mean best similarity of its labelled and of its
unlabelled slices (no target information is used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.nn import functional as F

from KnowledgeSAMLib.data.volume import Labels
from KnowledgeSAMLib.infer.reference import SliceSource

from .prompted_sam import PromptedSAM
from .slicewise import encode_slices, paste

__all__ = ["PerSAMConfig", "prototype", "similarity", "point_pair", "gate_threshold", "run_persam"]


@dataclass(frozen=True)
class PerSAMConfig:
    negative_point: bool = True  # PerSAM adds the least similar location as a negative click
    gate_slices: bool = True  # volumes: skip target slices below the reference-calibrated similarity
    batch: int = 8


def prototype(embeddings: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """B×C×G×G embeddings and B×1×S×S masks → the L2-normalised mean masked feature (C,)."""
    grid = embeddings.shape[-1]
    weights = F.adaptive_avg_pool2d(masks.float(), grid)  # area fraction of each embedding cell
    total = weights.sum()
    if float(total) <= 0:
        raise ValueError("the reference mask is empty: no feature to average")
    feature = (embeddings.float() * weights).sum(dim=(0, 2, 3)) / total
    return F.normalize(feature, dim=0)


def similarity(embeddings: torch.Tensor, proto: torch.Tensor, size: int) -> torch.Tensor:
    """Cosine similarity of each embedding cell with ``proto``, upsampled to ``size``: B×size×size."""
    cells = F.normalize(embeddings.float(), dim=1)
    sim = torch.einsum("bchw,c->bhw", cells, proto.to(cells.dtype))
    return F.interpolate(sim[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def point_pair(sim: torch.Tensor, negative: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per map: the most similar pixel (label 1) and, if ``negative``, the least similar (label 0), as
    SAM point prompts ``(B×K×2 (x, y), B×K labels)``."""
    b, _, w = sim.shape
    flat = sim.reshape(b, -1)
    picks = [flat.argmax(1)] + ([flat.argmin(1)] if negative else [])
    coords = torch.stack([torch.stack([idx % w, idx // w], dim=-1) for idx in picks], dim=1).float()
    labels = torch.tensor([1] + ([0] if negative else []), device=sim.device).expand(b, -1)
    return coords, labels


def gate_threshold(best_labelled: np.ndarray, best_unlabelled: np.ndarray) -> float:
    """Halfway between the mean best similarity of labelled and unlabelled reference slices
    (-inf, i.e. no gating, when the reference has no unlabelled slice)."""
    if best_unlabelled.size == 0 or best_labelled.size == 0:
        return -np.inf
    return float((best_labelled.mean() + best_unlabelled.mean()) / 2.0)


@torch.no_grad()
def run_persam(model: PromptedSAM, target: SliceSource, reference: SliceSource, reference_labels: Labels,
               structures: Sequence[str], device: torch.device,
               config: PerSAMConfig = PerSAMConfig()) -> dict[str, np.ndarray]:
    """One-shot segmentation of each structure of ``reference_labels`` on the target; name → bool mask."""
    model.to(device).eval()
    size = model.config.image_size
    target_emb = encode_slices(model, target, range(target.n), device, config.batch)
    ref_emb = encode_slices(model, reference, range(reference.n), device, config.batch)
    out = {}
    for name in structures:
        segment = reference_labels.find(name)
        ref_masks = reference.masks(reference_labels, segment, range(reference.n)).to(device)
        labelled = ref_masks.flatten(1).amax(1) > 0.5
        if not bool(labelled.any()):
            raise ValueError(f"{reference_labels.source or 'reference'}: structure {name!r} is not labelled")
        ref_stack = torch.stack([ref_emb[k] for k in range(reference.n)])
        proto = prototype(ref_stack[labelled], ref_masks[labelled])
        tau = -np.inf
        if config.gate_slices and reference.n > 1:
            best = similarity(ref_stack, proto, size).flatten(1).amax(1).cpu().numpy()
            mask = labelled.cpu().numpy()
            tau = gate_threshold(best[mask], best[~mask])
        probabilities: dict[int, np.ndarray] = {}
        ks = list(range(target.n))
        for start in range(0, len(ks), config.batch):
            chunk = ks[start:start + config.batch]
            emb = torch.stack([target_emb[k] for k in chunk])
            sim = similarity(emb, proto, size)
            keep = (sim.flatten(1).amax(1) >= tau).cpu().numpy()
            if not keep.any():
                continue
            chosen = [k for k, flag in zip(chunk, keep) if flag]
            coords, labels = point_pair(sim[torch.from_numpy(keep).to(device)], config.negative_point)
            logits, _ = model.decode(emb[torch.from_numpy(keep).to(device)], points=(coords, labels))
            probabilities.update(zip(chosen, torch.sigmoid(logits[:, 0].float()).cpu().numpy()))
        out[name] = paste(target, probabilities)
    return out
