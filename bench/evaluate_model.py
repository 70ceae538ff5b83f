"""Held-out accuracy of a KSAM model through the real engine, one reference per target.

Run by hand (not in CI)::

    python bench/evaluate_model.py --model default --json runs/eval.json --markdown runs/eval.md

Sets (none of them is ever trained on):

* kidney ROI phantoms — targets seeds 5000+i, references seeds 5100+i (another "patient"), 3D, ``volume`` mode;
* whole-abdomen kidney phantoms (our generator, 40×224×224) — the same seeds;
* fundus phantoms — targets 5000+i, references 5100+i, 2D;
* MSD hippocampus — the 10 held-out cases, each with its fixed cross-patient training-case reference
  (``data.datasets.hippocampus_eval_pairs``), ``volume`` mode;
* PAPILA — the held-out eye with its fixed reference eye (disc-centred crops, expert 1).

Per dataset it reports Dice per structure (mean ± sd over cases) and seconds per case, and a
task-following matrix: each structure is also segmented *alone* and its prediction is scored against
every structure's truth, so row t shows how much the prediction for task t overlaps each truth.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from KnowledgeSAMLib.data.volume import Image, Labels  # noqa: E402
from KnowledgeSAMLib.evaluation.metrics import dice  # noqa: E402

Case = tuple[str, Image, Labels, Image, Labels]  # name, target, truth, reference, reference labels


@dataclass
class DatasetResult:
    name: str
    structures: list[str]
    dice: dict[str, list[float]] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    confusion: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    cases: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        def stats(values: list[float]) -> dict:
            return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n": len(values)}

        return {
            "structures": {s: stats(v) for s, v in self.dice.items()},
            "mean_dice": float(np.mean([np.mean(v) for v in self.dice.values()])),
            "seconds_per_case": float(np.mean(self.seconds)),
            # empty when the per-task runs were skipped (--no-task-following)
            "task_following": {t: {s: float(np.mean(v)) for s, v in row.items()}
                               for t, row in self.confusion.items() if all(row.values())},
            "cases": self.cases,
            "case_dice": {s: [float(x) for x in v] for s, v in self.dice.items()},  # in the order of "cases"
        }


def kidney_cases(n: int) -> Iterator[Case]:
    from KnowledgeSAMLib.data.phantoms import make_kidney_roi_phantom

    for i in range(n):
        target, truth = make_kidney_roi_phantom(5000 + i)
        reference, reference_labels = make_kidney_roi_phantom(5100 + i)
        yield f"kidney_roi_{5000 + i}<-{5100 + i}", target, truth, reference, reference_labels


def kidney_full_cases(n: int) -> Iterator[Case]:
    """Whole-abdomen phantoms of our generator (spine, bowel, both kidneys in view), held-out seeds."""
    from KnowledgeSAMLib.data.phantoms import make_kidney_phantom

    shape = (40, 224, 224)  # as the default model's whole-abdomen training phantoms
    for i in range(n):
        target, truth = make_kidney_phantom(5000 + i, shape=shape)
        reference, reference_labels = make_kidney_phantom(5100 + i, shape=shape)
        yield f"kidney_full_{5000 + i}<-{5100 + i}", target, truth, reference, reference_labels


def fundus_cases(n: int) -> Iterator[Case]:
    from KnowledgeSAMLib.data.phantoms import make_fundus_phantom

    for i in range(n):
        target, truth = make_fundus_phantom(5000 + i)
        reference, reference_labels = make_fundus_phantom(5100 + i)
        yield f"fundus_{5000 + i}<-{5100 + i}", target, truth, reference, reference_labels


def hippocampus_pairs(n: int | None) -> Iterator[Case]:
    from KnowledgeSAMLib.data import datasets

    ids = datasets.hippocampus_cases()
    for target_id, reference_id in datasets.hippocampus_eval_pairs(ids)[:n]:
        target, truth = datasets.load_hippocampus(None, target_id)
        reference, reference_labels = datasets.load_hippocampus(None, reference_id)
        yield f"{target_id}<-{reference_id}", target, truth, reference, reference_labels


def papila_pairs(_: int | None) -> Iterator[Case]:
    from KnowledgeSAMLib.data import datasets

    for target_id, reference_id in datasets.papila_eval_pairs():
        target, truth = datasets.load_papila(None, target_id, expert=1, crop=True)
        reference, reference_labels = datasets.load_papila(None, reference_id, expert=1, crop=True)
        yield f"{target_id}<-{reference_id}", target, truth, reference, reference_labels


DATASETS: dict[str, tuple[Callable[[int | None], Iterator[Case]], str]] = {
    "kidney_roi_phantom": (kidney_cases, "ct-abdomen"),
    "kidney_full_phantom": (kidney_full_cases, "ct-abdomen"),
    "fundus_phantom": (fundus_cases, "rgb"),
    "hippocampus": (hippocampus_pairs, "mr"),
    "papila": (papila_pairs, "rgb"),
}


def run_dataset(name: str, cases: Iterator[Case], preset: str, model, device: str, task_following: bool,
                roi: str = "auto") -> DatasetResult:
    from KnowledgeSAMLib.infer import SegmentRequest, segment

    result: DatasetResult | None = None
    for case_name, target, truth, reference, reference_labels in cases:
        segments = list(reference_labels.segments)
        names = [s.name for s in segments]
        if result is None:
            result = DatasetResult(name, names, {s: [] for s in names},
                                   confusion={t: {s: [] for s in names} for t in names})
        started = time.perf_counter()
        out = segment(SegmentRequest(target=target, reference=reference, reference_labels=reference_labels,
                                     segments=segments, mode="auto", device=device, preset=preset, roi=roi), model)
        result.seconds.append(time.perf_counter() - started)
        result.cases.append(case_name)
        for s in names:
            result.dice[s].append(dice(out.labels.mask(s), truth.mask(s)))
        if task_following:
            for seg in segments:  # each task alone: nothing forces the structures apart
                alone = segment(SegmentRequest(target=target, reference=reference, reference_labels=reference_labels,
                                               segments=[seg], mode="auto", device=device, preset=preset,
                                               roi=roi), model)
                for s in names:
                    result.confusion[seg.name][s].append(dice(alone.labels.mask(seg.name), truth.mask(s)))
        print(f"  {case_name}: " + ", ".join(f"{s} {result.dice[s][-1]:.3f}" for s in names)
              + f"  ({result.seconds[-1]:.1f} s)", flush=True)
    if result is None:
        raise SystemExit(f"{name}: no cases")
    return result


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def markdown(summaries: dict, model_label: str) -> str:
    lines = [f"Model: `{model_label}`. Hardware: {summaries['hardware']}. Wall time: {summaries['wall_s']:.0f} s.", ""]
    for name, s in summaries["datasets"].items():
        structures = list(s["structures"])
        lines += [f"### {name} ({len(s['cases'])} held-out cases, one reference each)", "",
                  "| " + " | ".join(structures) + " | mean | s/case |",
                  "|" + "---|" * (len(structures) + 2),
                  "| " + " | ".join(f"{s['structures'][k]['mean']:.3f} ± {s['structures'][k]['sd']:.3f}"
                                    for k in structures)
                  + f" | {s['mean_dice']:.3f} | {s['seconds_per_case']:.1f} |", ""]
        if s["task_following"] and any(s["task_following"].values()):
            lines += ["Task following (rows: the task asked for, alone; columns: Dice against each truth):", "",
                      "| task \\ truth | " + " | ".join(structures) + " |", "|" + "---|" * (len(structures) + 1)]
            for task in structures:
                row = s["task_following"][task]
                lines.append(f"| {task} | " + " | ".join(f"{row[k]:.3f}" for k in structures) + " |")
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default", help="'default', a model folder, or a config name")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of " + ", ".join(DATASETS))
    parser.add_argument("--n-kidney", type=int, default=6)
    parser.add_argument("--n-fundus", type=int, default=20)
    parser.add_argument("--n-hippocampus", type=int, default=None, help="default: all 10 held-out pairs")
    parser.add_argument("--no-task-following", action="store_true", help="skip the per-task confusion runs")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--roi", default="auto", choices=("auto", "none"),
                        help="where the model looks (the engine's default: auto; none = whole slices)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)

    import torch

    from KnowledgeSAMLib.model.registry import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_model(args.model).eval()
    counts = {"kidney_roi_phantom": args.n_kidney, "kidney_full_phantom": args.n_kidney, "fundus_phantom": args.n_fundus,
              "hippocampus": args.n_hippocampus, "papila": None}
    started = time.perf_counter()
    summaries: dict = {"model": args.model, "hardware": hardware(), "datasets": {}}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        loader, preset = DATASETS[name]
        print(f"{name}:", flush=True)
        try:
            result = run_dataset(name, loader(counts[name]), preset, model, args.device, not args.no_task_following,
                                 args.roi)
        except Exception as error:  # a missing data folder skips that set, loudly
            from KnowledgeSAMLib.errors import KnowledgeSAMError

            if not isinstance(error, KnowledgeSAMError):
                raise
            print(f"  skipped: {error}")
            continue
        summaries["datasets"][name] = result.summary()
    summaries["wall_s"] = time.perf_counter() - started
    text = markdown(summaries, args.model)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summaries, indent=2) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
