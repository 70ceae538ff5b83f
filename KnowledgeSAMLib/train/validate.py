"""Validation Dice per structure on held-out cases (run at every epoch end, and by bench/table2.py).

For every validation case and task, a fixed set of target slices (including the empty margin slices) is
segmented with a reference slice from a *training* case at the nearest relative position; intersections
and areas are summed over the case's slices, giving one Dice per (case, structure), then averaged per
structure. The item list is deterministic, so under DDP each rank takes ``items[rank::world]`` and the
sums are all-reduced: the result does not depend on the number of processes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .distributed import DistContext, all_reduce_sum, shard
from .pairs import stack_embeddings, validation_pairs
from .sources import Source

__all__ = ["validation_dice", "dice_from_sums"]


def dice_from_sums(sums: dict[tuple[str, str], np.ndarray]) -> dict[str, float]:
    """``{(label, case): [inter, pred, gt]}`` → mean Dice per label plus ``mean`` (over labels).

    A case whose prediction and ground truth are both empty on the listed slices counts as Dice 1.
    """
    per_label: dict[str, list[float]] = {}
    for (label, _case), (inter, pred, gt) in sorted(sums.items()):
        per_label.setdefault(label, []).append(1.0 if pred + gt == 0 else 2.0 * inter / (pred + gt))
    out = {label: float(np.mean(values)) for label, values in per_label.items()}
    if out:
        out["mean"] = float(np.mean(list(out.values())))
    return out


@torch.no_grad()
def validation_dice(model: torch.nn.Module, sources: list[Source], device: torch.device,
                    max_slices_per_case: int = 8, batch_size: int = 8, threshold: float = 0.5,
                    ctx: DistContext | None = None, autocast_dtype: torch.dtype | None = None,
                    cancel: Callable[[], None] | None = None) -> dict[str, float]:
    """Mean Dice per ``source/task`` label (and ``mean``) on the sources' validation cases."""
    ctx = ctx or DistContext(device=device)
    items = validation_pairs(sources, max_slices_per_case)
    if not items:
        return {}
    keys = sorted({(f"{src}/{task}", case.name) for src, task, case, *_ in items})
    index = {k: i for i, k in enumerate(keys)}
    sums = torch.zeros(len(keys), 3, dtype=torch.float64)
    logit_threshold = float(np.log(threshold / (1.0 - threshold)))
    was_training = model.training
    model.eval()
    try:
        mine = shard(items, ctx)
        for start in range(0, len(mine), batch_size):
            if cancel is not None:
                cancel()
            chunk = mine[start:start + batch_size]
            target = np.stack([case.images[row] for _, _, case, row, _, _ in chunk])
            gt = np.stack([case.masks[row, case.task_index(task)] for _, task, case, row, _, _ in chunk])
            ref_image = np.stack([ref.images[rrow] for *_, ref, rrow in chunk])
            ref_mask = np.stack([ref.masks[rrow, ref.task_index(task)] for _, task, _, _, ref, rrow in chunk])

            def to_images(a: np.ndarray) -> torch.Tensor:
                return torch.from_numpy(a).to(device).permute(0, 3, 1, 2).float().div_(255.0)

            ref_mask_t = torch.from_numpy(ref_mask).to(device)[:, None].float()
            cached = stack_embeddings([(case, row, ref, rrow) for _, _, case, row, ref, rrow in chunk])
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                if cached is None:
                    logits = model(to_images(target), to_images(ref_image), ref_mask_t)
                else:  # the frozen encoder's cached embeddings: the same result without the encoder
                    ie, se = (torch.from_numpy(a).to(device).float() for a in cached)
                    prompt = model.encode_reference(to_images(ref_image), ref_mask_t, embeddings=se)
                    logits = model.decode(ie, prompt)[0]
            pred = (logits.float()[:, 0] > logit_threshold).cpu().numpy()
            for (src, task, case, *_), p, g in zip(chunk, pred, gt.astype(bool)):
                sums[index[(f"{src}/{task}", case.name)]] += torch.tensor(
                    [float((p & g).sum()), float(p.sum()), float(g.sum())], dtype=torch.float64)
    finally:
        model.train(was_training)
    sums = all_reduce_sum(sums, ctx)
    return dice_from_sums({k: sums[i].numpy() for k, i in index.items()})
