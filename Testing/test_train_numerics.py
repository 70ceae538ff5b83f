"""fp16 safety: the Prompt Parser and the loss run in float32 under autocast, and non-finite steps are counted
and warned about (the paper's V100 has no bf16, so `amp: auto` picks fp16 there)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from KnowledgeSAMLib import build_model
from KnowledgeSAMLib.model.prompt_parser import PromptParser
from KnowledgeSAMLib.train.loss import BceDiceLoss
from KnowledgeSAMLib.train.trainer import Trainer
from test_train_trainer import make_config
from train_helpers import synthetic_sources


def _inputs(model, batch=2):
    s = model.config.image_size
    torch.manual_seed(0)
    mask = torch.zeros(batch, 1, s, s)
    mask[..., s // 4: s // 2, s // 4: s // 2] = 1
    return torch.rand(batch, 3, s, s), torch.rand(batch, 3, s, s), mask


def _dtypes_under_autocast(model, dtype=torch.bfloat16):
    """Output dtypes of each parser, of the parsers' inner layers, and of an attention projection nearby."""
    seen: dict[str, list[torch.dtype]] = {"parser": [], "parser_inner": [], "attention": []}
    hooks = []
    for block in model.prompt_merge.blocks:
        hooks.append(block.parser.register_forward_hook(lambda m, i, o: seen["parser"].append(o.dtype)))
        hooks.append(block.parser.mix[0].register_forward_hook(lambda m, i, o: seen["parser_inner"].append(o.dtype)))
        hooks.append(block.cross_attn.q_proj.register_forward_hook(lambda m, i, o: seen["attention"].append(o.dtype)))
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
            logits = model(*_inputs(model))
    finally:
        for hook in hooks:
            hook.remove()
    return seen, logits


def test_the_prompt_parser_runs_in_float32_under_autocast():
    model = build_model("tiny").eval()
    seen, logits = _dtypes_under_autocast(model)
    assert seen["attention"] and set(seen["attention"]) == {torch.bfloat16}  # autocast is really on
    assert len(seen["parser"]) == model.config.pm_depth
    assert set(seen["parser"]) == {torch.float32} and set(seen["parser_inner"]) == {torch.float32}
    assert torch.isfinite(logits).all()


def test_without_autocast_the_parser_keeps_the_input_dtype():
    parser = PromptParser(dim=16).double()
    q = torch.randn(1, 4, 16, dtype=torch.float64)
    assert parser(q, q, q, q).dtype == torch.float64


def test_a_large_raw_parser_output_stays_finite_under_float16_autocast():
    torch.manual_seed(0)
    parser = PromptParser(dim=256)  # normalised, as in every model config
    q, t, p0, p1 = (torch.randn(1, 64, 256) * 6 for _ in range(4))
    assert parser.parse(q, t, p0, p1).abs().max() > 65504  # beyond float16's largest value
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        unguarded = parser._forward(q, t, p0, p1)  # the same arithmetic left to autocast
        out = parser(q, t, p0, p1)
    assert not torch.isfinite(unguarded).all()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_the_loss_is_float32_under_autocast():
    logits = (torch.randn(2, 1, 16, 16) * 4).to(torch.bfloat16)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        parts = BceDiceLoss()(logits, target)
    assert parts.total.dtype == torch.float32 and parts.bce.dtype == torch.float32


class _SometimesNaN(torch.nn.Module):
    """A stand-in model whose training forward returns NaN logits on the listed calls."""

    def __init__(self, bad_calls: set[int]):
        super().__init__()
        self.config = build_model("tiny").config
        self.conv = torch.nn.Conv2d(7, 1, 3, padding=1)
        self.bad_calls, self.calls = bad_calls, 0

    def forward(self, target, ref_image, ref_mask):
        out = self.conv(torch.cat([target, ref_image, ref_mask], 1))
        if self.training:
            self.calls += 1
            if self.calls in self.bad_calls:
                return out * float("nan")
        return out


@pytest.mark.parametrize("bad, warned", [(set(), False), ({5}, True)])
def test_non_finite_steps_are_counted_and_warned_about_past_one_percent(tmp_path, bad, warned):
    sources = synthetic_sources(seed=3, n_train=3, n_val=1, size=64, n=6)
    cfg = make_config(tmp_path / "run", loss={"iou_weight": 0.0}, validation={"enabled": False},
                      optim={"epochs": 1, "steps_per_epoch": 6, "warmup_steps": 1}, run={"log_every": 3})
    events = []
    trainer = Trainer(cfg, model=_SometimesNaN(bad), sources=sources, progress=lambda e, *a: events.append(e))
    with pytest.warns(RuntimeWarning, match="non-finite") if warned else _no_warning():
        trainer.fit()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["nonfinite_steps"] == len(bad)
    with (tmp_path / "run" / "train_log.csv").open(encoding="utf-8") as handle:
        assert [int(r["nonfinite"]) for r in csv.DictReader(handle)] == ([0, 1] if bad else [0, 0])
    assert ("warning" in events) == warned


class _no_warning:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self.records = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc):
        self._catch.__exit__(*exc)
        assert not [r for r in self.records if "non-finite" in str(r.message)]
