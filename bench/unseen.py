#!/usr/bin/env python
"""Generalisation to the *unseen* phantom family: a model through the real engine, default settings.

The cases come from :mod:`KnowledgeSAMLib.data.unseen_phantoms`, a generator written independently of the
training phantoms and never used by any training or tuning step, so these scores measure how well a model
carries over to data it has not seen (not how well it fits its own generator). Run by hand (not in CI)::

    python bench/unseen.py --n 4
    python bench/unseen.py --model default --family all --n 10 --threads 2 --json runs/unseen.json
    python bench/unseen.py --n 6 --threads 2 --markdown docs/unseen.md --json docs/unseen.json   # the docs page

Pairs (one reference per target, always another "patient"):

* ``kidney-full`` — target seed ``i``, reference seed ``100 + i`` (i = 0 … n−1): whole-abdomen contrast CT,
  3D, structures ``artery``, ``medulla``, ``cortex``;
* ``fundus-full`` — target seed ``i``, reference seed ``100 + i``: whole fundus photograph (2D, a one-slice
  volume), structures ``disc``, ``cup``.

Segmentation is ``segment(SegmentRequest(target, reference, reference_labels))`` with every engine setting
at its default (mode ``auto`` → ``volume`` for another case, intensity preset ``auto``, default
``EngineOptions``). Dice per structure comes from :func:`KnowledgeSAMLib.evaluation.evaluate_labels`. The
script prints a table per family (per case, then mean ± sd) with seconds per case (segmentation only, not
generation), and ``--json`` writes everything.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from KnowledgeSAMLib.data.volume import Image, Labels  # noqa: E402

REFERENCE_OFFSET = 100  # reference seed = target seed + REFERENCE_OFFSET
Maker = Callable[[int], tuple[Image, Labels]]


def _makers() -> dict[str, Maker]:
    from KnowledgeSAMLib.data.unseen_phantoms import make_fundus_full_phantom, make_kidney_full_phantom

    return {"kidney-full": make_kidney_full_phantom, "fundus-full": make_fundus_full_phantom}


def run_family(name: str, make: Maker, n: int, model, device: str) -> dict:
    """Segment targets 0…n−1 with references 100…100+n−1 and score them."""
    from KnowledgeSAMLib.evaluation import evaluate_labels
    from KnowledgeSAMLib.infer import SegmentRequest, segment

    cases = []
    for seed in range(n):
        target, truth = make(seed)
        reference, reference_labels = make(seed + REFERENCE_OFFSET)
        started = time.perf_counter()
        result = segment(SegmentRequest(target=target, reference=reference, reference_labels=reference_labels,
                                        device=device), model)
        seconds = time.perf_counter() - started
        report = evaluate_labels(result.labels, truth)
        dice = {s.name: float(s.dice) for s in report.structures}
        cases.append({"target_seed": seed, "reference_seed": seed + REFERENCE_OFFSET, "shape": list(target.shape),
                      "dice": dice, "mean_dice": float(np.mean(list(dice.values()))), "seconds": seconds})
        print(f"  {name} {seed}<-{seed + REFERENCE_OFFSET} {tuple(target.shape)}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in dice.items()) + f"  ({seconds:.1f} s)", flush=True)
    structures = list(cases[0]["dice"])
    summary = {s: {"mean": float(np.mean([c["dice"][s] for c in cases])),
                   "sd": float(np.std([c["dice"][s] for c in cases]))} for s in structures}
    return {"cases": cases, "dice": summary,
            "mean_dice": float(np.mean([summary[s]["mean"] for s in structures])),
            "seconds_per_case": float(np.mean([c["seconds"] for c in cases]))}


def table(results: dict) -> str:
    lines = []
    for name, r in results.items():
        structures = list(r["dice"])
        lines += [f"{name} ({len(r['cases'])} pairs, targets 0-{len(r['cases']) - 1}, references "
                  f"{REFERENCE_OFFSET}-{REFERENCE_OFFSET + len(r['cases']) - 1})",
                  "| pair | " + " | ".join(structures) + " | mean | s/case |",
                  "|" + "---|" * (len(structures) + 3)]
        for c in r["cases"]:
            lines.append(f"| {c['target_seed']}<-{c['reference_seed']} | "
                         + " | ".join(f"{c['dice'][s]:.3f}" for s in structures)
                         + f" | {c['mean_dice']:.3f} | {c['seconds']:.1f} |")
        lines.append("| **all** | " + " | ".join(f"{r['dice'][s]['mean']:.3f} ± {r['dice'][s]['sd']:.3f}"
                                                  for s in structures)
                     + f" | {r['mean_dice']:.3f} | {r['seconds_per_case']:.1f} |")
        lines.append("")
    return "\n".join(lines)


def markdown(payload: dict, args: argparse.Namespace) -> str:
    """The tables as a generated page: what was run, on what, and the command that regenerates it."""
    command = (f"python bench/unseen.py --n {args.n} --threads {args.threads} --markdown {args.markdown}"
               + (f" --json {args.json}" if args.json else ""))
    return "\n".join([
        "# Data no training or tuning step has seen: the unseen phantom family",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; do not edit by hand. "
        f"Model `{payload['model']}`, every engine setting at its default, one reference per target from another "
        f"phantom of the same family (`KnowledgeSAMLib/data/unseen_phantoms`, kept out of every training and tuning "
        f"file by a test). {payload['hardware']}; wall time {payload['wall_s']:.0f} s. What the numbers mean and "
        "how they moved: `docs/benchmarks.md`.",
        "",
        table(payload["families"]),
    ])


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="'default', a model folder, or a config name")
    parser.add_argument("--family", choices=("kidney-full", "fundus-full", "all"), default="all")
    parser.add_argument("--n", type=int, default=4, help="pairs per family (targets 0..n-1; default 4)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--json", type=Path, help="write the per-case and summary results here")
    parser.add_argument("--markdown", type=Path, help="write the tables, with how they were made, here "
                                                      "(docs/unseen.md)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")

    import torch

    from KnowledgeSAMLib.model.registry import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_model(args.model).eval()
    makers = _makers()
    families = list(makers) if args.family == "all" else [args.family]
    started = time.perf_counter()
    results = {}
    for name in families:
        print(f"{name}:", flush=True)
        results[name] = run_family(name, makers[name], args.n, model, args.device)
    payload = {"model": args.model, "hardware": hardware(), "engine": "defaults (mode auto, preset auto)",
               "reference_seed_offset": REFERENCE_OFFSET, "families": results,
               "wall_s": time.perf_counter() - started}
    print(table(results))
    print(f"wall time {payload['wall_s']:.0f} s; {payload['hardware']}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(payload, args), encoding="utf-8")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
