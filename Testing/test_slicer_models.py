"""The module's model selector (issue 21): the embedded default, the model folders in the user's model directory
(``KNOWLEDGESAM_USER_MODELS``), and a folder chosen in the path field. The folders are listed when 'Model and
device' opens (listing imports the model package, and torch), never when the panel opens
(test_slicer_no_torch.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "KnowledgeSAM"))

from KnowledgeSAMSlicer import models  # noqa: E402


def model_folder(root: Path, name: str, preset: str = "lite", size: int = 256) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": preset, "image_size": size}), encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"not read by the listing")
    return folder


def test_the_choices_list_the_users_model_folders(tmp_path):
    kidney = model_folder(tmp_path, "kidney-ct")
    (tmp_path / "notes").mkdir()  # not a model
    choices = models.modelChoices(models.userModels(tmp_path))
    assert [c.value for c in choices] == [models.DEFAULT_MODEL_VALUE, str(kidney), models.FOLDER_VALUE]
    assert choices[1].label == "kidney-ct (lite, 256 px)"
    assert models.modelPath(choices[1].value, "/ignored") == str(kidney)
    assert models.modelPath(models.FOLDER_VALUE, " /my/model ") == "/my/model"
    assert models.modelPath(models.DEFAULT_MODEL_VALUE, "/ignored") is None


def test_a_remembered_model_is_offered_before_the_folders_are_listed(tmp_path):
    kidney = str(model_folder(tmp_path, "kidney-ct"))
    before = models.modelChoices((), remembered=kidney)
    assert models.choiceIndex(before, kidney) == 1 and before[1].label == "kidney-ct (remembered)"
    after = models.modelChoices(models.userModels(tmp_path), remembered=kidney)
    assert len(after) == 3 and models.choiceIndex(after, kidney) == 1, "listed once, not twice"
    assert models.choiceIndex(after, models.FOLDER_VALUE) == 2 and models.choiceIndex(after, "") == 0


def test_the_panel_lists_the_users_models_when_model_and_device_opens(tmp_path, monkeypatch):
    import slicer_no_torch_probe as probe
    from slicer_stubs import load_module

    kidney = model_folder(tmp_path, "kidney-ct")
    monkeypatch.setenv("KNOWLEDGESAM_USER_MODELS", str(tmp_path))
    probe.stub_application(monkeypatch)
    module = load_module(monkeypatch, "KnowledgeSAM", ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")
    widget = module.KnowledgeSAMWidget()
    monkeypatch.setattr(widget, "listGpus", lambda: None)
    widget.setup()
    combo = widget.ui.modelComboBox
    labels = [c.args[0] for c in combo.addItem.call_args_list]
    assert "kidney-ct (lite, 256 px)" not in labels  # not at open
    combo.addItem.reset_mock()
    widget.onModelSectionCollapsed(False)
    assert mock.call("kidney-ct (lite, 256 px)", str(kidney)) in combo.addItem.call_args_list
