"""Run by test_slicer_no_torch.py in a fresh interpreter with torch blocked: what Slicer does when it starts
and when a user opens our module or any Segment Editor must not import torch.

Qt and Slicer's application layer are stand-ins (``unittest.mock.MagicMock`` widgets, the stubs of
slicer_stubs.py); MRML is slicer-core's. Steps, each printed: import the module file (KnowledgeSAM.py) and
the effect file; build the module; build the panel (``KnowledgeSAMWidget.setup()``, which also creates the
Logic, the presenter, the device list and the dependency status); build the effect's options
(``setupOptionsFrame()``) and ask it for its options; Apply a segmentation from the panel (the engine, a
stand-in, runs in the inference process: Slicer's own process needs no torch even for a run). Any attempt
to import torch here raises; the probe exits 0 only if every step ran and torch is still absent.
"""

import importlib.abc
import sys
import types
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
attempts = []


class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            attempts.append(name)
            raise ImportError(f"torch is blocked in this test ({name})")
        return None


def parameter_node_wrapper(cls):
    """A stand-in for Slicer's @parameterNodeWrapper: fields with their defaults, no-op GUI connection."""
    fields = dict(getattr(cls, "__annotations__", {}))

    class Wrapped:
        def __init__(self, node=None):
            for name in fields:
                setattr(self, name, getattr(cls, name, None))

        def connectGui(self, ui):
            return "tag"

        def disconnectGui(self, tag):
            pass

    Wrapped.__name__ = cls.__name__
    for name in fields:
        setattr(Wrapped, name, getattr(cls, name, None))
    return Wrapped


def stub_application(monkeypatch):
    import slicer
    from slicer_stubs import stub_slicer_python_layer

    stub_slicer_python_layer(monkeypatch)
    monkeypatch.setitem(sys.modules, "qt", mock.MagicMock(name="qt"))
    monkeypatch.setitem(sys.modules, "ctk", mock.MagicMock(name="ctk"))
    sys.modules["slicer.parameterNodeWrapper"].parameterNodeWrapper = parameter_node_wrapper
    scripted = sys.modules["slicer.ScriptedLoadableModule"]

    class Widget:
        def __init__(self, parent=None):
            self.parent = mock.MagicMock(name="parent")
            self.layout = mock.MagicMock(name="layout")

        def setup(self):
            pass

        def resourcePath(self, relative):
            return str(ROOT / "KnowledgeSAM" / "Resources" / relative)

    scripted.ScriptedLoadableModuleWidget = Widget
    scripted.ScriptedLoadableModuleLogic.getParameterNode = lambda self: None
    scripted.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {
        "__init__": lambda self, parent: setattr(self, "parent", parent)})
    effects = types.ModuleType("SegmentEditorEffects")
    effects.AbstractScriptedSegmentEditorEffect = type("AbstractScriptedSegmentEditorEffect", (), {
        "__init__": lambda self, scriptedEffect: setattr(self, "scriptedEffect", scriptedEffect)})
    monkeypatch.setitem(sys.modules, "SegmentEditorEffects", effects)
    for name in ("app", "mrmlScene", "modules", "qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget"):
        monkeypatch.setattr(slicer, name, mock.MagicMock(name=name), raising=False)
    for name in ("loadUI", "childWidgetVariables", "settingsValue", "mainWindow", "VTKObservationMixin"):
        monkeypatch.setattr(slicer.util, name, mock.MagicMock(name=name), raising=False)
    slicer.util.settingsValue.side_effect = lambda key, default=None, **kwargs: default
    ui = mock.MagicMock(name="ui")
    ui.deviceComboBox.findData.return_value = -1
    slicer.util.childWidgetVariables.return_value = ui
    monkeypatch.setattr(slicer.util, "VTKObservationMixin", type("VTKObservationMixin", (), {
        "__init__": lambda self: None, "addObserver": lambda self, *a: None,
        "removeObserver": lambda self, *a: None, "removeObservers": lambda self: None}))


def run_in_the_inference_process(widget):
    """Apply from the panel's presenter on slicer-core nodes: checks and write-back happen here, the engine (a
    stand-in) in the inference process, so Slicer's own process needs no torch for a run either."""
    import time

    import numpy as np

    from KnowledgeSAMLib import mrml
    from KnowledgeSAMSlicer import standins
    from test_slicer_mrml import add_segment, add_volume, new_segmentation

    scene = mrml.headless_scene()
    volume = add_volume(scene, np.zeros((6, 16, 16), np.int16), np.eye(4), "ct")
    reference = new_segmentation(scene, volume, "reference")
    mask = np.zeros((6, 16, 16), np.uint8)
    mask[2, 4:9, 4:9] = 1
    segmentId = add_segment(reference, mask, volume, "kidney")
    parameters = widget._parameterNode
    parameters.targetVolume, parameters.referenceSegmentation = volume, reference
    widget._checklist = mock.MagicMock(checkedIds=lambda: [segmentId])
    assert widget.presenter.apply("cpu", engine=standins.copyEngine), widget.ui.statusLabel.text
    deadline = time.monotonic() + 120
    while widget.presenter.busy and time.monotonic() < deadline:
        widget._monitor.poll()
        time.sleep(0.01)
    assert parameters.outputSegmentation is not None, widget.ui.statusLabel.text


def main():
    sys.meta_path.insert(0, BlockTorch())
    import pytest

    from slicer_stubs import load_module

    monkeypatch = pytest.MonkeyPatch()
    stub_application(monkeypatch)
    module = load_module(monkeypatch, "KnowledgeSAM", ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")
    print("imported the module")
    effectFile = load_module(monkeypatch, "SegmentEditorEffect",
                             ROOT / "SegmentEditorKnowledgeSAM" / "SegmentEditorKnowledgeSAMLib" / "SegmentEditorEffect.py")
    print("imported the effect")
    module.KnowledgeSAM(mock.MagicMock(name="parent"))
    widget = module.KnowledgeSAMWidget()
    widget.setup()
    assert widget.presenter is not None and widget.logic is not None
    print("built the panel")
    effect = effectFile.SegmentEditorEffect(mock.MagicMock(name="scriptedEffect"))
    effect.setupOptionsFrame()
    effect.options()
    assert effect.presenter is not None
    print("built the effect")
    run_in_the_inference_process(widget)
    print("ran a segmentation")
    leaked = sorted(name for name in sys.modules if name == "torch" or name.startswith("torch."))
    if attempts or leaked:
        print(f"torch was imported: attempts {attempts}, modules {leaked[:5]}")
        return 1
    print("no torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
