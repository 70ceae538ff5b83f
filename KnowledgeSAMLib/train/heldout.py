"""Held-out Dice of a model on a folder source's test cases, through the real engine (what a user would get).

Why here and not only in a benchmark: "did fine-tuning on my cases help?" is the first question after a run,
and the answer must come from the cases the run never read, segmented the way the CLI and Slicer segment
(``infer.segment`` with its default settings), not from the training-time validation slices. Each test case
is segmented with one training case of the same folder as its reference (the training cases in name order,
taken in turn), and scored per structure with ``evaluation.evaluate_labels``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from .config import SourceConfig
from .folder_read import CaseProblem, ReadCase, read_folder_case
from .folder_source import DataReport, FolderSource

__all__ = ["held_out_dice"]


def _read(folder: FolderSource, case) -> ReadCase | None:
    try:
        return read_folder_case(case, folder.table, folder.names, folder.want_volume)
    except CaseProblem:
        return None


def held_out_dice(model, src: SourceConfig, split_file: str | Path, device: str = "auto", max_cases: int = 0,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Dice per structure on the test cases listed in ``split_file`` (a run's split.json).

    Returns ``{"cases": [{"case", "reference", "dice": {structure: Dice}, "seconds"}], "dice": {structure:
    mean}, "mean": mean over structures}``; ``max_cases`` > 0 scores only the first cases (name order).
    """
    from ..evaluation import evaluate_labels
    from ..infer import SegmentRequest, segment

    folder = FolderSource(replace(src, split_file=str(split_file)), DataReport())
    tests = folder.cases("test")[: max_cases or None]
    if not tests:
        raise InputError(f"{split_file}: the split holds no test case for {src.root}")
    names, references = [], []
    for case in folder.cases("train"):  # one reference per test case at most: volumes can be large
        if len(references) == len(tests):
            break
        read = _read(folder, case)
        if read is not None:
            names.append(case.name)
            references.append(read)
    if not references:
        raise InputError(f"{src.root}: no readable training case to use as a reference")
    cases = []
    for i, case in enumerate(tests):
        target = _read(folder, case)
        if target is None:
            continue
        ref, ref_name = references[i % len(references)], names[i % len(references)]
        shared = [s.name for s in target.labels.segments if s.name in {r.name for r in ref.labels.segments}]
        if not shared:
            continue
        started = time.perf_counter()
        result = segment(SegmentRequest(target=target.image, reference=ref.image, reference_labels=ref.labels,
                                        segments=[ref.labels.find(s) for s in shared], device=device), model)
        report = evaluate_labels(result.labels, target.labels, segments=shared)
        dice = {s.name: float(s.dice) for s in report.structures}
        cases.append({"case": case.name, "reference": ref_name, "dice": dice,
                      "seconds": time.perf_counter() - started})
        if progress is not None:
            progress(f"{case.name} <- {ref_name}: " + ", ".join(f"{k} {v:.3f}" for k, v in dice.items()))
    structures = list(dict.fromkeys(s for c in cases for s in c["dice"]))
    means = {s: float(np.mean([c["dice"][s] for c in cases if s in c["dice"]])) for s in structures}
    return {"cases": cases, "dice": means, "mean": float(np.mean(list(means.values()))) if means else float("nan"),
            "engine": "infer.segment with default settings; reference: a training case of the same folder"}
