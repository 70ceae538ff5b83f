"""Model registry: the embedded default model folder, model folders, config names."""

from __future__ import annotations

import pytest

from KnowledgeSAMLib import build_model, save_model
from KnowledgeSAMLib.errors import WeightsError
from KnowledgeSAMLib.model import registry


@pytest.fixture()
def no_default(tmp_path, monkeypatch):
    monkeypatch.delenv(registry.ENV_MODEL_DIR, raising=False)
    monkeypatch.setattr(registry, "_REPO_MODEL_DIR", tmp_path / "repo" / "default")
    monkeypatch.setattr(registry, "_PACKAGE_MODEL_DIR", tmp_path / "pkg" / "default")
    return tmp_path


def test_default_dir_is_the_repository_resources_folder():
    assert registry._REPO_MODEL_DIR.parts[-3:] == ("Resources", "Models", "default")


def test_missing_default_model_is_a_clear_error(no_default):
    assert registry.default_model_dir() == no_default / "repo" / "default"
    with pytest.raises(WeightsError, match="embedded default model is missing"):
        registry.resolve_model("default")


def test_lookup_order_env_then_repository_then_package(no_default, monkeypatch):
    model = build_model("tiny")
    save_model(model, no_default / "pkg" / "default")
    assert registry.default_model_dir() == no_default / "pkg" / "default"
    save_model(model, no_default / "repo" / "default")
    assert registry.default_model_dir() == no_default / "repo" / "default"
    save_model(model, no_default / "env")
    monkeypatch.setenv(registry.ENV_MODEL_DIR, str(no_default / "env"))
    assert registry.default_model_dir() == no_default / "env"
    loaded = registry.resolve_model("default")
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert all((a[k] == b[k]).all() for k in a)


def test_folder_and_config_names(tmp_path):
    model = build_model("tiny")
    save_model(model, tmp_path / "m")
    assert registry.resolve_model(tmp_path / "m").config == model.config
    assert registry.resolve_model(str(tmp_path / "m")).config.name == "tiny"
    with pytest.warns(UserWarning, match="randomly initialised"):
        assert registry.resolve_model("tiny").config.image_size == 64
    with pytest.raises(WeightsError, match="not a model folder"):
        registry.resolve_model(tmp_path / "nothing-here")
