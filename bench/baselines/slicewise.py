"""Running a 2D baseline over a volume (or a 2D image) slice by slice, on the engine's slice sources.

Why the engine's :class:`~KnowledgeSAMLib.infer.reference.SliceSource`: every method must see exactly
the pixels KSAM sees (same intensity preset fitted once per volume, same aspect-preserving square fit,
same axis convention) and must put its result back on exactly the target's voxels. The functions here
only decide *which* slices a baseline runs on and with which prompt.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from KnowledgeSAMLib.data.intensity import get_preset
from KnowledgeSAMLib.data.resize import SquareFit
from KnowledgeSAMLib.data.volume import Image, Labels
from KnowledgeSAMLib.infer.reference import SliceSource
from KnowledgeSAMLib.infer.slicing import axis_view

from .prompt_free import PromptFreeSAM
from .prompted_sam import PromptedSAM, SAMBase
from .prompts import PromptConfig, box_prompt, pack_points, point_prompt

__all__ = ["slice_source", "truth_on_model", "encode_slices", "paste", "run_prompted", "run_prompt_free"]


def slice_source(image: Image, preset: str, size: int, axis: str = "axial") -> SliceSource:
    """The engine's view of ``image`` at model size ``size`` (one intensity mapping for the volume)."""
    view = axis_view(image.shape, image.geometry, axis)
    return SliceSource(image, view, get_preset(preset).fit(image), SquareFit(view.slice_shape, view.spacing_hw, size))


def truth_on_model(src: SliceSource, labels: Labels, name: str) -> np.ndarray:
    """``(n, S, S)`` bool: the named structure on every slice at model size (what a user would click on)."""
    segment = labels.find(name)
    return np.stack([src.model_mask(labels, segment, k) > 0.5 for k in range(src.n)])


@torch.no_grad()
def encode_slices(model: SAMBase, src: SliceSource, ks: Iterable[int], device: torch.device,
                  batch: int = 8) -> dict[int, torch.Tensor]:
    """Embeddings of slices ``ks`` (each encoded once), kept on ``device``."""
    ks = list(dict.fromkeys(int(k) for k in ks))
    out: dict[int, torch.Tensor] = {}
    for start in range(0, len(ks), batch):
        chunk = ks[start:start + batch]
        emb = model.encode(src.images(chunk).to(device))
        out.update(zip(chunk, emb))
    return out


def paste(src: SliceSource, probabilities: dict[int, np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """``S×S`` probability maps of some slices → a bool mask on the target grid (other slices empty)."""
    out = np.zeros(src.image.shape, dtype=bool)
    for k, square in probabilities.items():
        src.view.put(out, k, src.to_slice(square) > threshold)
    return out


def _batched(ks: Sequence[int], batch: int):
    for start in range(0, len(ks), batch):
        yield list(ks[start:start + batch])


@torch.no_grad()
def run_prompted(model: PromptedSAM, src: SliceSource, truth: dict[str, np.ndarray], device: torch.device,
                 prompts: PromptConfig = PromptConfig(), rng: np.random.Generator | None = None,
                 batch: int = 8) -> dict[str, np.ndarray]:
    """Point- or box-prompted segmentation of each structure on **every slice where its truth is present**
    (the user clicks there; slices without the structure stay empty — generous to these baselines).

    ``truth``: structure name → ``(n, S, S)`` model-size truth (:func:`truth_on_model`).
    Returns structure name → bool mask on the target grid.
    """
    model.to(device).eval()
    rng = rng if rng is not None else np.random.default_rng(0)
    needed = sorted({int(k) for m in truth.values() for k in np.flatnonzero(m.reshape(len(m), -1).any(1))})
    embeddings = encode_slices(model, src, needed, device, batch)
    jitter = prompts.box_jitter(model.config.image_size)
    out = {}
    for name, masks in truth.items():
        ks = [int(k) for k in np.flatnonzero(masks.reshape(len(masks), -1).any(1))]
        probabilities: dict[int, np.ndarray] = {}
        for chunk in _batched(ks, batch):
            emb = torch.stack([embeddings[k] for k in chunk])
            if model.prompt == "point":
                coords, labels = pack_points([point_prompt(masks[k], prompts.max_points) for k in chunk],
                                             prompts.max_points)
                logits, _ = model.decode(emb, points=(torch.from_numpy(coords).to(device),
                                                      torch.from_numpy(labels).to(device)))
            else:
                boxes = np.stack([box_prompt(masks[k], jitter, rng) for k in chunk])
                logits, _ = model.decode(emb, boxes=torch.from_numpy(boxes).to(device))
            for k, p in zip(chunk, torch.sigmoid(logits[:, 0].float()).cpu().numpy()):
                probabilities[k] = p
        out[name] = paste(src, probabilities)
    return out


@torch.no_grad()
def run_prompt_free(model: PromptFreeSAM, src: SliceSource, structures: Sequence[str], device: torch.device,
                    batch: int = 8) -> dict[str, np.ndarray | None]:
    """Every slice through the fixed head; structure → bool mask on the target grid, or None when the
    structure is not one of the head's outputs (the model cannot be asked for it)."""
    model.to(device).eval()
    known = {name: model.channel(name) for name in structures if name in model.structures}
    probabilities: dict[str, dict[int, np.ndarray]] = {name: {} for name in known}
    for chunk in _batched(list(range(src.n)), batch):
        prob = torch.sigmoid(model(src.images(chunk).to(device)).float()).cpu().numpy()
        for name, c in known.items():
            probabilities[name].update(zip(chunk, prob[:, c]))
    return {name: paste(src, probabilities[name]) if name in known else None for name in structures}

