"""bench/train_on_budget.py: size a schedule from a measured step rate, and write a config that reproduces it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.train_on_budget import main, size_schedule  # noqa: E402
from KnowledgeSAMLib.train.config import config_to_dict, load_config  # noqa: E402


def test_size_schedule_leaves_room_for_validation():
    # 600 s, 10 steps/s, 5 epochs with 20 s validation each: 500 s of training = 5000 steps = 1000 per epoch
    assert size_schedule(600, 10.0, 5, 20.0, warmup_steps=100) == 1000
    assert size_schedule(600, 10.0, 5, 0.0, warmup_steps=100) == 1200
    with pytest.raises(SystemExit, match="warmup"):
        size_schedule(60, 1.0, 5, 10.0, warmup_steps=100)


@pytest.mark.slow
def test_the_written_config_reproduces_the_sized_run(tmp_path):
    written, report = tmp_path / "effective.yaml", tmp_path / "report.json"
    out = tmp_path / "run"
    code = main(["--config", str(REPO / "configs" / "tiny_smoke.yaml"), "--minutes", "0.15",
                 "--calibration-steps", "6", "--write-config", str(written), "--report", str(report),
                 "--set", f"run.out_dir={out}", "--set", "run.device=cpu", "--set", "optim.epochs=1",
                 "--set", "optim.warmup_steps=2"])
    assert code == 0
    numbers = json.loads(report.read_text(encoding="utf-8"))
    effective = load_config(written)
    assert effective.optim.steps_per_epoch == numbers["steps_per_epoch"] == numbers["steps"] > 2
    assert effective.run.out_dir == str(out) and (out / "model" / "model.safetensors").is_file()
    expected = config_to_dict(load_config(REPO / "configs" / "tiny_smoke.yaml"))
    got = config_to_dict(effective)
    for section, key in (("optim", "steps_per_epoch"), ("optim", "epochs"), ("optim", "warmup_steps"),
                         ("run", "out_dir"), ("run", "device")):
        expected[section][key] = got[section][key]
    assert got == expected  # nothing else changed
