"""Learning-rate schedule: linear warmup, then polynomial decay (SAMed's recipe, spec §5.8 #16).

Why warmup: LoRA B matrices and KM's output conv start at zero, and Adam's first steps are large
relative to them; a short ramp avoids knocking the (pretrained) decoder off its input distribution.
"""

from __future__ import annotations

import torch

__all__ = ["lr_factor", "warmup_poly_scheduler"]


def lr_factor(step: int, total_steps: int, warmup_steps: int, power: float = 0.9,
              min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate used for optimiser step ``step`` (0-based).

    Warmup: ``(step + 1) / warmup`` for ``step < warmup``. Then ``(1 - t)^power`` with
    ``t = (step - warmup) / (total - warmup)``, floored at ``min_ratio``.
    """
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    remaining = max(1, total_steps - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / remaining))
    return max(min_ratio, (1.0 - t) ** power)


def warmup_poly_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                          power: float = 0.9, min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying :func:`lr_factor`; call ``scheduler.step()`` once after every optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, power, min_ratio))
