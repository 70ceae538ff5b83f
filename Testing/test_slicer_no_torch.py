"""Nothing imports torch until a run or the device list (issue 19): Slicer imports our module and effect at
start-up and builds the effect's options for every Segment Editor, and users who never run KnowledgeSAM must
not pay seconds for torch. slicer_no_torch_probe.py does all of that, and a run from the panel (the engine
runs in the inference process), in a fresh interpreter where importing torch raises; the device list offers
its choices without torch until the user opens it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "KnowledgeSAM"))

from KnowledgeSAMSlicer import devices  # noqa: E402


def test_module_panel_and_effect_open_without_torch():
    probe = subprocess.run([sys.executable, str(Path(__file__).with_name("slicer_no_torch_probe.py"))],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    assert probe.stdout.split()[-2:] == ["no", "torch"]
    for step in ("imported the module", "imported the effect", "built the panel", "built the effect",
                 "ran a segmentation"):
        assert step in probe.stdout


def test_the_device_list_before_torch_offers_auto_cpu_and_the_remembered_gpu():
    assert [c.value for c in devices.defaultDevices()] == ["auto", "cpu"]
    assert [c.value for c in devices.defaultDevices("cuda:1")] == ["auto", "cuda:1", "cpu"]
    assert all(choice.label and choice.tooltip for choice in devices.defaultDevices("mps"))
