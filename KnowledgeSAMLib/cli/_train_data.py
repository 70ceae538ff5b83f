"""``knowledgesam train --data DIR --out MODEL_DIR``: train on a folder of your own labelled cases.

Steps: make the full config (``train/quick.py``) and write it to ``MODEL_DIR/train_config.yaml``; train in
``MODEL_DIR/run`` (``split.json`` there lists which cases trained, validated and are held out); score the
held-out test cases with the starting model and the trained one through the engine (``run/held_out.json``);
write the model, ``training.json`` and ``MODEL_CARD.md`` into ``MODEL_DIR``. ``--resume`` reads the written
config back instead of making a new one, so a changed folder cannot change a run half-way.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..errors import InputError

__all__ = ["run_data"]


def _options(args: argparse.Namespace, out: Path):
    from ..train.quick import DEFAULT_STEPS, QuickOptions

    return QuickOptions(data=args.data, out=out, structures=list(args.structures), model=args.model,
                        steps=args.steps or DEFAULT_STEPS, seed=args.seed, strict=args.strict, labels=args.labels,
                        patients=args.patients, val_cases=args.val_cases, test_cases=args.test_cases,
                        trainable=args.trainable, sam_checkpoint=args.sam_checkpoint)


def _start_note(cfg) -> str:
    """Which model the run starts from, with the hash of its weights when it is a trained one."""
    if not cfg.model.init_from:
        return f"the {cfg.model.name} preset (new heads)"
    from ..model.registry import DEFAULT_MODEL_NAME, default_model_dir
    from ..model.weights import model_hash

    folder = default_model_dir() if cfg.model.init_from == DEFAULT_MODEL_NAME else Path(cfg.model.init_from)
    try:
        return f"{cfg.model.init_from} ({folder}, weights SHA256 {model_hash(folder)[:16]})"
    except OSError:
        return f"{cfg.model.init_from} ({folder})"


def _write_config(cfg, out: Path) -> Path:
    import yaml

    from ..train.config import config_to_dict
    from ..train.quick import CONFIG_FILE

    out.mkdir(parents=True, exist_ok=True)
    path = out / CONFIG_FILE
    header = [f"# Written by: knowledgesam {shlex.join(sys.argv[1:]) if sys.argv[1:] else 'train --data'}",
              f"# Starts from: {_start_note(cfg)}",
              f"# Run it again: knowledgesam train --config {path} --out OTHER_RUN_FOLDER",
              "# Every setting: knowledgesam train --describe", ""]
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None, width=110)
    path.write_text("\n".join(header) + text, encoding="utf-8")
    return path


def _dry_run(cfg) -> None:
    """Scan, split and read every training and validation case, naming each problem; no training."""
    from ..train.folder_source import DataReport, FolderSource

    run_dir = Path(cfg.run.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    splits = {}
    for i, src in enumerate(cfg.data.sources):
        report = DataReport(cfg.data.strict, warn=lambda line: print(f"data: {line}", file=sys.stderr))
        folder = FolderSource(src, report)
        read = sum(1 for volumes in folder.volumes()[:2] for _ in volumes)
        folder.finish()
        split = folder.split
        print(f"{src.root}: {len(folder.scan.cases)} cases of {len({c.patient for c in folder.scan.cases})} "
              f"patients; split by patient: {len(split.train)} train, {len(split.val)} validation, "
              f"{len(split.test)} test; {read} training/validation cases read, {len(report.lines)} problem line(s); "
              f"structures: {', '.join(folder.tasks()) or 'none'}")
        splits[f"{src.kind}#{i + 1}" if len(cfg.data.sources) > 1 else src.kind] = folder.record()
    (run_dir / "split.json").write_text(json.dumps(splits, indent=1), encoding="utf-8")
    print(f"split: {run_dir / 'split.json'}")


def _score(cfg, run_dir: Path, no_before: bool) -> dict:
    """Held-out Dice of the starting and the trained model on the test cases of split.json."""
    from ..model.registry import resolve_model
    from ..model.weights import load_model
    from ..train.export import HELD_OUT_FILE
    from ..train.heldout import held_out_dice

    src = cfg.data.sources[0]
    split = run_dir / "split.json"
    say = lambda line: print(f"  {line}", flush=True)  # noqa: E731
    record = {"start_model": _start_note(cfg)}
    if cfg.model.init_from and not no_before:
        print("held-out test cases, starting model:", flush=True)
        start = resolve_model(cfg.model.init_from, sam_checkpoint=cfg.model.sam_checkpoint)
        record["before"] = held_out_dice(start, src, split, cfg.run.device, progress=say)
    print("held-out test cases, trained model:", flush=True)
    record["after"] = held_out_dice(load_model(run_dir / "model"), src, split, cfg.run.device, progress=say)
    (run_dir / HELD_OUT_FILE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def _has_test_cases(run_dir: Path) -> bool:
    try:
        splits = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(entry.get("patients", {}).get("test") for entry in splits.values())


def run_data(args: argparse.Namespace) -> int:
    from ..train.config import apply_overrides, load_config
    from ..train.distributed import init_distributed, shutdown
    from ..train.export import write_model_files
    from ..train.quick import CONFIG_FILE, folder_config
    from ._train_run import train

    if args.config:
        raise InputError("train: give --data DIR or --config FILE, not both")
    if not args.out:
        raise InputError("train: --data needs --out MODEL_DIR (the model folder to write)")
    out = Path(args.out).expanduser()
    if (out / "model.safetensors").exists() and not args.resume and not args.dry_run:
        raise InputError(f"{out}: already holds a model; choose another --out (or --resume an unfinished run)")
    if args.resume:
        cfg = load_config(out / CONFIG_FILE)
    else:
        cfg = folder_config(_options(args, out))
        if args.set:
            cfg = apply_overrides(cfg, list(args.set))
    ctx = init_distributed(cfg.run.device)
    try:
        if ctx.is_main and not args.resume:
            print(f"config: {_write_config(cfg, out)}")
        if args.dry_run:
            if ctx.is_main:
                _dry_run(cfg)
            return 0
        train(cfg, args, ctx)
        if not ctx.is_main:
            return 0
        run_dir = Path(cfg.run.out_dir)
        held = None
        if not args.no_evaluate and _has_test_cases(run_dir):
            held = _score(cfg, run_dir, no_before=False)
        write_model_files(run_dir, out)
        if held is not None:
            before, after = held.get("before", {}).get("mean"), held["after"]["mean"]
            print(f"held-out mean Dice ({len(held['after']['cases'])} test cases): "
                  + (f"{before:.3f} before -> " if before is not None else "") + f"{after:.3f} after")
        print(f"model: {out} (knowledgesam segment --model {out} ...; in Slicer: Model and device, Model folder)")
        return 0
    finally:
        shutdown(ctx)
