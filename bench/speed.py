#!/usr/bin/env python
"""Speed and memory of the slice-wise engine, measured in one run (by hand, not in CI).

Prints one table per question, all measured now on this machine (random weights: speed does not
depend on them):

1. per-slice time of the image encoder alone, of the heads alone (cached embeddings), and of a whole
   KSAM pass (target + reference encoder passes + heads), per config;
2. engine time for N target slices with one reference divided by the time for 1 slice, next to what
   it would be with the reference cached — N×(encoder + heads) + 1 encoder — and without —
   N×(2 encoders + heads); the measured ratio must follow the first;
3. engine time per slice against the batch size;
4. peak memory (process RSS and, on CUDA, allocated GPU memory) segmenting a 512×512×200 CT;
5. on CUDA, engine slices/s in fp32 and with bf16 autocast.

    python bench/speed.py                          # tiny, small and vit_b at 512 (vit_b is slow on a CPU)
    python bench/speed.py --configs tiny,small --memory-config small --slices 8   # a CPU-sized run
    python bench/speed.py --quick                  # smoke test: tiny only, small volumes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment  # noqa: E402
from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, segment  # noqa: E402
from KnowledgeSAMLib.infer.device import choose_device  # noqa: E402
from KnowledgeSAMLib.model.build import build_model  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def phantom_ct(n: int, size: int, seed: int = 0) -> tuple[Image, Labels]:
    """A CT-like ``(n, size, size)`` int16 volume with one ellipsoidal structure on every slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) / (size * 0.45)) ** 2 + ((xx - size / 2) / (size * 0.45)) ** 2 < 1
    organ = ((yy - size * 0.55) / (size * 0.12)) ** 2 + ((xx - size * 0.4) / (size * 0.09)) ** 2 < 1
    array = np.empty((n, size, size), np.int16)
    labels = np.zeros((1, n, size, size), np.uint8)
    for k in range(n):  # slice by slice: a 512×512×200 volume never exists as float
        plane = np.where(body, 40.0, -1000.0) + np.where(organ, 120.0, 0.0) + rng.normal(0, 10, (size, size))
        array[k] = plane.astype(np.int16)
        labels[0, k][organ] = 1
    geometry = Geometry(spacing=(0.8, 0.8, 1.5))
    return Image(array, geometry, source=f"phantom{seed}"), Labels(labels, geometry, [Segment("organ", 1)])


def run_engine(model, device: torch.device, target: Image, reference: Image, labels: Labels, batch: int,
               mixed_precision: bool = True) -> float:
    request = SegmentRequest(target, reference, labels, mode="anchor", reference_slices=[0], device=str(device),
                             batch_size=batch, options=EngineOptions(mixed_precision=mixed_precision))
    start = time.perf_counter()
    segment(request, model)
    _sync(device)
    return time.perf_counter() - start


def parts_table(configs: list[str], device: torch.device, batch: int, repeats: int) -> list[dict]:
    rows = []
    for name in configs:
        model = build_model(name).to(device).eval()
        s = model.config.image_size
        x = torch.rand(batch, 3, s, s, device=device)
        m = torch.zeros(batch, 1, s, s, device=device)
        m[..., s // 4: s // 2, s // 4: s // 2] = 1
        with torch.inference_mode():
            emb = model.encode(x)
            ref = model.encode_reference(x[:1], m[:1], embeddings=emb[:1])
            encoder = timed(lambda: model.encode(x), device, repeats) / batch
            heads = timed(lambda: model.decode(emb, ref), device, repeats) / batch
            whole = timed(lambda: model(x, x, m), device, repeats) / batch
        rows.append({"config": name, "size": s, "encoder_s": encoder, "heads_s": heads, "ksam_pass_s": whole})
        del model
    return rows


def ratio_table(name: str, device: torch.device, n: int, batch: int, parts: dict) -> dict:
    model = build_model(name).to(device).eval()
    s = model.config.image_size
    reference, labels = phantom_ct(1, s, seed=1)
    one, _ = phantom_ct(1, s, seed=2)
    many, _ = phantom_ct(n, s, seed=3)
    run_engine(model, device, one, reference, labels, batch)  # warm-up
    t1 = min(run_engine(model, device, one, reference, labels, batch) for _ in range(2))
    tn = run_engine(model, device, many, reference, labels, batch)
    enc, heads = parts["encoder_s"], parts["heads_s"]
    return {
        "config": name, "n": n, "t1_s": t1, "tn_s": tn, "ratio": tn / t1,
        "cached_model": (n * (enc + heads) + enc) / (2 * enc + heads),
        "uncached_model": n * (2 * enc + heads) / (2 * enc + heads),
        "n_times_enc_plus_heads_over_t1": n * (enc + heads) / t1,
    }


def batch_table(name: str, device: torch.device, n: int, batches: list[int]) -> list[dict]:
    model = build_model(name).to(device).eval()
    s = model.config.image_size
    reference, labels = phantom_ct(1, s, seed=1)
    target, _ = phantom_ct(n, s, seed=3)
    run_engine(model, device, target, reference, labels, batches[0])  # warm-up
    return [{"config": name, "batch": b, "per_slice_s": run_engine(model, device, target, reference, labels, b) / n}
            for b in batches]


class PeakRSS:
    """Samples this process's resident memory in a thread (psutil), to catch the peak."""

    def __init__(self, interval: float = 0.02) -> None:
        import psutil

        self.process = psutil.Process(os.getpid())
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self.baseline = self.process.memory_info().rss

    def __enter__(self) -> "PeakRSS":
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def memory_row(name: str, device: torch.device, shape: tuple[int, int, int], batch: int) -> dict:
    model = build_model(name).to(device).eval()
    n, h, w = shape
    if h != w:
        raise SystemExit(f"--memory-shape needs square slices, got {h}x{w}")
    target, _ = phantom_ct(n, h, seed=3)
    reference, labels = phantom_ct(1, target.shape[1], seed=1)
    volume_mib = target.array.nbytes / 2**20
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as rss:
        seconds = run_engine(model, device, target, reference, labels, batch)
    row = {"config": name, "shape": list(target.shape), "volume_mib": volume_mib, "seconds": seconds,
           "rss_peak_mib": rss.peak / 2**20, "rss_increase_mib": (rss.peak - rss.baseline) / 2**20,
           "float32_copy_at_model_size_mib": n * 3 * model.config.image_size ** 2 * 4 / 2**20}
    if device.type == "cuda":
        row["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def precision_rows(name: str, device: torch.device, n: int, batch: int) -> list[dict]:
    model = build_model(name).to(device).eval()
    s = model.config.image_size
    reference, labels = phantom_ct(1, s, seed=1)
    target, _ = phantom_ct(n, s, seed=3)
    rows = []
    for mixed in (False, True):
        run_engine(model, device, target, reference, labels, batch, mixed)  # warm-up
        seconds = run_engine(model, device, target, reference, labels, batch, mixed)
        rows.append({"config": name, "precision": "bf16" if mixed else "fp32", "slices_per_s": n / seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,small,vit_b")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--slices", type=int, default=16, help="N for the N-slices/1-slice ratio")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--batch-sizes", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-config", default=None, help="config for the memory run (default vit_b on CUDA, "
                        "small on a CPU)")
    parser.add_argument("--memory-shape", default="200,512,512", help="Z,Y,X of the memory run's CT")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny only, small volumes")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    configs = ["tiny"] if args.quick else [c.strip() for c in args.configs.split(",") if c.strip()]
    n = 4 if args.quick else args.slices
    batches = [1, 2] if args.quick else [int(b) for b in args.batch_sizes.split(",")]
    memory_config = args.memory_config or ("tiny" if args.quick else ("vit_b" if device.type == "cuda" else "small"))
    memory_shape = (8, 128, 128) if args.quick else tuple(int(v) for v in args.memory_shape.split(","))
    started = time.perf_counter()
    print(f"# KnowledgeSAM engine speed — {platform.node()} {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads, random weights")

    parts = parts_table(configs, device, args.batch, args.repeats)
    print(f"\n## Per-slice time (batch {args.batch}, median of {args.repeats})")
    print("| config | size | encoder (ms) | heads (ms) | whole KSAM pass (ms) | encoder share of pass |")
    print("|---|---|---|---|---|---|")
    for r in parts:
        print(f"| {r['config']} | {r['size']} | {1e3 * r['encoder_s']:.2f} | {1e3 * r['heads_s']:.2f} | "
              f"{1e3 * r['ksam_pass_s']:.2f} | {r['encoder_s'] / r['ksam_pass_s']:.0%} |")

    ratios = [ratio_table(c, device, n, args.batch, next(p for p in parts if p["config"] == c)) for c in configs]
    print(f"\n## N target slices with one reference: time(N) / time(1), N = {n}")
    print("| config | time(1) s | time(N) s | measured ratio | cached model N(enc+heads)+enc | uncached N(2enc+heads) |")
    print("|---|---|---|---|---|---|")
    for r in ratios:
        print(f"| {r['config']} | {r['t1_s']:.3f} | {r['tn_s']:.3f} | {r['ratio']:.2f} | {r['cached_model']:.2f} | "
              f"{r['uncached_model']:.2f} |")

    scaling = batch_table("small" if "small" in configs else configs[0], device, max(n, max(batches)), batches)
    print(f"\n## Batch-size scaling ({scaling[0]['config']}, {max(n, max(batches))} slices)")
    print("| batch | per slice (ms) |")
    print("|---|---|")
    for r in scaling:
        print(f"| {r['batch']} | {1e3 * r['per_slice_s']:.2f} |")

    memory = memory_row(memory_config, device, memory_shape, args.batch)
    print(f"\n## Peak memory segmenting a {'×'.join(map(str, memory['shape'][::-1]))} CT ({memory_config})")
    print(f"volume {memory['volume_mib']:.0f} MiB (int16); a float32 copy at model size would be "
          f"{memory['float32_copy_at_model_size_mib']:.0f} MiB")
    print(f"process RSS peak {memory['rss_peak_mib']:.0f} MiB (+{memory['rss_increase_mib']:.0f} MiB during the run), "
          f"{memory['seconds']:.1f} s" + (f"; GPU peak allocated {memory['gpu_peak_mib']:.0f} MiB"
                                          if "gpu_peak_mib" in memory else ""))

    precision = []
    if device.type == "cuda":
        precision = [row for c in configs for row in precision_rows(c, device, max(n, 32), max(args.batch, 8))]
        print("\n## CUDA throughput (engine, slices/s)")
        print("| config | fp32 | bf16 |")
        print("|---|---|---|")
        for c in configs:
            fp32 = next(r for r in precision if r["config"] == c and r["precision"] == "fp32")["slices_per_s"]
            bf16 = next(r for r in precision if r["config"] == c and r["precision"] == "bf16")["slices_per_s"]
            print(f"| {c} | {fp32:.1f} | {bf16:.1f} |")
    print(f"\n(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "parts": parts, "ratios": ratios,
                                         "batch_scaling": scaling, "memory": memory, "precision": precision},
                                        indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
