"""Training the point, box and prompt-free baselines with exactly the KSAM trainer's pieces.

Why not a trainer of their own: a fair comparison needs the same data, the same pair stream, the same
augmentation, loss, optimiser, schedule, steps, batch size and seed as KSAM. So this loop takes a
:class:`~KnowledgeSAMLib.train.config.TrainConfig` (the one KSAM is trained with) and calls the
trainer's own parts — :class:`PairSampler` (seeded as the trainer's rank 0, so the *same* target slices
in the same order), :func:`augment_pair_batch`, :class:`BceDiceLoss`, Adam with
:func:`warmup_poly_scheduler` and gradient clipping. Only what the prompt requires differs:

* point / box: the prompt is drawn from the *augmented* target mask (:mod:`.prompts`); the reference
  half of each pair is unused, and negative pairs (structure absent on the target) are dropped from the
  loss, because no click or box exists for an absent structure (about ``negative_fraction`` of pairs);
* prompt-free: each pair's target slice is trained on *all* of its structures at once (one output
  channel each), so negative pairs are kept (their masks are simply empty).

The IoU-head loss of KSAM's config is not used: the baselines' masks do not depend on it.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from KnowledgeSAMLib.errors import CancelledError
from KnowledgeSAMLib.train.augment import augment_pair_batch
from KnowledgeSAMLib.train.config import TrainConfig
from KnowledgeSAMLib.train.loss import BceDiceLoss
from KnowledgeSAMLib.train.pairs import PairBatch, PairSampler
from KnowledgeSAMLib.train.schedule import warmup_poly_scheduler
from KnowledgeSAMLib.train.sources import Source

from .prompt_free import PromptFreeSAM
from .prompted_sam import PromptedSAM, SAMBase
from .prompts import PromptConfig, box_prompt, pack_points, point_prompt

__all__ = ["BaselineTrainResult", "seed_everything", "sampler_seed", "train_baseline", "all_structures"]


@dataclass
class BaselineTrainResult:
    steps: int
    seconds: float
    first_loss: float  # mean loss over the first tenth of the steps
    last_loss: float  # mean loss over the last tenth
    pairs_used: int  # pairs that entered the loss (point/box drop negatives)

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds if self.seconds else 0.0


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch as the KSAM trainer does before building its model."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sampler_seed(run_seed: int, rank: int = 0) -> int:
    """The pair sampler's seed for a run seed: the KSAM trainer's rule for its rank 0."""
    return int(np.random.SeedSequence([run_seed, rank]).generate_state(1)[0])


def all_structures(sources: list[Source]) -> list[str]:
    """Every task of the sources, in order, without repeats (a prompt-free head's channels)."""
    return list(dict.fromkeys(t for s in sources for t in s.tasks))


def _images(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(a).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def _masks(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(a).to(device)[:, None].float()


def _all_masks(batch: PairBatch, cases: dict, structures: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(B, T, S, S) masks of every head structure on each pair's target slice, and (B, T) "known" flags
    (a structure the target's source does not label is left out of the loss, not taught as empty)."""
    size = batch.target.shape[1]
    masks = np.zeros((len(batch), len(structures), size, size), dtype=np.uint8)
    known = np.zeros((len(batch), len(structures)), dtype=bool)
    for i, ref in enumerate(batch.refs):
        case = cases[ref.target_case]
        for t, task in enumerate(case.tasks):
            if task in structures:
                c = structures.index(task)
                masks[i, c] = case.masks[ref.target_row, t]
                known[i, c] = True
    return masks, known


def _prompt_inputs(model: PromptedSAM, masks: torch.Tensor, prompts: PromptConfig, rng: np.random.Generator):
    """Prompts for each (augmented) target mask: (points or None, boxes or None)."""
    arrays = masks[:, 0].detach().cpu().numpy() > 0.5
    device = masks.device
    if model.prompt == "point":
        coords, labels = pack_points([point_prompt(m, prompts.max_points) for m in arrays], prompts.max_points)
        return (torch.from_numpy(coords).to(device), torch.from_numpy(labels).to(device)), None
    jitter = prompts.box_jitter(model.config.image_size)
    boxes = np.stack([box_prompt(m, jitter, rng) for m in arrays])
    return None, torch.from_numpy(boxes).to(device)


def train_baseline(model: SAMBase, cfg: TrainConfig, sources: list[Source], device: str | torch.device = "cpu",
                   steps: int | None = None, prompts: PromptConfig = PromptConfig(),
                   progress: Callable[[int, int, float], None] | None = None, cancel=None) -> BaselineTrainResult:
    """Train ``model`` (a :class:`PromptedSAM` or :class:`PromptFreeSAM`) in place on ``sources`` with the
    optimiser, schedule, batch, pairs, augmentation and loss of ``cfg``; ``steps`` defaults to
    ``cfg.total_steps``. ``progress(step, total, loss)``; ``cancel.cancelled`` raises CancelledError."""
    device = torch.device(device)
    model.to(device).train()
    total = int(steps or cfg.total_steps)
    sampler = PairSampler(sources, cfg.pairs, seed=sampler_seed(cfg.run.seed))
    cases = {c.name: c for s in sources for c in s.train}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                 weight_decay=cfg.optim.weight_decay)
    warmup = min(cfg.optim.warmup_steps, max(0, total - 1))
    scheduler = warmup_poly_scheduler(optimizer, total, warmup, cfg.optim.poly_power, cfg.optim.min_lr_ratio)
    loss_fn = BceDiceLoss(cfg.loss.dice_weight, cfg.loss.pos_weight, cfg.loss.dice_smooth).to(device)
    losses: list[float] = []
    used = 0
    started = time.perf_counter()
    for step in range(total):
        if cancel is not None and getattr(cancel, "cancelled", False):
            raise CancelledError(f"baseline training cancelled at step {step}")
        batch = sampler.sample(cfg.optim.batch_size)
        if isinstance(model, PromptFreeSAM):
            masks, known = _all_masks(batch, cases, model.structures)
            target, masks_t, _, _ = augment_pair_batch(
                _images(batch.target, device), torch.from_numpy(masks).to(device).float(),
                _images(batch.ref_image, device), _masks(batch.ref_mask, device), sampler.rng, cfg.augment)
            logits = model(target)
            keep = torch.from_numpy(known).to(device)
            parts = loss_fn(logits[keep][:, None], masks_t[keep][:, None])
            used += int(keep.any(1).sum())
        else:
            target, target_mask, _, _ = augment_pair_batch(
                _images(batch.target, device), _masks(batch.target_mask, device),
                _images(batch.ref_image, device), _masks(batch.ref_mask, device), sampler.rng, cfg.augment)
            present = target_mask.flatten(1).amax(1) > 0.5  # negatives and augmented-away structures
            if not bool(present.any()):
                scheduler.step()
                continue
            target, target_mask = target[present], target_mask[present]
            points, boxes = _prompt_inputs(model, target_mask, prompts, sampler.rng)
            parts = loss_fn(model(target, points, boxes), target_mask)
            used += int(present.sum())
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        grad_norm = nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip or math.inf)
        if bool(torch.isfinite(grad_norm)):
            optimizer.step()
        scheduler.step()
        losses.append(float(parts.total.detach()))
        if progress is not None:
            progress(step + 1, total, losses[-1])
    model.eval()
    tenth = max(1, len(losses) // 10)
    return BaselineTrainResult(steps=total, seconds=time.perf_counter() - started,
                               first_loss=float(np.mean(losses[:tenth])) if losses else math.nan,
                               last_loss=float(np.mean(losses[-tenth:])) if losses else math.nan,
                               pairs_used=used)
