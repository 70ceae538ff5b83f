"""Segmentation loss: ``w * soft Dice + (1 - w) * BCEWithLogits(pos_weight)`` (spec §5.8 #15).

Why this form: the paper says "weighted sum of BCE and Dice"; w = 0.8 follows SAMed/H-SAM. Dice is
computed per sample (not over the whole batch) so that small structures (artery, cup) are not drowned
by large ones, and with additive smoothing so that negative pairs (empty target mask) have a defined,
minimisable Dice term (predicting nothing gives Dice loss 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossParts", "BceDiceLoss", "soft_dice_loss"]


@dataclass
class LossParts:
    """The total loss and its two terms (detached terms, for logging)."""

    total: torch.Tensor
    bce: torch.Tensor
    dice: torch.Tensor


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 - (2|P∩G| + s) / (|P| + |G| + s)`` per sample, averaged; ``logits``/``target`` are B×1×H×W."""
    prob = torch.sigmoid(logits.float()).flatten(1)
    gt = target.float().flatten(1)
    inter = (prob * gt).sum(1)
    denom = prob.sum(1) + gt.sum(1)
    return (1.0 - (2.0 * inter + smooth) / (denom + smooth)).mean()


class BceDiceLoss(torch.nn.Module):
    """Weighted BCE + Dice on logits; computed in float32 even when called under autocast."""

    def __init__(self, dice_weight: float = 0.8, pos_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= dice_weight <= 1.0:
            raise ValueError(f"dice_weight must be in [0, 1], got {dice_weight}")
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> LossParts:
        if logits.shape != target.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape")
        with torch.autocast(logits.device.type, enabled=False):  # fp16 sums over a mask overflow; keep fp32
            target = target.float()
            bce = F.binary_cross_entropy_with_logits(logits.float(), target,
                                                     pos_weight=self.pos_weight.to(logits.device))
            dice = soft_dice_loss(logits, target, self.smooth)
        total = self.dice_weight * dice + (1.0 - self.dice_weight) * bce
        return LossParts(total=total, bce=bce.detach(), dice=dice.detach())
