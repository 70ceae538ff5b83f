"""One training run from the command line: the Trainer with a progress bar, data problems and warnings printed
above it, and Ctrl-C turned into a checkpoint (shared by ``--config`` and ``--data``)."""

from __future__ import annotations

import argparse
import signal
import sys

__all__ = ["train"]


def _printer(bar):
    """The progress callback: a tqdm bar, data problems and warnings as lines above it."""
    def say(line: str) -> None:
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def progress(event: str, done: int, total: int, info: dict) -> None:
        if event == "problem":
            say(f"data: {info['line']}")
        elif event in ("warning", "stopped"):
            say(f"warning: {info['message']}" if event == "warning" else info["reason"])
        if bar is None:
            if event == "val":  # without a bar, validations are still worth a line
                print(f"epoch {done}/{total} validation Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in info.items()),
                      flush=True)
            return
        if event == "data":
            bar.set_description(f"data {info.get('case', '')}"[:40])
        elif event == "embeddings":  # the frozen encoder fills its cache (slices, not steps)
            bar.set_description(f"encoding {info.get('source', '')} {done}/{total}"[:48])
            bar.refresh()
        elif event == "step":
            if bar.total != total:  # one data pass per epoch: known once the data is
                bar.total = total
            if bar.n == 0 and done > 1:  # resumed
                bar.update(done - 1)
            bar.set_description("train")
            bar.update(done - bar.n)
            bar.set_postfix(loss=f"{info['loss']:.4f}", lr=f"{info['lr']:.2e}", refresh=False)
        elif event == "val":
            scores = ", ".join(f"{k} {v:.3f}" for k, v in info.items())
            bar.write(f"epoch {done}/{total} validation Dice: {scores}")

    return progress


def train(cfg, args: argparse.Namespace, ctx):
    """Run the Trainer with a progress bar and Ctrl-C handling; returns its TrainResult."""
    from ..infer.cancel import CancelToken
    from ..train.trainer import Trainer

    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.cancel())
    bar = None
    try:
        if ctx.is_main and not args.no_progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.total_steps or None, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)
        progress = _printer(bar) if ctx.is_main else (lambda *a: None)
        result = Trainer(cfg, resume=args.resume, ctx=ctx, progress=progress, cancel=cancel).fit()
        if bar is not None:
            bar.close()
            bar = None
        if ctx.is_main:
            print(f"trained {result.steps} steps ({result.steps_per_s:.2f} steps/s); loss "
                  f"{result.first_loss:.4f} -> {result.last_loss:.4f}; model: {result.model_dir}")
            if result.val:
                print("validation Dice: " + ", ".join(f"{k} {v:.3f}" for k, v in result.val.items()))
        return result
    finally:
        if bar is not None:
            bar.close()
        signal.signal(signal.SIGINT, previous)


