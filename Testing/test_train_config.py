"""TrainConfig: YAML/JSON loading, documentation of every field, clear validation errors."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path

import pytest

from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.train import config as C

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"data": {"sources": [{"kind": "kidney_phantom"}]}}


def _all_fields(cls):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield cls, f
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _all_fields(tp)
        if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            yield from _all_fields(typing.get_args(tp)[0])


def test_every_setting_is_documented_and_described():
    text = C.describe()
    for cls, f in _all_fields(C.TrainConfig):
        if cls is C.TrainConfig:
            continue
        assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no documentation"
        assert f".{f.name}` |" in text, f"{cls.__name__}.{f.name} is missing from describe()"


def test_yaml_and_json_give_the_same_config(tmp_path):
    data = {**MINIMAL, "optim": {"lr": 3e-4, "epochs": 2, "steps_per_epoch": 300}, "run": {"seed": 7}}
    (tmp_path / "a.json").write_text(json.dumps(data), encoding="utf-8")
    import yaml

    (tmp_path / "a.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    a, b = C.load_config(tmp_path / "a.json"), C.load_config(tmp_path / "a.yaml")
    assert a == b
    assert a.optim.lr == 3e-4 and a.total_steps == 600 and a.run.seed == 7
    assert a.loss.dice_weight == 0.8 and a.optim.betas == [0.9, 0.999]  # spec defaults
    assert C.config_from_dict(C.config_to_dict(a)) == a


def test_yaml_scientific_notation_without_dot_is_a_float(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {sources: [{kind: kidney_phantom}]}\noptim: {lr: 1e-4}\n", encoding="utf-8")
    assert C.load_config(tmp_path / "c.yaml").optim.lr == pytest.approx(1e-4)


@pytest.mark.parametrize("data, message", [
    ({**MINIMAL, "optim": {"lrr": 1}}, "optim.lrr: unknown setting"),
    ({**MINIMAL, "optim": {"lr": -1}}, "optim.lr: must be > 0"),
    ({**MINIMAL, "optim": {"batch_size": 2.5}}, "optim.batch_size: expected int"),
    ({**MINIMAL, "augment": {"flip": "sideways"}}, "augment.flip: must be one of joint, independent, none"),
    ({"data": {"sources": []}}, "data.sources: needs at least one source"),
    ({"data": {"sources": [{"weight": 1}]}}, "data.sources[0].kind: required setting is missing"),
    ({"data": {"sources": [{"kind": "papila"}]}}, "data.sources[0].root: a papila source needs"),
    ({"data": {"sources": [{"kind": "kidney_phantom", "shape": [4, 4]}]}}, "data.sources[0].shape"),
    ({"data": {"sources": [{"kind": "kidney_phantom", "phase": "venous"}]}}, "data.sources[0].phase: must be one of"),
    ({"data": {"sources": [{"kind": "kidney_phantom", "anatomy": True, "phase": "portal", "tasks": ["cortex"]}]}},
     "data.sources[0].tasks: artery, medulla and cortex cannot be told apart"),
    ({"data": {"sources": [{"kind": "kidney_phantom", "phase": "non-contrast"}]}}, "without anatomy: true"),
    ({"data": {"sources": [{"kind": "fundus_phantom", "anatomy": True}]}}, "is for kidney_phantom sources"),
    ({"data": {"sources": [{"kind": "fundus_phantom", "tuning_cases": 4}]}}, "tuning_cases: is for hippocampus"),
    ({**MINIMAL, "pairs": {"negative_fraction": 2}}, "pairs.negative_fraction: must be <= 0.9"),
    ({**MINIMAL, "run": {"device": "gpu"}}, "run.device: must be auto, cpu, cuda or cuda:N"),
    ({**MINIMAL, "optim": {"warmup_steps": 10_000, "epochs": 1, "steps_per_epoch": 10}}, "optim.warmup_steps"),
    ({**MINIMAL, "model": "tiny"}, "model: expected ModelSection"),
])
def test_invalid_settings_name_file_and_key(data, message):
    with pytest.raises(InputError) as info:
        C.config_from_dict(data, where="my.yaml")
    assert str(info.value).startswith("my.yaml: ") and message in str(info.value)
    assert "\n" not in str(info.value)


def test_file_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        C.load_config(tmp_path / "missing.yaml")
    (tmp_path / "x.txt").write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match=r"must end in \.yaml, \.yml or \.json"):
        C.load_config(tmp_path / "x.txt")
    (tmp_path / "bad.yaml").write_text("optim: [1, 2\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.yaml: not valid YAML"):
        C.load_config(tmp_path / "bad.yaml")
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(InputError, match="bad.json: not valid JSON"):
        C.load_config(tmp_path / "bad.json")


def test_relative_roots_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("data: {sources: [{kind: hippocampus, root: ../data}]}\n", encoding="utf-8")
    cfg = C.load_config(tmp_path / "sub" / "c.yaml")
    assert cfg.data.sources[0].root == str((tmp_path / "data").resolve())


def test_overrides():
    cfg = C.config_from_dict(MINIMAL)
    out = C.apply_overrides(cfg, ["optim.lr=2e-3", "model.overrides={use_km: false}", "data.sources.0.weight=3"])
    assert out.optim.lr == 2e-3 and out.model.overrides == {"use_km": False} and out.data.sources[0].weight == 3
    assert cfg.optim.lr == 1e-4  # the original is untouched
    with pytest.raises(InputError, match="optim.nope"):
        C.apply_overrides(cfg, ["optim.nope=1"])
    with pytest.raises(InputError, match="expected section.key=value"):
        C.apply_overrides(cfg, ["optim.lr"])


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_are_valid(name):
    cfg = C.load_config(REPO / "configs" / name)
    assert cfg.data.sources and (cfg.total_steps > 0 or cfg.optim.steps_per_epoch == 0)  # 0: a data pass


def test_the_paper_config_is_the_papers_recipe_by_epochs():
    cfg = C.load_config(REPO / "configs" / "paper_refuge_gpu.yaml")
    assert cfg.model.name == "vit_b" and cfg.optim.epochs == 300 and cfg.optim.steps_per_epoch == 0
    assert cfg.optim.lr == 1e-4 and cfg.optim.warmup_steps > 0 and 0 < cfg.loss.dice_weight < 1
    assert cfg.data.sources[0].kind == "image_folder" and cfg.data.sources[0].tasks == ["disc", "cup"]
