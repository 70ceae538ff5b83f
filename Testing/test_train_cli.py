"""`knowledgesam train`: describe, errors, export with a model card, and a 2-process torchrun run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from KnowledgeSAMLib.cli import main

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- generated below by `knowledgesam train --describe`"


def test_describe_lists_settings_and_docs_are_current(capsys):
    assert main(["train", "--describe"]) == 0
    text = capsys.readouterr().out
    assert "`optim.lr`" in text and "`data.sources[*].kind`" in text
    doc = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    generated = doc.split(MARKER, 1)[1].split("\n", 1)[1]
    assert generated.strip() == text.strip(), "docs/training.md is stale: regenerate it with --describe"


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["train"]) == 2
    assert "--config FILE or --data DIR is required" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {sources: [{kind: kidney_phantom}]}\noptim: {lr: -1}\n", encoding="utf-8")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"knowledgesam: error: {bad}: optim.lr: must be > 0, got -1.0"
    assert main(["train", "--config", str(REPO / "configs" / "tiny_smoke.yaml"), "--set", "optim.nope=1"]) == 2
    assert "--set: optim.nope: unknown setting" in capsys.readouterr().err


def _tiny_run(tmp_path, name="run"):
    """A 4-step run of the smoke config (phantom data, tiny model)."""
    out = tmp_path / name
    code = main(["train", "--config", str(REPO / "configs" / "tiny_smoke.yaml"), "--out", str(out), "--no-progress",
                 "--set", "optim.epochs=1", "--set", "optim.steps_per_epoch=4", "--set", "optim.warmup_steps=1",
                 "--set", "data.sources.0.train_cases=2", "--set", "data.sources.0.shape=[12, 32, 32]",
                 "--set", "data.sources.1.size=48", "--set", "run.device=cpu", "--set", "run.log_every=2"])
    assert code == 0
    return out


def test_train_then_export_with_model_card(tmp_path, capsys):
    run = _tiny_run(tmp_path)
    assert "trained 4 steps" in capsys.readouterr().out
    data = json.loads((run / "data.json").read_text(encoding="utf-8"))
    assert data["kidney_phantom"]["train_cases"] == ["kidney_phantom_0000", "kidney_phantom_0001"]
    assert data["kidney_phantom"]["val_cases"] == ["kidney_phantom_1000"]
    dest = tmp_path / "shipped"
    assert main(["train", "--export", str(run), "--out", str(dest)]) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["LICENSE.md", "MODEL_CARD.md", "config.json",
                                                       "model.safetensors", "training.json"]
    assert "licen" in (dest / "LICENSE.md").read_text(encoding="utf-8").lower()
    card = (dest / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "kidney_phantom_1000" in card and "seeds >= 5000" in card and "| mean |" in card
    record = json.loads((dest / "training.json").read_text(encoding="utf-8"))
    assert record["summary"]["steps"] == 4 and record["data"] == data
    from KnowledgeSAMLib.model.registry import resolve_model

    assert resolve_model(dest).config.name == "tiny"
    capsys.readouterr()
    assert main(["train", "--export", str(run), "--out", str(dest)]) == 2
    assert "already holds a model; pass --overwrite" in capsys.readouterr().err
    assert main(["train", "--export", str(run), "--out", str(dest), "--overwrite"]) == 0
    # the shipped folder carries the SHA256 of exactly its weights, also when the run's folder had none (older runs)
    import hashlib

    def recorded_and_real(folder):
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return config.get("weights_sha256"), hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    assert recorded_and_real(dest)[0] == recorded_and_real(dest)[1] == recorded_and_real(run / "model")[0]
    old_config = json.loads((run / "model" / "config.json").read_text(encoding="utf-8"))
    del old_config["weights_sha256"]
    (run / "model" / "config.json").write_text(json.dumps(old_config), encoding="utf-8")
    capsys.readouterr()
    assert main(["train", "--export", str(run), "--out", str(dest), "--overwrite"]) == 0
    assert recorded_and_real(dest)[0] == recorded_and_real(dest)[1]


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    knowledgesam = shutil.which("knowledgesam", path=os.path.dirname(sys.executable))
    if not torchrun or not knowledgesam:
        pytest.skip("torchrun / knowledgesam console scripts not installed")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "--no-python", knowledgesam, "train",
         "--config", str(REPO / "configs" / "tiny_smoke.yaml"), "--out", str(out), "--no-progress",
         "--set", "optim.epochs=1", "--set", "optim.steps_per_epoch=4", "--set", "optim.warmup_steps=1",
         "--set", "data.sources.0.train_cases=2", "--set", "data.sources.0.shape=[12, 32, 32]",
         "--set", "data.sources.1.size=48", "--set", "run.device=cpu", "--set", "run.log_every=2",
         "--set", f"data.cache_dir={tmp_path / 'cache'}"],
        env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 4 steps") == 1  # only rank 0 reports
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2  # rank 0 filled the cache once per source
