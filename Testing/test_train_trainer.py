"""The training loop on the tiny model: the loss goes down, resume is exact, runs are never overwritten."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from KnowledgeSAMLib import build_model
from KnowledgeSAMLib.errors import CancelledError, InputError, KnowledgeSAMError
from KnowledgeSAMLib.infer.cancel import CancelToken
from KnowledgeSAMLib.train.checkpoint import latest_checkpoint, list_checkpoints
from KnowledgeSAMLib.train.config import config_from_dict
from KnowledgeSAMLib.train.trainer import Trainer
from train_helpers import synthetic_sources


def make_config(out_dir, **sections):
    data = {
        "data": {"sources": [{"kind": "kidney_phantom"}]},  # replaced by the synthetic sources below
        "optim": {"lr": 1e-3, "warmup_steps": 5, "epochs": 2, "steps_per_epoch": 10, "batch_size": 4},
        "validation": {"max_slices_per_case": 4},
        "loss": {"iou_weight": 0.05},
        "run": {"out_dir": str(out_dir), "log_every": 5, "device": "cpu"},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return config_from_dict(data)


@pytest.fixture(scope="module")
def sources():
    return synthetic_sources(seed=1, n_train=4, n_val=1, size=64, n=8, with_2d=True)


def trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_short_run_lowers_the_loss_and_writes_the_run(tmp_path, sources):
    cfg = make_config(tmp_path / "run", optim={"epochs": 2, "steps_per_epoch": 40, "warmup_steps": 5},
                      run={"log_every": 10})
    result = Trainer(cfg, sources=sources).fit()
    assert result.steps == 80
    with (tmp_path / "run" / "train_log.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 8
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < 0.8 * first, f"loss did not go down: {losses}"
    with (tmp_path / "run" / "val_log.csv").open(encoding="utf-8") as handle:
        val = list(csv.DictReader(handle))
    assert [int(r["epoch"]) for r in val] == [1, 2]
    assert {"synth3d/square", "synth3d/disc", "synth2d/square", "synth2d/disc", "mean"} <= set(val[0])
    assert set(result.val) == {"synth3d/square", "synth3d/disc", "synth2d/square", "synth2d/disc", "mean"}
    # the saved model is the trained one, and loads back
    from KnowledgeSAMLib import load_model

    loaded = load_model(result.model_dir)
    data = json.loads((tmp_path / "run" / "data.json").read_text(encoding="utf-8"))
    assert data["synth3d"]["train_cases"] == ["s3d_0", "s3d_1", "s3d_2", "s3d_3"]
    assert data["synth3d"]["val_cases"] == ["s3d_val_0"]
    assert loaded.config.name == "tiny"
    assert len(list_checkpoints(tmp_path / "run")) == 2


def test_resume_continues_exactly(tmp_path, sources):
    straight = Trainer(make_config(tmp_path / "a"), sources=sources)
    straight.fit()

    cancel = CancelToken()

    def stop_after_first_epoch(event, done, total, info):
        if event == "step" and done == 10:
            cancel.cancel()

    first = Trainer(make_config(tmp_path / "b"), sources=sources, progress=stop_after_first_epoch, cancel=cancel)
    with pytest.raises(CancelledError, match="--resume"):
        first.fit()
    checkpoint = latest_checkpoint(tmp_path / "b")
    assert checkpoint is not None and checkpoint.name == "step_0000010"
    assert json.loads((checkpoint / "meta.json").read_text(encoding="utf-8"))["step"] == 10
    # the checkpoint holds exactly the trainable tensors (no frozen encoder weights)
    from safetensors.torch import load_file

    saved = load_file(str(checkpoint / "trainable.safetensors"))
    assert set(saved) == set(trainable(first.model))

    resumed = Trainer(make_config(tmp_path / "b"), sources=sources, resume="auto")
    result = resumed.fit()
    assert result.steps == 20
    a, b = trainable(straight.model), trainable(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    with (tmp_path / "b" / "train_log.csv").open(encoding="utf-8") as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle)]
    assert steps == [5, 10, 15, 20]


def test_existing_run_is_not_overwritten_and_resume_checks_the_frozen_weights(tmp_path, sources):
    cfg = make_config(tmp_path / "r", optim={"epochs": 1, "steps_per_epoch": 4, "warmup_steps": 1})
    Trainer(cfg, sources=sources).fit()
    with pytest.raises(InputError, match="already holds a training run"):
        Trainer(cfg, sources=sources).fit()
    other_seed = make_config(tmp_path / "r", optim={"epochs": 1, "steps_per_epoch": 4, "warmup_steps": 1},
                             run={"seed": 1})
    with pytest.raises(KnowledgeSAMError, match="frozen weights differ"):
        Trainer(other_seed, sources=sources, resume="auto").fit()
    with pytest.raises(InputError, match="no checkpoint"):
        Trainer(make_config(tmp_path / "empty"), sources=sources, resume="auto").fit()


def test_ablation_variants_train(tmp_path, sources):
    for name, overrides in {"kp_only": {"use_km": False, "use_pm": False, "dense_prompt": "reference"},
                            "pm": {"use_km": False}}.items():
        cfg = make_config(tmp_path / name, model={"overrides": overrides},
                          optim={"epochs": 1, "steps_per_epoch": 3, "warmup_steps": 1},
                          validation={"enabled": False})
        trainer = Trainer(cfg, sources=sources)
        assert trainer.model.config.use_km is False
        assert trainer.fit().steps == 3
    with pytest.raises(InputError, match="model:"):
        Trainer(make_config(tmp_path / "bad", model={"overrides": {"no_such_field": 1}}), sources=sources)


def test_a_stand_in_model_without_decode_trains_without_the_iou_loss(tmp_path, sources):
    class StandIn(torch.nn.Module):
        """Same call signature as KSAM: (target, ref_image, ref_mask) -> logits."""

        def __init__(self):
            super().__init__()
            self.config = build_model("tiny").config
            self.conv = torch.nn.Conv2d(7, 1, 3, padding=1)

        def forward(self, target, ref_image, ref_mask):
            return self.conv(torch.cat([target, ref_image, ref_mask], 1))

    cfg = make_config(tmp_path / "s", loss={"iou_weight": 0.0}, optim={"epochs": 1, "steps_per_epoch": 3, "warmup_steps": 1})
    assert Trainer(cfg, model=StandIn(), sources=sources).fit().steps == 3

    class Unstable(StandIn):
        """Returns NaN logits on its second training call: that step must be skipped, not applied."""

        calls = 0

        def forward(self, target, ref_image, ref_mask):
            out = super().forward(target, ref_image, ref_mask)
            if self.training:
                Unstable.calls += 1
                if Unstable.calls == 2:
                    return out * float("nan")
            return out

    cfg = make_config(tmp_path / "nan", loss={"iou_weight": 0.0}, validation={"enabled": False},
                      optim={"epochs": 1, "steps_per_epoch": 4, "warmup_steps": 1}, run={"log_every": 4})
    trainer = Trainer(cfg, model=Unstable(), sources=sources)
    with pytest.warns(RuntimeWarning, match="1 of 4 training steps so far had a non-finite loss"):
        assert trainer.fit().steps == 4
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    with (tmp_path / "nan" / "train_log.csv").open(encoding="utf-8") as handle:
        assert [int(r["skipped"]) for r in csv.DictReader(handle)] == [1]
    with pytest.raises(InputError, match="iou_weight"):
        Trainer(make_config(tmp_path / "s2"), model=StandIn(), sources=sources).fit()


def test_amp_only_on_cuda():
    from KnowledgeSAMLib.train.trainer import _amp_dtype

    assert _amp_dtype("auto", torch.device("cpu")) is None and _amp_dtype("fp16", torch.device("cpu")) is None
    assert _amp_dtype("off", torch.device("cuda")) is None
    assert _amp_dtype("fp16", torch.device("cuda")) is torch.float16
    assert _amp_dtype("bf16", torch.device("cuda")) is torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cuda_amp_run(tmp_path, sources, amp):
    cfg = make_config(tmp_path / amp, optim={"epochs": 1, "steps_per_epoch": 6, "warmup_steps": 1},
                      run={"device": "cuda", "amp": amp})
    result = Trainer(cfg, sources=sources).fit()
    assert result.steps == 6 and result.last_loss == result.last_loss  # finite, not NaN
    assert next(Trainer(cfg, sources=sources, resume="auto").model.parameters()).is_cuda


def test_init_from_a_trained_model(tmp_path, sources):
    from KnowledgeSAMLib import save_model
    from KnowledgeSAMLib.train.trainer import build_train_model

    torch.manual_seed(5)
    base = build_model("tiny")
    save_model(base, tmp_path / "base")
    cfg = make_config(tmp_path / "ft", model={"init_from": str(tmp_path / "base")})
    model = build_train_model(cfg)
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), model.state_dict().values()))
    ablated = build_train_model(make_config(tmp_path / "ft2", model={"init_from": str(tmp_path / "base"),
                                                                     "overrides": {"use_pm": False}}))
    assert ablated.prompt_merge is None
    assert torch.equal(ablated.state_dict()["mask_decoder.iou_token.weight"],
                       base.state_dict()["mask_decoder.iou_token.weight"])
