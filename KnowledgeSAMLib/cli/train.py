"""``knowledgesam train``: train a KSAM model (single process, or DDP under torchrun).

Examples::

    knowledgesam train --data my_cases --out ~/.local/share/knowledgesam/models/my_kidneys   # your own cases
    knowledgesam train --data my_cases --structures liver,spleen --model lite --steps 2000 --out models/liver
    knowledgesam train --config configs/tiny_smoke.yaml --out runs/smoke
    knowledgesam train --config configs/tiny_smoke.yaml --out runs/smoke --resume
    knowledgesam train --config configs/default_model.yaml --set optim.lr=2e-4 --set run.device=cuda
    torchrun --nproc_per_node 2 --no-python knowledgesam train --config configs/tiny_smoke.yaml
    knowledgesam train --describe            # every config setting, with its meaning
    knowledgesam train --export runs/default_model --out Resources/Models/default --overwrite

With ``--data DIR`` the run writes its full config to ``OUT/train_config.yaml`` (``--config`` on that file runs
it again), trains in ``OUT/run``, scores the held-out test cases before and after, and leaves a model folder in
``OUT`` (``--model OUT`` and the Slicer module take it). Ctrl-C saves a checkpoint at the current step and
stops; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import KnowledgeSAMError

__all__ = ["register", "run"]


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated structure names such as liver,spleen; got {text!r}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a KSAM model on a folder of your own labelled cases, or from a YAML/JSON config",
        description="Train a KSAM model: on a folder of labelled cases (--data DIR --out MODEL_DIR) or from a "
                    "YAML/JSON config (--config; see --describe). Under torchrun every process runs this same "
                    "command; rank 0 writes logs, checkpoints and the model.")
    parser.add_argument("--config", metavar="FILE", help="training config (.yaml, .yml or .json)")
    parser.add_argument("--out", metavar="DIR", help="run folder (overrides run.out_dir); with --data: the model "
                                                     "folder to write (its run goes into DIR/run)")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="continue a run: its latest checkpoint (no value) or the given checkpoint folder")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set optim.lr=3e-4 (repeatable; value parsed as YAML)")
    parser.add_argument("--describe", action="store_true", help="print every config setting and exit")
    parser.add_argument("--export", metavar="RUN_DIR",
                        help="instead of training: copy a finished run's model with a model card to --out "
                             "(default: the embedded default model folder, Resources/Models/default)")
    parser.add_argument("--overwrite", action="store_true", help="with --export: replace an existing model")
    parser.add_argument("--standalone", action="store_true",
                        help="with --export: also store the frozen pretrained weights (float16), so the folder "
                             "needs no other package at run time (how the default model ships)")
    parser.add_argument("--record-hash", metavar="MODEL_DIR",
                        help="instead of training: add the SHA256 of MODEL_DIR's weights to its config.json (model "
                             "folders saved before it was recorded), after checking that the weights load")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    own = parser.add_argument_group("your own data (--data)")
    own.add_argument("--data", metavar="DIR", type=Path,
                     help="folder of labelled cases: volumes + label maps / .seg.nrrd, or 2D images + masks, paired "
                          "by file name (docs/training.md, 'Your own data')")
    own.add_argument("--structures", type=_names, default=[], metavar="A,B",
                     help="structures to train on (default: every structure found)")
    own.add_argument("--model", default="default",
                     help="start from 'default', a model folder, or a preset: lite, small, vit_b (default: default)")
    own.add_argument("--steps", type=int, default=None, help="optimiser steps (default 600)")
    own.add_argument("--trainable", choices=("model", "heads", "lora"), default="model",
                     help="which parts learn: as the model says, only the heads, or only LoRA (default model)")
    own.add_argument("--seed", type=int, default=0, help="seed of the patient split and of training (default 0)")
    own.add_argument("--labels", metavar="TABLE", help="label table (JSON/YAML) naming the label values")
    own.add_argument("--patients", metavar="REGEX", help="regular expression giving the patient ID of a case name")
    own.add_argument("--val-cases", type=int, default=None, help="validation patients (default about 10%%)")
    own.add_argument("--test-cases", type=int, default=None, help="held-out test patients (default about 20%%)")
    own.add_argument("--sam-checkpoint", metavar="FILE", help="SAM ViT-B checkpoint for --model vit_b")
    own.add_argument("--strict", action="store_true", help="stop at the first data problem instead of leaving "
                                                           "the case out")
    own.add_argument("--dry-run", action="store_true", help="check the folder, write the config and the split, "
                                                            "name every data problem, and stop before training")
    own.add_argument("--no-evaluate", action="store_true",
                     help="skip scoring the held-out test cases before and after training")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.config import apply_overrides, describe, load_config

    if args.describe:
        print(describe())
        return 0
    if args.record_hash:
        from ..model.weights import record_weights_hash

        print(f"{args.record_hash}: weights SHA256 {record_weights_hash(args.record_hash)} recorded in config.json")
        return 0
    if args.export:
        from ..train.export import export_model

        dest = export_model(args.export, args.out, overwrite=args.overwrite, standalone=args.standalone)
        print(f"exported {args.export} to {dest}")
        return 0
    if args.data:
        from ._train_data import run_data

        return run_data(args)
    if not args.config:
        raise KnowledgeSAMError("train: --config FILE or --data DIR is required (see --describe for the settings)")
    cfg = load_config(args.config)
    if args.set:
        cfg = apply_overrides(cfg, list(args.set))
    if args.out:
        cfg.run.out_dir = args.out  # taken verbatim (not parsed as YAML like --set values)

    from ..train.distributed import init_distributed, shutdown
    from ._train_run import train

    ctx = init_distributed(cfg.run.device)
    try:
        train(cfg, args, ctx)
        return 0
    finally:
        shutdown(ctx)
