"""``knowledgesam train --config FILE``: train a KSAM model (single process, or DDP under torchrun).

Examples::

    knowledgesam train --config configs/tiny_smoke.yaml --out runs/smoke
    knowledgesam train --config configs/tiny_smoke.yaml --out runs/smoke --resume
    knowledgesam train --config configs/default_model.yaml --set optim.lr=2e-4 --set run.device=cuda
    torchrun --nproc_per_node 2 --no-python knowledgesam train --config configs/tiny_smoke.yaml
    knowledgesam train --describe            # every config setting, with its meaning
    knowledgesam train --export runs/default_model --out Resources/Models/default --overwrite

Ctrl-C saves a checkpoint at the current step and stops; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import signal
import sys

from ..errors import KnowledgeSAMError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a KSAM model from a YAML/JSON config",
        description="Train a KSAM model from a YAML/JSON config (see --describe). Under torchrun every "
                    "process runs this same command; rank 0 writes logs, checkpoints and the model.")
    parser.add_argument("--config", metavar="FILE", help="training config (.yaml, .yml or .json)")
    parser.add_argument("--out", metavar="DIR", help="run folder (overrides run.out_dir)")
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
    if not args.config:
        raise KnowledgeSAMError("train: --config FILE is required (see --describe for the settings)")
    cfg = load_config(args.config)
    if args.set:
        cfg = apply_overrides(cfg, list(args.set))
    if args.out:
        cfg.run.out_dir = args.out  # taken verbatim (not parsed as YAML like --set values)

    from ..infer.cancel import CancelToken
    from ..train.distributed import init_distributed, shutdown
    from ..train.trainer import Trainer

    ctx = init_distributed(cfg.run.device)
    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    bar = None
    try:
        show = ctx.is_main and not args.no_progress
        if show:
            from tqdm import tqdm

            bar = tqdm(total=cfg.total_steps, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)

        def progress(event: str, done: int, total: int, info: dict) -> None:
            if bar is None:
                return
            if event == "data":
                bar.set_description(f"data {info.get('case', '')}"[:40])
            elif event == "embeddings":  # the frozen encoder fills its cache (slices, not steps)
                bar.set_description(f"encoding {info.get('source', '')} {done}/{total}"[:48])
                bar.refresh()
            elif event == "step":
                if bar.n == 0 and done > 1:  # resumed
                    bar.update(done - 1)
                bar.set_description("train")
                bar.update(done - bar.n)
                bar.set_postfix(loss=f"{info['loss']:.4f}", lr=f"{info['lr']:.2e}", refresh=False)
            elif event == "val":
                scores = ", ".join(f"{k} {v:.3f}" for k, v in info.items())
                bar.write(f"epoch {done}/{total} validation Dice: {scores}")

        result = Trainer(cfg, resume=args.resume, ctx=ctx, progress=progress, cancel=cancel).fit()
        if bar is not None:
            bar.close()
            bar = None
        if ctx.is_main:
            print(f"trained {result.steps} steps ({result.steps_per_s:.2f} steps/s); loss "
                  f"{result.first_loss:.4f} -> {result.last_loss:.4f}; model: {result.model_dir}")
            if result.val:
                print("validation Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in result.val.items()))
        return 0
    finally:
        if bar is not None:
            bar.close()
        signal.signal(signal.SIGINT, previous)
        shutdown(ctx)
