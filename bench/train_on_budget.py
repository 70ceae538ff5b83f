#!/usr/bin/env python
"""Train a config for a fixed wall-clock budget: measure the step rate first, then size the schedule.

A lent GPU comes for minutes, not for a number of steps, and its step rate is unknown until measured. This
script runs a short calibration (the config's model, data and batch; no validation, no run folder kept),
sets ``optim.steps_per_epoch`` so that ``optim.epochs`` epochs plus their validations fill ``--minutes``, writes
that *effective* config (``--write-config``; this is the file to commit, and ``knowledgesam train --config``
on it reproduces the run) and then trains with the project's own Trainer. The warmup/poly schedule therefore
always completes: a run cut off by a timer would stop at a high learning rate.

    python bench/train_on_budget.py --config configs/default_model_stage5_gpu.yaml --minutes 6 \
        --write-config /tmp/effective.yaml
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402

from KnowledgeSAMLib.train.config import apply_overrides, config_to_dict, load_config  # noqa: E402
from KnowledgeSAMLib.train.sources import build_sources  # noqa: E402
from KnowledgeSAMLib.train.trainer import Trainer, build_train_model  # noqa: E402


def size_schedule(budget_s: float, steps_per_s: float, epochs: int, val_s_per_epoch: float,
                  warmup_steps: int) -> int:
    """Steps per epoch so that ``epochs`` × (steps / rate + one validation) fits ``budget_s``."""
    train_s = budget_s - epochs * val_s_per_epoch
    steps = int(train_s * steps_per_s / epochs)
    if steps * epochs <= warmup_steps:
        raise SystemExit(f"train_on_budget: {budget_s:.0f} s allows only {steps * epochs} steps at "
                         f"{steps_per_s:.2f} steps/s, not more than the {warmup_steps} warmup steps")
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--minutes", type=float, required=True, help="wall budget of the real run")
    parser.add_argument("--calibration-steps", type=int, default=60)
    parser.add_argument("--write-config", required=True, help="where the effective (sized) config goes")
    parser.add_argument("--report", help="JSON with the calibration numbers")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting as `knowledgesam train --set` does (kept in the written config)")
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    if args.set:
        cfg = apply_overrides(cfg, list(args.set))
    t0 = time.perf_counter()
    calibration_model = build_train_model(cfg)  # trained by the calibration, then dropped
    model_size = int(calibration_model.config.image_size)
    sources = build_sources(cfg.data.sources, model_size, cfg.data.cache_dir)
    data_s = time.perf_counter() - t0

    calib = copy.deepcopy(cfg)
    calib.optim.epochs, calib.optim.steps_per_epoch = 1, args.calibration_steps
    calib.optim.warmup_steps = min(calib.optim.warmup_steps, args.calibration_steps // 2)
    with tempfile.TemporaryDirectory() as tmp:
        calib.run.out_dir = str(Path(tmp) / "calibration")
        t1 = time.perf_counter()
        result = Trainer(calib, model=calibration_model, sources=sources).fit()
        calib_wall = time.perf_counter() - t1
    # one validation pass plus model build and saving: everything but the training steps
    overhead_s = max(calib_wall - result.steps / result.steps_per_s, 0.0)
    steps = size_schedule(args.minutes * 60, result.steps_per_s, cfg.optim.epochs, overhead_s,
                          cfg.optim.warmup_steps)
    cfg.optim.steps_per_epoch = steps
    effective = config_to_dict(cfg)
    header = (f"# Effective config written by bench/train_on_budget.py --minutes {args.minutes:g} from {args.config}:\n"
              f"# calibration {result.steps_per_s:.2f} steps/s, {overhead_s:.1f} s validation+save per epoch\n"
              f"# -> optim.steps_per_epoch = {steps}. `knowledgesam train --config <this file>` reproduces the run.\n")
    Path(args.write_config).write_text(header + yaml.safe_dump(effective, sort_keys=False), encoding="utf-8")
    report = {"data_s": data_s, "calibration_steps_per_s": result.steps_per_s, "calibration_wall_s": calib_wall,
              "overhead_s_per_epoch": overhead_s, "steps_per_epoch": steps, "epochs": cfg.optim.epochs}
    print(json.dumps(report), flush=True)

    t2 = time.perf_counter()
    final = Trainer(cfg, sources=sources, progress=_print_progress).fit()
    report.update(train_wall_s=time.perf_counter() - t2, steps=final.steps, steps_per_s=final.steps_per_s,
                  first_loss=final.first_loss, last_loss=final.last_loss, last_val=final.val)
    print(json.dumps(report), flush=True)
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


def _print_progress(event: str, done: int, total: int, info: dict) -> None:
    if event == "val" or (event == "step" and done % 500 == 0):
        print(f"[{time.strftime('%H:%M:%S')}] {event} {done}/{total} {json.dumps(info, default=str)[:300]}",
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
