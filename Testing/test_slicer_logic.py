"""``KnowledgeSAMLogic`` (the console API of the Slicer module) on slicer-core, outside Slicer.

slicer-core has MRML but not the scripted-module base classes, the parameter node wrapper, Qt or
``slicer.app``. The Logic is GUI-free, so importing KnowledgeSAM.py with minimal stand-ins for those
(below) runs its real code: argument order, model loading and caching, delegation to
KnowledgeSAMLib.mrml. The widget and the self-test need real Slicer (``Slicer --testing``, see
docs/slicer.md).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from KnowledgeSAMLib import mrml  # noqa: E402
from KnowledgeSAMLib.errors import InputError  # noqa: E402

from test_slicer_mrml import add_segment, add_volume, copy_engine, new_segmentation, segment_state  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _stub_modules(monkeypatch):
    """Just enough of Slicer's Python layer for KnowledgeSAM.py to import (no behaviour is faked for
    anything the Logic uses: MRML and KnowledgeSAMLib are real)."""
    qt = types.ModuleType("qt")
    qt.QTimer = qt.QSettings = qt.QListWidgetItem = qt.QPixmap = qt.QColor = qt.QIcon = object
    qt.Qt = types.SimpleNamespace(UserRole=32, ItemIsUserCheckable=16, Checked=2, Unchecked=0)
    monkeypatch.setitem(sys.modules, "qt", qt)

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            pass

    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleTest"):
        setattr(scripted, name, type(name, (), {}))
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", scripted)

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = wrapper.Minimum = lambda *args, **kwargs: None
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", wrapper)

    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    monkeypatch.setitem(sys.modules, "slicer.i18n", i18n)
    monkeypatch.syspath_prepend(str(ROOT / "KnowledgeSAM"))


@pytest.fixture()
def KnowledgeSAM(monkeypatch):
    _stub_modules(monkeypatch)
    spec = importlib.util.spec_from_file_location("KnowledgeSAM", ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "KnowledgeSAM", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def nodes():
    scene = mrml.headless_scene()
    rng = np.random.default_rng(2)
    volume = add_volume(scene, rng.normal(0, 10, (8, 32, 32)).astype(np.int16), np.diag([0.7, 0.7, 2.0, 1.0]), "ct")
    reference = new_segmentation(scene, volume, "reference")
    zz, yy, xx = np.mgrid[:8, :32, :32]
    disc = ((yy - 16) ** 2 + (xx - 15) ** 2 < 40) & (zz == 4)
    kidney = add_segment(reference, disc.astype(np.uint8), volume, "kidney", (0.7, 0.3, 0.2))
    return scene, volume, reference, kidney


def test_logic_segment_console_api_with_stand_in_engine(KnowledgeSAM, nodes):
    scene, volume, reference, kidney = nodes
    logic = KnowledgeSAM.KnowledgeSAMLogic()
    output = new_segmentation(scene, volume, "existing")
    other = add_segment(output, np.ones((8, 32, 32), np.uint8), volume, "body", (0.1, 0.1, 0.1))
    before = segment_state(output)[other]
    calls = []
    result = logic.segment(volume, volume, reference, ["kidney"], output, 4, "axial", "anchor", "cpu",
                           lambda done, total: calls.append(done), None, engine=copy_engine)
    assert result is output and calls == [1]
    assert segment_state(output)[other] == before
    segment_id = output.GetSegmentation().GetSegmentIdBySegmentName("kidney")
    np.testing.assert_array_equal(
        mrml.labels_from_segmentation_node(output, [segment_id], volume).layers[0] != 0,
        mrml.labels_from_segmentation_node(reference, [kidney], volume).layers[0] != 0)
    with pytest.raises(InputError, match="no voxels on reference slice 0"):
        logic.segment(volume, volume, reference, ["kidney"], referenceSliceIndex=0, engine=copy_engine)


def test_logic_with_real_engine_and_cached_model(KnowledgeSAM, nodes, monkeypatch):
    pytest.importorskip("torch")
    from KnowledgeSAMLib.model import registry

    scene, volume, reference, kidney = nodes
    loads = []
    real_resolve = registry.resolve_model

    def counting_resolve(name, sam_checkpoint=None, **kwargs):
        loads.append(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return real_resolve(name, sam_checkpoint=sam_checkpoint, **kwargs)

    monkeypatch.setattr(registry, "resolve_model", counting_resolve)
    from KnowledgeSAMSlicer.worker import sharedModelCache

    sharedModelCache().clear()
    logic = KnowledgeSAM.KnowledgeSAMLogic()
    first = logic.segment(volume, None, reference, [], referenceSliceIndex=4, mode="anchor", device="cpu", model="tiny")
    second = logic.segment(volume, volume, reference, ["kidney"], mode="propagate", device="cpu", model="tiny")
    assert loads == ["tiny"], "the model must be loaded once and reused"
    assert first is not second and first.GetName() == "ct KnowledgeSAM" and second.GetName() == "ct KnowledgeSAM_1"
    for output in (first, second):
        labels = mrml.labels_from_segmentation_node(output, None, volume)
        assert [s.name for s in labels.segments] == ["kidney"]
        np.testing.assert_array_equal(labels.layers[0][4] != 0,
                                      mrml.labels_from_segmentation_node(reference, None, volume).layers[0][4] != 0)
    sharedModelCache().clear()
