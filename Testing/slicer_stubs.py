"""Shared test helpers for the Slicer front-ends on slicer-core (not a test module).

slicer-core has Slicer's MRML but not its Python application layer (scripted-module base classes, the
parameter node wrapper, Qt). :func:`stub_slicer_python_layer` puts minimal stand-ins for those into
``sys.modules`` so that KnowledgeSAM.py imports and its Logic runs for real; :func:`load_module` imports a
Slicer-side file by path. ``FakeTimer``/``FakeBar``/``ViewRecorder`` stand in for the few Qt objects the
Qt-free presenters are given; :func:`drive` polls a job monitor as the 150 ms QTimer would.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120.0  # generous (shared machines); a hang still fails


def stub_slicer_python_layer(monkeypatch) -> None:
    """Just enough of Slicer's Python layer for KnowledgeSAM.py to import (no behaviour is faked for anything
    the Logic uses: MRML and KnowledgeSAMLib are real)."""
    qt = types.ModuleType("qt")
    qt.QTimer = qt.QSettings = qt.QListWidgetItem = qt.QPixmap = qt.QColor = qt.QIcon = object
    qt.Qt = types.SimpleNamespace(UserRole=32, ItemIsUserCheckable=16, Checked=2, Unchecked=0, ToolTipRole=3)
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


def load_module(monkeypatch, name: str, path: Path):
    """Import the file at ``path`` as module ``name`` (registered in sys.modules for the test)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


class FakeTimer:
    """A QTimer that never fires by itself: tests call :func:`drive`."""

    def __init__(self):
        self.active = False

    def setInterval(self, ms):
        self.interval = ms

    def connect(self, signal, slot):
        self.slot = slot

    def start(self):
        self.active = True

    def stop(self):
        self.active = False


class FakeBar:
    def __init__(self):
        self.visible, self.range, self.value = False, (0, 100), 0

    def setVisible(self, visible):
        self.visible = visible

    def setRange(self, low, high):
        self.range = (low, high)

    def setValue(self, value):
        self.value = value


class ViewRecorder:
    """The presenters' view: records status lines and error dialogs."""

    def __init__(self):
        self.statuses, self.errors, self.refreshes = [], [], 0

    def setStatus(self, text, error=False):
        self.statuses.append((text, error))

    def showError(self, text, details=None):
        self.errors.append((text, details))

    def refresh(self):
        self.refreshes += 1

    @property
    def status(self):
        return self.statuses[-1][0] if self.statuses else ""


def drive(monitor, until=None) -> None:
    """Poll ``monitor`` (as its QTimer would) until its job is done, or until ``until()`` is true."""
    deadline = time.monotonic() + WAIT_S
    while monitor.busy:
        if until is not None and until():
            return
        assert time.monotonic() < deadline, "the job did not finish"
        monitor.poll()
        time.sleep(0.01)
