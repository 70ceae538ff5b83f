"""BCE + Dice loss (spec §5.8 #15) and the warmup + poly learning-rate schedule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from KnowledgeSAMLib.train.loss import BceDiceLoss, soft_dice_loss
from KnowledgeSAMLib.train.schedule import lr_factor, warmup_poly_scheduler


def _target():
    t = torch.zeros(2, 1, 16, 16)
    t[0, 0, 4:10, 4:10] = 1
    t[1, 0, 2:5, 8:14] = 1
    return t


def test_perfect_prediction_scores_near_zero_and_wrong_one_high():
    t = _target()
    loss = BceDiceLoss()
    good = loss(torch.where(t > 0, 20.0, -20.0), t)
    bad = loss(torch.where(t > 0, -20.0, 20.0), t)
    assert good.total < 1e-3 and good.dice < 1e-3 and good.bce < 1e-3
    assert bad.total > 0.9


def test_weighting_and_bce_term_match_torch():
    torch.manual_seed(0)
    t, logits = _target(), torch.randn(2, 1, 16, 16)
    parts = BceDiceLoss(dice_weight=0.8, pos_weight=2.0)(logits, t)
    bce = F.binary_cross_entropy_with_logits(logits, t, pos_weight=torch.tensor([2.0]))
    assert torch.allclose(parts.bce, bce)
    assert torch.allclose(parts.total, 0.8 * soft_dice_loss(logits, t) + 0.2 * bce)
    only_bce = BceDiceLoss(dice_weight=0.0)(logits, t)
    assert torch.allclose(only_bce.total, F.binary_cross_entropy_with_logits(logits, t))


def test_empty_target_rewards_an_empty_prediction():
    empty = torch.zeros(1, 1, 16, 16)
    loss = BceDiceLoss()
    assert loss(torch.full_like(empty, -20.0), empty).total < 1e-3
    assert loss(torch.full_like(empty, 20.0), empty).total > 0.5


def test_dice_is_per_sample_so_small_structures_count():
    t = torch.zeros(2, 1, 32, 32)
    t[0, 0, :, :] = 1  # large structure, predicted right
    t[1, 0, 0:2, 0:2] = 1  # tiny structure, missed
    logits = torch.where(t > 0, 20.0, -20.0)
    logits[1] = -20.0
    assert soft_dice_loss(logits, t).item() == pytest.approx(0.5 * (1 - 1 / 5), abs=1e-3)


def test_loss_gradients_and_shape_check():
    t = _target()
    logits = torch.zeros(2, 1, 16, 16, requires_grad=True)
    BceDiceLoss()(logits, t).total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="differ in shape"):
        BceDiceLoss()(torch.zeros(2, 1, 8, 8), t)


def test_schedule_warmup_then_poly_decay():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, 0.9) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(f[:9], f[1:10]))  # increasing during warmup
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # non-increasing after
    assert f[10] == pytest.approx(1.0) and f[-1] == pytest.approx((1 / 90) ** 0.9)
    assert lr_factor(total, total, warm) == 0.0
    assert lr_factor(total, total, warm, min_ratio=0.05) == 0.05
    assert lr_factor(0, 10, 0) == 1.0


def test_scheduler_drives_the_optimizer():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    sched = warmup_poly_scheduler(opt, total_steps=20, warmup_steps=4)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2.5e-4) and max(lrs) == pytest.approx(1e-3) and lrs[-1] < 1e-4
