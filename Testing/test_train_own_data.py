"""`knowledgesam train --data DIR --out MODEL_DIR`: the generated config reproduces the run, the model folder
is usable and listed, held-out cases are scored before and after, bad data is named (or stops with --strict),
and the same works under torchrun with two processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from KnowledgeSAMLib import build_model, save_model
from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.data.io import write_image, write_labels
from KnowledgeSAMLib.data.phantoms import make_kidney_phantom
from KnowledgeSAMLib.train.config import config_from_dict, config_to_dict, load_config

FAST = ["--no-progress", "--set", "run.device=cpu", "--set", "validation.max_slices_per_case=2"]


def _cases(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        image, labels = make_kidney_phantom(i, shape=(10, 32, 32))
        write_image(image, root / f"case_{i:03d}_image.nii.gz")
        write_labels(labels, root / f"case_{i:03d}_labels.seg.nrrd")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _cases(tmp_path_factory.mktemp("own") / "cases")


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("start") / "tiny_model"
    save_model(build_model("tiny"), path)
    return path


def test_train_on_a_folder_writes_a_reproducible_config_and_a_model_folder(tmp_path, folder, start, capsys):
    out = tmp_path / "models" / "mine"
    assert main(["train", "--data", str(folder), "--model", str(start), "--steps", "4", "--structures",
                 "cortex,medulla", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "held-out mean Dice (1 test cases):" in printed and " before -> " in printed
    assert {"config.json", "model.safetensors", "MODEL_CARD.md", "training.json", "train_config.yaml", "run"} <= {
        p.name for p in out.iterdir()}
    written = load_config(out / "train_config.yaml")
    used = config_from_dict(json.loads((out / "run" / "config.json").read_text(encoding="utf-8")))
    assert config_to_dict(written) == config_to_dict(used)  # the file is the whole run
    assert written.model.init_from == str(start) and written.data.sources[0].tasks == ["cortex", "medulla"]
    assert written.data.sources[0].test_cases == 1 and written.data.sources[0].val_cases == 1
    held = json.loads((out / "run" / "held_out.json").read_text(encoding="utf-8"))
    assert set(held["before"]["dice"]) == {"cortex", "medulla"} == set(held["after"]["dice"])
    split = json.loads((out / "run" / "split.json").read_text(encoding="utf-8"))["volume_folder"]
    assert [c["case"] for c in held["after"]["cases"]] == [c["name"] for c in split["cases"]["test"]]
    assert "## Held-out test cases" in (out / "MODEL_CARD.md").read_text(encoding="utf-8")
    from KnowledgeSAMLib.model.registry import list_user_models, resolve_model

    assert resolve_model(out).config.name == "tiny"
    listed = list_user_models(tmp_path / "models")
    assert [m.name for m in listed] == ["mine"] and listed[0].trained_on == ("cortex", "medulla")
    # the written config runs again as a plain --config run
    assert main(["train", "--config", str(out / "train_config.yaml"), "--out", str(tmp_path / "again"), *FAST]) == 0
    assert main(["train", "--data", str(folder), "--model", str(start), "--out", str(out), *FAST]) == 2
    assert "already holds a model" in capsys.readouterr().err


def test_a_preset_start_has_no_before_score_and_resume_reads_the_written_config(tmp_path, folder, capsys):
    out = tmp_path / "fresh"
    args = ["train", "--data", str(folder), "--model", "tiny", "--steps", "3", "--out", str(out), *FAST]
    assert main(args) == 0
    held = json.loads((out / "run" / "held_out.json").read_text(encoding="utf-8"))
    assert "before" not in held and held["after"]["cases"]
    config = load_config(out / "train_config.yaml")
    assert config.model.name == "tiny" and config.optim.lr == 1e-3 and config.augment.enabled
    (out / "model.safetensors").unlink()
    assert main(["train", "--data", str(folder), "--out", str(out), "--resume", *FAST]) == 0  # finished: no steps


def test_dry_run_names_the_problems_and_strict_stops(tmp_path, capsys):
    root = _cases(tmp_path / "cases", 5)
    image, _ = make_kidney_phantom(9, shape=(10, 32, 32))
    write_image(image, root / "stray_image.nii.gz")
    (root / "bad_image.nii.gz").write_bytes(b"garbage")
    (root / "bad_labels.seg.nrrd").write_bytes(b"garbage")
    out = tmp_path / "dry"
    assert main(["train", "--data", str(root), "--model", "tiny", "--out", str(out), "--dry-run", *FAST]) == 0
    captured = capsys.readouterr()
    problems = [line for line in captured.err.splitlines() if line.startswith("data: ")]
    assert len(problems) == 2 and any("stray_image.nii.gz: no label file" in p for p in problems)
    assert any("bad_image.nii.gz" in p for p in problems)
    assert "split by patient" in captured.out
    assert (out / "run" / "split.json").is_file() and not (out / "run" / "train_log.csv").exists()
    assert main(["train", "--data", str(root), "--model", "tiny", "--out", str(tmp_path / "strict"), "--strict",
                 *FAST]) == 2
    err = capsys.readouterr().err
    assert "stray_image.nii.gz: no label file pairs with this image (stopping: data.strict" in err
    assert main(["train", "--data", str(root), "--config", "x.yaml", "--out", str(out)]) == 2


def test_an_image_folder_from_the_phantom_command(tmp_path, capsys):
    assert main(["phantom", "fundus", "--out", str(tmp_path / "eyes"), "--n", "6", "--size", "64"]) == 0
    out = tmp_path / "eyes_model"
    assert main(["train", "--data", str(tmp_path / "eyes"), "--model", "tiny", "--steps", "2", "--out", str(out),
                 *FAST]) == 0
    config = load_config(out / "train_config.yaml")
    assert config.data.sources[0].kind == "image_folder"
    held = json.loads((out / "run" / "held_out.json").read_text(encoding="utf-8"))
    assert set(held["after"]["dice"]) == {"disc", "cup"} and (out / "model.safetensors").is_file()


def test_a_frozen_encoder_trains_on_cached_embeddings(tmp_path, folder):
    """--trainable heads (or a lite model) fixes the encoder: views are randomised once, embeddings cached."""
    out = tmp_path / "heads"
    assert main(["train", "--data", str(folder), "--model", "lite_tiny", "--trainable", "heads", "--steps", "2",
                 "--out", str(out), "--no-evaluate", *FAST]) == 0
    config = load_config(out / "train_config.yaml")
    source = config.data.sources[0]
    assert config.data.embedding_cache_dir and not config.augment.enabled
    assert source.copies == 2 and source.randomise > 0 and source.max_slices == 12
    assert config.model.overrides == {"encoder_training": "frozen"}
    assert list(Path(config.data.embedding_cache_dir).glob("emb_volume_folder_*.f16"))
    assert not (out / "run" / "held_out.json").exists() and (out / "model.safetensors").is_file()


def test_user_models_are_listed_from_the_user_model_directory(tmp_path, monkeypatch, start):
    from KnowledgeSAMLib.model.registry import ENV_USER_MODELS, list_user_models, user_models_dir

    monkeypatch.setenv(ENV_USER_MODELS, str(tmp_path))
    assert user_models_dir() == tmp_path and list_user_models() == []
    shutil.copytree(start, tmp_path / "b_model")
    shutil.copytree(start, tmp_path / "a_model")
    (tmp_path / "notes").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"")
    (tmp_path / "broken" / "config.json").write_text("{not json", encoding="utf-8")
    listed = list_user_models()
    assert [(m.name, m.preset, m.image_size) for m in listed] == [("a_model", "tiny", 64), ("b_model", "tiny", 64)]
    from KnowledgeSAMLib import mrml

    assert [m.name for m in mrml.list_user_models()] == ["a_model", "b_model"]  # the Slicer panel's door


@pytest.mark.slow
def test_torchrun_two_processes_on_a_folder(tmp_path, folder, start):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    knowledgesam = shutil.which("knowledgesam", path=os.path.dirname(sys.executable))
    if not torchrun or not knowledgesam:
        pytest.skip("torchrun / knowledgesam console scripts not installed")
    out = tmp_path / "ddp_model"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "--no-python", knowledgesam, "train",
                           "--data", str(folder), "--model", str(start), "--steps", "4", "--out", str(out), *FAST],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 4 steps") == 1 and proc.stdout.count("held-out mean Dice") == 1
    summary = json.loads((out / "run" / "summary.json").read_text(encoding="utf-8"))
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_torchrun_stops_every_process_on_a_strict_data_problem(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    knowledgesam = shutil.which("knowledgesam", path=os.path.dirname(sys.executable))
    if not torchrun or not knowledgesam:
        pytest.skip("torchrun / knowledgesam console scripts not installed")
    root = _cases(tmp_path / "cases", 4)
    image, _ = make_kidney_phantom(9, shape=(10, 32, 32))
    write_image(image, root / "zz_stray_image.nii.gz")
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "--no-python", knowledgesam, "train",
                           "--data", str(root), "--model", "tiny", "--steps", "2", "--strict", "--out",
                           str(tmp_path / "m"), *FAST], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    assert proc.stderr.count("zz_stray_image.nii.gz: no label file pairs with this image (stopping") == 2
