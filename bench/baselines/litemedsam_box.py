"""LiteMedSAM prompted with boxes: the real pretrained peer of KSAM-lite (no training here).

Two ways a MedSAM user would use it on a held-out target:

* **a truth box on every slice** where the structure is (what a user gets for drawing about two boxes per slice,
  one per structure; generous: the box is the truth's bounding box);
* **one box from the reference** — the bounding box of the reference structure on its middle labelled slice,
  placed at the same model-space position on every target slice whose relative position in the scan lies in the
  reference structure's relative extent (the same information KSAM's knowledge prompt carries, reduced to a box).

Both run on the engine's slice sources (:mod:`.slicewise`), so they see exactly the pixels KSAM sees.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from KnowledgeSAMLib.data.volume import Labels
from KnowledgeSAMLib.infer.reference import SliceSource
from KnowledgeSAMLib.model.box_prompt import BoxPromptedSAM

from .prompts import box_prompt as box_of  # the truth's bounding box, no jitter
from .slicewise import encode_slices, paste

__all__ = ["run_box_per_slice", "run_box_from_reference"]


@torch.no_grad()
def _segment(model: BoxPromptedSAM, src: SliceSource, boxes: dict[int, np.ndarray], device: torch.device,
             batch: int, cache: dict[int, torch.Tensor]) -> dict[int, np.ndarray]:
    ks = sorted(boxes)
    cache.update(encode_slices(model, src, [k for k in ks if k not in cache], device, batch))  # once per slice
    out: dict[int, np.ndarray] = {}
    for start in range(0, len(ks), batch):
        chunk = ks[start:start + batch]
        embeddings = torch.stack([cache[k] for k in chunk])
        logits, _ = model.decode(embeddings, torch.from_numpy(np.stack([boxes[k] for k in chunk])).to(device))
        for k, p in zip(chunk, torch.sigmoid(logits[:, 0].float()).cpu().numpy()):
            out[k] = p
    return out


def run_box_per_slice(model: BoxPromptedSAM, src: SliceSource, truth: dict[str, np.ndarray], device: torch.device,
                      batch: int = 4) -> dict[str, np.ndarray]:
    """Each structure on every slice where its model-size truth (``(n, S, S)``) is present, prompted by the
    truth's bounding box; structure → bool mask on the target grid."""
    model.to(device).eval()
    out, cache = {}, {}
    for name, masks in truth.items():
        boxes = {int(k): box_of(masks[k]) for k in np.flatnonzero(masks.reshape(len(masks), -1).any(1))}
        out[name] = paste(src, _segment(model, src, boxes, device, batch, cache))
    return out


def _relative(view, ks: np.ndarray) -> np.ndarray:
    ordered = np.asarray(view.ordered(np.asarray(ks)), dtype=np.float64)
    return ordered / max(1, view.n - 1)


def run_box_from_reference(model: BoxPromptedSAM, target: SliceSource, reference: SliceSource,
                           reference_labels: Labels, structures: Sequence[str], device: torch.device,
                           batch: int = 4) -> dict[str, np.ndarray]:
    """Each structure prompted by the box of the reference's middle labelled slice, on the target slices whose
    relative scan position falls inside the reference structure's relative extent."""
    model.to(device).eval()
    out, cache = {}, {}
    for name in structures:
        segment = reference_labels.find(name)
        present = np.flatnonzero(reference.view.slice_has(reference_labels.layers[segment.layer] == segment.label_value))
        middle = int(present[len(present) // 2])
        box = box_of(reference.model_mask(reference_labels, segment, middle) > 0.5)
        if box is None:
            raise ValueError(f"the reference's {name} vanishes at the model's size on slice {middle}")
        if target.n > 1 and reference.n > 1:
            extent = _relative(reference.view, present)
            low, high = extent.min(), extent.max()
            u = _relative(target.view, np.arange(target.n))
            ks = [int(k) for k in np.flatnonzero((u >= low) & (u <= high))]
        else:
            ks = list(range(target.n))
        out[name] = paste(target, _segment(model, target, {k: box for k in ks}, device, batch, cache))
    return out
