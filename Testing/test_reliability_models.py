"""Model folders are integrity-checked: every kind of damage is one WeightsError line, never a traceback.

``config.json`` records the SHA256 of ``model.safetensors`` (``save_model``, ``knowledgesam train --export`` and
``--record-hash`` write it) and ``load_model`` verifies it, checks the config's fields and size before anything
is built, the tensors against the config, and that every weight is finite. Folders saved before the hash was
recorded still load, with a warning, and are marked unverified wherever a user looks (provenance, ``info``).
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from KnowledgeSAMLib import build_model, load_model, save_model
from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.errors import WeightsError
from KnowledgeSAMLib.model import config_checks
from KnowledgeSAMLib.model.weights import record_weights_hash

from reliability_helpers import ROOT, make_case, sha256


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(build_model("tiny"), tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture()
def model_copy(saved, tmp_path):
    return shutil.copytree(saved, tmp_path / "model")


def _config(folder) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


def _write_config(folder, config) -> None:
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")


def _flip_a_byte(folder) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _nan_weights(folder) -> None:
    model = build_model("tiny")
    with torch.no_grad():
        next(model.mask_decoder.parameters()).view(-1)[0] = float("nan")
    save_model(model, folder, overwrite=True)  # a hash is recorded: the file is what training wrote


def _other_shapes(folder) -> None:
    _write_config(folder, {**_config(folder), "decoder_mlp_dim": 128})


def _another_models_config(folder) -> None:
    from KnowledgeSAMLib.model.config import get_config

    _write_config(folder, {**get_config("small").to_dict(), "weights_sha256": _config(folder)["weights_sha256"]})


def _absurd_size(folder) -> None:  # 12 blocks of width 65536: about 2.5 TB of parameters
    _write_config(folder, {**_config(folder), "encoder_embed_dim": 65536, "encoder_depth": 12,
                           "encoder_global_attn_indexes": [11]})


DAMAGE = {
    "one flipped byte": (_flip_a_byte, "does not match the .* recorded in config.json"),
    "NaN weights": (_nan_weights, "NaN or infinite"),
    "config with other sizes": (_other_shapes, "does not fit .*config.json: tensors .* of another shape"),
    "another model's config": (_another_models_config, "does not fit .*config.json: tensors .* missing"),
    "a model of terabytes": (_absurd_size, r"parameters \(.* GB\), more than 1/2 of the"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_one_clear_line(damage, model_copy):
    make_damage, message = DAMAGE[damage]
    make_damage(model_copy)
    with pytest.raises(WeightsError, match=message) as error:
        load_model(model_copy)
    assert "\n" not in str(error.value)


NONSENSE = {
    "a size as text": ({"image_size": "abc"}, "field 'image_size' must be a whole number, not str 'abc'"),
    "a float depth": ({"encoder_depth": 2.5}, "field 'encoder_depth' must be a whole number"),
    "a million blocks": ({"encoder_depth": 1_000_000}, "field 'encoder_depth' must be within 1..128"),
    "a negative width": ({"decoder_mlp_dim": -4}, "field 'decoder_mlp_dim' must be within"),
    "an unknown choice": ({"encoder_training": "magic"}, "field 'encoder_training' must be one of"),
    "text in a list": ({"km_widths": [16, "x", 16]}, "field 'km_widths' holds 'x'"),
    "a list of the wrong length": ({"pixel_mean": [1.0, 2.0]}, "field 'pixel_mean' must have 3 entries"),
    "yes for true": ({"use_km": "yes"}, "field 'use_km' must be true or false"),
    "NaN": ({"lora_alpha": float("nan")}, "field 'lora_alpha' must be a finite number"),
    "an unknown field": ({"colour": "blue"}, "unknown model config field"),
    "a bad hash": ({"weights_sha256": "xyz"}, "weights_sha256 must be 64 hexadecimal digits"),
    "an impossible combination": ({"image_size": 100}, "not a multiple of patch_size"),
}


@pytest.mark.parametrize("nonsense", list(NONSENSE))
def test_nonsense_config_values_are_one_clear_line(nonsense, model_copy):
    changes, message = NONSENSE[nonsense]
    _write_config(model_copy, {**_config(model_copy), **changes})
    with pytest.raises(WeightsError, match=re.escape(message)) as error:
        load_model(model_copy)
    assert "\n" not in str(error.value) and "not all arguments converted" not in str(error.value)


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", ""])
def test_a_config_that_is_not_a_config_object_is_one_line(text, model_copy):
    (model_copy / "config.json").write_text(text, encoding="utf-8")
    with pytest.raises(WeightsError, match="config"):
        load_model(model_copy)


def test_an_absurd_config_is_refused_before_anything_is_allocated(model_copy, monkeypatch):
    """The size check counts parameters on the meta device: a model of 9 GB on a machine with 8 GB free."""
    config = _config(model_copy)
    _write_config(model_copy, {**config, "encoder_embed_dim": 8192, "encoder_num_heads": 8})
    monkeypatch.setattr(config_checks, "available_memory", lambda: 8 << 30)
    with pytest.raises(WeightsError, match="more than 1/2 of the 8.0 GB of memory available"):
        load_model(model_copy)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_the_cli_says_one_line_and_computes_nothing(damage, model_copy, tmp_path, capsys):
    DAMAGE[damage][0](model_copy)
    case = make_case(tmp_path / "in", model_copy)
    before = case.fingerprints()
    out = tmp_path / "out" / "pred.seg.nrrd"
    assert main(case.anchor_argv(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("knowledgesam: error: ") and "\n" not in err and "Traceback" not in err, err
    assert not out.exists() and not out.parent.exists() and case.fingerprints() == before


def test_a_folder_without_a_hash_loads_unverified_and_says_so(model_copy, tmp_path, capsys):
    config = _config(model_copy)
    del config["weights_sha256"]
    _write_config(model_copy, config)
    with pytest.warns(UserWarning, match="not verified"):
        model = load_model(model_copy)
    assert model.weights_check == {"sha256": sha256(model_copy / "model.safetensors"), "verified": False}

    case = make_case(tmp_path / "in", model_copy)
    out = tmp_path / "pred.seg.nrrd"
    assert main(case.anchor_argv(out)) == 0
    assert "knowledgesam: warning: " in capsys.readouterr().err
    record = json.loads((tmp_path / "pred.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    assert record["model"]["weights_verified"] is False

    assert main(["info", "--model", str(model_copy)]) == 0
    assert "NOT VERIFIED" in capsys.readouterr().out
    assert main(["train", "--record-hash", str(model_copy)]) == 0
    assert _config(model_copy)["weights_sha256"] == sha256(model_copy / "model.safetensors")
    capsys.readouterr()
    assert main(["info", "--model", str(model_copy)]) == 0
    assert "(verified against config.json)" in capsys.readouterr().out
    assert load_model(model_copy).weights_check["verified"] is True


def test_record_hash_refuses_broken_weights(model_copy):
    _nan_weights(model_copy)
    config = _config(model_copy)
    del config["weights_sha256"]
    _write_config(model_copy, config)
    with pytest.raises(WeightsError, match="NaN"):
        record_weights_hash(model_copy)
    assert "weights_sha256" not in _config(model_copy)


def test_save_model_records_the_hash_of_what_it_wrote(saved):
    assert _config(saved)["weights_sha256"] == sha256(saved / "model.safetensors")
    assert load_model(saved).weights_check["verified"] is True


def test_the_shipped_default_model_carries_its_hash():
    """Resources/Models/default: its config.json records the SHA256 of its weights, and they match."""
    folder = ROOT / "Resources" / "Models" / "default"
    assert _config(folder).get("weights_sha256") == sha256(folder / "model.safetensors"), \
        "regenerate with `knowledgesam train --record-hash Resources/Models/default` (or export the model again)"


def test_a_passed_fit_check_is_remembered_and_a_later_load_skips_the_meta_build(model_copy, monkeypatch,
                                                                                  tmp_path):
    """The meta-device build (1.5 s of a cold start) runs once per (config.json, weights hash): a second load
    skips it but still compares the recorded size with the memory available now; a changed config is checked
    again."""
    monkeypatch.setenv("KNOWLEDGESAM_CACHE", str(tmp_path / "cache"))
    builds = []
    real_meta = config_checks.meta_model
    monkeypatch.setattr(config_checks, "meta_model", lambda *a, **k: builds.append(1) or real_meta(*a, **k))
    load_model(model_copy)
    assert len(builds) == 1
    load_model(model_copy)
    assert len(builds) == 1  # remembered
    monkeypatch.setattr(config_checks, "available_memory", lambda: 1 << 10)
    with pytest.raises(WeightsError, match="more than 1/2 of the 1.0 KB of memory available"):
        load_model(model_copy)  # the size is compared again with what is free now
    monkeypatch.undo()
    monkeypatch.setenv("KNOWLEDGESAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(config_checks, "meta_model", lambda *a, **k: builds.append(1) or real_meta(*a, **k))
    _write_config(model_copy, {**_config(model_copy), "encoder_embed_dim": 8192, "encoder_num_heads": 8})
    with pytest.raises(WeightsError):
        load_model(model_copy)  # another config: checked again (and refused: the weights do not fit)
    assert len(builds) == 2


def test_a_damaged_fit_record_only_costs_the_check_again(model_copy, monkeypatch, tmp_path):
    from KnowledgeSAMLib.model import weights

    monkeypatch.setenv("KNOWLEDGESAM_CACHE", str(tmp_path / "cache"))
    load_model(model_copy)
    found, _ = weights.verify_weights(model_copy)
    record = weights._fit_record(model_copy, found)
    assert record.is_file()
    record.write_text("{not json", encoding="utf-8")
    builds = []
    real_meta = config_checks.meta_model
    monkeypatch.setattr(config_checks, "meta_model", lambda *a, **k: builds.append(1) or real_meta(*a, **k))
    load_model(model_copy)
    assert builds == [1] and json.loads(record.read_text(encoding="utf-8"))["parameters"] > 0
