#!/usr/bin/env python
"""Does the default model segment the same on CUDA as on the CPU? (run on a lent GPU; needs no data files)

One held-out kidney ROI phantom (seed 5000) segmented with another as the reference (seed 5001), through
the whole slice-wise engine: CPU fp32 (the reference result), CUDA fp32 and CUDA with bf16 autocast (the
engine's default on CUDA). Prints, per structure, Dice of each CUDA result against the CPU result and of
every result against the truth. Agreement with the CPU should be near 1; bf16 may move boundary pixels.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from KnowledgeSAMLib.data.phantoms import make_kidney_roi_phantom  # noqa: E402
from KnowledgeSAMLib.evaluation.metrics import dice  # noqa: E402
from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, segment  # noqa: E402
from KnowledgeSAMLib.model.registry import resolve_model  # noqa: E402


def run(model, target, reference, labels, device: str, mixed: bool) -> tuple[dict[str, np.ndarray], float]:
    request = SegmentRequest(target, reference, labels, device=device,
                             options=EngineOptions(mixed_precision=mixed))
    segment(request, model)  # warm-up (cuDNN autotuning, caches)
    start = time.perf_counter()
    result = segment(request, model)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {s.name: result.labels.mask(s.name) for s in result.labels.segments}, seconds


def main() -> int:
    model = resolve_model().eval()
    target, truth = make_kidney_roi_phantom(5000)
    reference, labels = make_kidney_roi_phantom(5001)
    names = [s.name for s in labels.segments]
    runs = {"cpu fp32": ("cpu", False)}
    if torch.cuda.is_available():
        runs.update({"cuda fp32": ("cuda", False), "cuda bf16": ("cuda", True)})
    masks, seconds = {}, {}
    for name, (device, mixed) in runs.items():
        masks[name], seconds[name] = run(model, target, reference, labels, device, mixed)
    report = {}
    for structure in names:
        row = {f"{run_name} vs truth": dice(masks[run_name][structure], truth.mask(structure)) for run_name in runs}
        row.update({f"{run_name} vs cpu": dice(masks[run_name][structure], masks["cpu fp32"][structure])
                    for run_name in runs if run_name != "cpu fp32"})
        report[structure] = row
    report["seconds"] = seconds
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
