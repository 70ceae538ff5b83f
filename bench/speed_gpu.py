"""The GPU table of ``bench/speed.py --device cuda``: engine slices/s per config, precision and batch policy, and
the fraction of the GPU's bf16 limit it reaches.

Why per config and batch: on the H200 lease of 2026-11-29 the small models were launch-bound (bf16 slower than
fp32) and ``vit_b`` was not; which precision and batch pay is measured here, and ``--record-precision`` writes the
bf16-vs-fp32 verdict per config into ``KnowledgeSAMLib/infer/gpu_precision.json`` for
``EngineOptions(mixed_precision="measured")``. Never run without a GPU: it refuses.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import date

import torch

# dense bf16 tensor-core peak (no sparsity), FLOP/s; a GPU not listed gets no fraction
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


def gpu_identity(device: torch.device) -> dict:
    name = torch.cuda.get_device_name(device)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        driver = "unknown"
    peak = next((value for key, value in BF16_PEAK.items() if key in name), None)
    return {"gpu": name, "driver": driver, "torch": torch.__version__, "cuda": torch.version.cuda, "bf16_peak": peak}


def pass_flops(model, device: torch.device) -> float:
    """FLOPs of one target slice: encoder + heads with a cached reference (what the engine pays per slice)."""
    from torch.utils.flop_counter import FlopCounterMode

    s = model.config.image_size
    x = torch.rand(1, 3, s, s, device=device)
    m = torch.zeros(1, 1, s, s, device=device)
    m[..., s // 4: s // 2, s // 4: s // 2] = 1
    with torch.inference_mode():
        reference = model.encode_reference(x, m)
        with FlopCounterMode(display=False) as counter:
            model.decode(model.encode(x), reference)
    return float(counter.get_total_flops())


def engine_rate(model, device: torch.device, run_engine, target, reference, labels, batch: int, precision,
                from_memory: bool) -> float:
    run_engine(model, device, target, reference, labels, batch, precision, from_memory)  # warm-up
    seconds = run_engine(model, device, target, reference, labels, batch, precision, from_memory)
    return target.shape[0] / seconds


def gpu_rows(configs: list[str], device: torch.device, n: int, batches: list[int], run_engine, phantom_ct,
             build) -> tuple[dict, list[dict]]:
    identity = gpu_identity(device)
    rows = []
    for name in configs:
        model = build(name).to(device).eval()
        s = model.config.image_size
        reference, labels = phantom_ct(1, s, seed=1)
        target, _ = phantom_ct(n, s, seed=3)
        flops = pass_flops(model, device)
        for precision in (False, True):
            for batch, from_memory in [(b, False) for b in batches] + [(batches[-1], True)]:
                started = time.perf_counter()
                rate = engine_rate(model, device, run_engine, target, reference, labels, batch, precision, from_memory)
                row = {"config": name, "precision": "bf16" if precision else "fp32",
                       "batch": "memory" if from_memory else batch, "slices_per_s": rate,
                       "gflop_per_slice": flops / 1e9, "wall_s": time.perf_counter() - started}
                if identity["bf16_peak"]:
                    row["fraction_of_bf16_peak"] = rate * flops / identity["bf16_peak"]
                rows.append(row)
        del model
        torch.cuda.empty_cache()
    return identity, rows


def precision_record(identity: dict, rows: list[dict]) -> dict:
    """The best slices/s per config and precision → ``{"bf16_faster": {config: bool}, ...}``."""
    best: dict[str, dict[str, float]] = {}
    for row in rows:
        entry = best.setdefault(row["config"], {})
        entry[row["precision"]] = max(entry.get(row["precision"], 0.0), row["slices_per_s"])
    return {"bf16_faster": {c: v.get("bf16", 0) > v.get("fp32", 0) for c, v in best.items()},
            "measured": "; ".join(f"{c} fp32 {v['fp32']:.0f} / bf16 {v['bf16']:.0f} slices/s (best batch)"
                                  for c, v in best.items()),
            "gpu": f"{identity['gpu']}, driver {identity['driver']}", "torch": identity["torch"],
            "date": date.today().isoformat(), "source": "bench/speed.py --device cuda --record-precision"}


def write_precision(record: dict) -> None:
    from KnowledgeSAMLib.infer.gpu_precision import PRECISION_FILE

    PRECISION_FILE.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def markdown(identity: dict, rows: list[dict]) -> list[str]:
    lines = [f"GPU: {identity['gpu']}, driver {identity['driver']}, torch {identity['torch']} (CUDA {identity['cuda']})",
             "", "| config | precision | batch | slices/s | GFLOP/slice | fraction of bf16 peak |", "|---|---|---|---|---|---|"]
    for r in rows:
        fraction = f"{100 * r['fraction_of_bf16_peak']:.1f} %" if "fraction_of_bf16_peak" in r else "n/a"
        lines.append(f"| {r['config']} | {r['precision']} | {r['batch']} | {r['slices_per_s']:.1f} | "
                     f"{r['gflop_per_slice']:.1f} | {fraction} |")
    return lines
