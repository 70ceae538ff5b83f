#!/usr/bin/env python
"""Speed and memory of KnowledgeSAM, side by side with what a user would use instead, in one run (by hand, not CI).

CPU tables (``--device cpu``, the default), all measured now on this machine:

1. one case (the first held-out MSD hippocampus pair, 35 slices; the demo's kidney phantoms without the data):
   KSAM with the default model, ``lite`` in eager PyTorch and on the CPU engine, LiteMedSAM with a box per slice,
   atlas registration: seconds per case, target slices/s, peak RSS; and whether ``lite``'s masks agree;
2. the ``lite`` encoder alone, eager against the CPU engine, interleaved on the same slices (the ratio);
3. cold start in fresh processes: importing torch and the engine, loading the model, the first slice, and the
   whole ``knowledgesam segment`` command on the case;
4. N target slices with one cached reference against one slice (``small``);
5. peak RSS segmenting a synthetic 512×512×300 CT.

``--device cuda`` adds the GPU table (``bench/speed_gpu.py``): slices/s per config, fp32/bf16 and batch policy, and
the fraction of the GPU's bf16 peak; ``--record-precision`` stores the bf16 verdicts for the engine.

    python bench/speed.py --threads 2 --write-docs docs/benchmarks.md     # the committed CPU tables
    python bench/speed.py --device cuda --no-cpu --record-precision       # on a GPU (bench/device/lease.sh)
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
               mixed_precision: bool = True, from_memory: bool = False, cpu_runtime: str = "auto") -> float:
    request = SegmentRequest(target, reference, labels, mode="anchor", reference_slices=[0], device=str(device),
                             batch_size=batch, options=EngineOptions(mixed_precision=mixed_precision,
                                                                     batch_from_memory=from_memory,
                                                                     cpu_runtime=cpu_runtime))
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
    from KnowledgeSAMLib.model.registry import resolve_model

    model = (resolve_model(name) if name == "default" else build_model(name)).to(device).eval()
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
    runtime = getattr(model, "encoder_runtime", None)
    row = {"config": name, "shape": list(target.shape), "encoder_runtime": runtime.name if runtime else "torch", "volume_mib": volume_mib, "seconds": seconds,
           "rss_peak_mib": rss.peak / 2**20, "rss_increase_mib": (rss.peak - rss.baseline) / 2**20,
           "float32_copy_at_model_size_mib": n * 3 * model.config.image_size ** 2 * 4 / 2**20}
    if device.type == "cuda":
        row["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def load_case(data: Path | None, size: int = 0) -> tuple[str, Image, Image, Labels, Labels]:
    """The side-by-side case: the first held-out hippocampus pair (35 slices), else the demo's kidney phantoms."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench._common import hippocampus_available

    if hippocampus_available(data):
        from KnowledgeSAMLib.data.datasets import hippocampus_cases, hippocampus_eval_pairs, load_hippocampus

        target_id, reference_id = hippocampus_eval_pairs(hippocampus_cases(data))[0]
        target, truth = load_hippocampus(data, target_id)
        reference, labels = load_hippocampus(data, reference_id)
        return f"MSD hippocampus {target_id} <- {reference_id}", target, reference, labels, truth
    from KnowledgeSAMLib.cli.demo import REFERENCE_SEED, TARGET_SEED
    from KnowledgeSAMLib.data.phantoms import make_kidney_roi_phantom

    reference, labels = make_kidney_roi_phantom(REFERENCE_SEED)
    target, truth = make_kidney_roi_phantom(TARGET_SEED)
    return "kidney ROI phantoms 5002 <- 5001 (the demo's)", target, reference, labels, truth


def write_case(folder: Path, target: Image, reference: Image, labels: Labels) -> tuple[Path, Path, Path]:
    from KnowledgeSAMLib.data.io import write_image, write_labels

    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "target.nrrd", folder / "reference.nrrd", folder / "reference.seg.nrrd"
    write_image(target, paths[0], overwrite=True)
    write_image(reference, paths[1], overwrite=True)
    write_labels(labels, paths[2], overwrite=True)
    return paths


def _mib(value: float) -> str:
    return "n/a" if value != value else f"{value:.0f}"


def cpu_markdown(case: str, rows, agreement, ratio, cold, ratio_rows, memory) -> list[str]:
    lines = [f"### One case, side by side ({case})", "",
             "| method | s/case | target slices/s | peak RSS (MiB) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['seconds']:.1f} | {r['slices_per_s']:.2f} | {_mib(r['rss_peak_mib'])} |")
    lines.append("")
    for model, a in agreement.items():
        lines.append(f"- {model}, eager against the CPU engine on this case: Dice per structure "
                     f"{', '.join(f'{k} {v:.4f}' for k, v in a['dice'].items())} (voxels in the eager result: "
                     f"{', '.join(f'{k} {v}' for k, v in a['voxels'].items())}"
                     f"{'; random heads' if 'lite' in model else ''}), largest probability difference "
                     f"{a['max_probability_delta_255']}/255.")
    lines += ["",
              f"### `lite` encoder alone: eager PyTorch against the CPU engine ({ratio['runtime']}), interleaved", "",
              "| slices | repeats | eager ms/slice | engine ms/slice | ratio (median) | ratios per repeat | max abs Δ embedding |",
              "|---|---|---|---|---|---|---|",
              f"| {ratio['slices']} | {ratio['repeats']} | {ratio['eager_ms_per_slice']:.0f} | "
              f"{ratio['engine_ms_per_slice']:.0f} | {ratio['ratio']:.2f}× | "
              f"{', '.join(f'{r:.2f}' for r in ratio['ratios'])} | {ratio['max_abs_delta']:.1e} |", "",
              "### Cold start (fresh processes, CPU)", "",
              "| model | import torch | import engine | load model | first slice | to first slice | whole CLI case | "
              "peft / transformers imported |", "|---|---|---|---|---|---|---|---|"]
    for name, c in cold.items():
        imported = "/".join("yes" if c["imported"][k] else "no" for k in ("peft", "transformers"))
        lines.append(f"| {name} | {c['import_torch_s']:.2f} s | {c['import_engine_s']:.2f} s | {c['load_model_s']:.2f} s | "
                     f"{c['first_slice_s']:.2f} s | {c['to_first_slice_s']:.2f} s | {c['cli_case_s']:.1f} s | {imported} |")
    lines += ["", "### N target slices with one cached reference: time(N) / time(1)", "",
              "| config | N | time(1) s | time(N) s | measured ratio | model N(enc+heads)+enc over 2enc+heads |",
              "|---|---|---|---|---|---|"]
    for r in ratio_rows:
        lines.append(f"| {r['config']} | {r['n']} | {r['t1_s']:.3f} | {r['tn_s']:.3f} | {r['ratio']:.2f} | "
                     f"{r['cached_model']:.2f} |")
    if memory:
        lines += ["", f"### A {'×'.join(map(str, memory['shape'][::-1]))} CT ({memory['config']}, "
                      f"encoder on {memory.get('encoder_runtime', 'torch')})", "",
                  f"volume {memory['volume_mib']:.0f} MiB (int16); in a fresh process: RSS peak "
                  f"{memory['rss_peak_mib']:.0f} MiB (+{memory['rss_increase_mib']:.0f} MiB during the run, after loading "
                  f"the model and making the volume); {memory['seconds']:.1f} s, "
                  f"{memory['shape'][0] / memory['seconds']:.1f} slices/s."]
    return lines


def write_docs(path: Path, header: str, lines: list[str]) -> None:
    """Replace the generated section of ``docs/benchmarks.md`` (between the speed markers) with this run's."""
    begin, end = "<!-- speed.py: begin (generated by bench/speed.py --write-docs; do not edit) -->", "<!-- speed.py: end -->"
    text = path.read_text(encoding="utf-8")
    block = "\n".join([begin, header, "", *lines, end])
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n## Speed (`bench/speed.py`)\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")


def cpu_tables(args, device: torch.device) -> list[str]:
    import tempfile

    from bench.speed_cold import measure
    from bench.speed_cpu import encoder_ratio, side_by_side

    case, target, reference, labels, truth = load_case(args.data)
    rows, agreement = side_by_side(target, reference, labels, truth, PeakRSS)
    lite = build_model("lite").eval()
    from KnowledgeSAMLib.infer.cpu_runtime import accelerate

    accelerate(lite, "cpu")
    ratio = encoder_ratio(lite, torch.rand(args.encoder_slices, 3, 256, 256), args.repeats)
    cold = {}
    with tempfile.TemporaryDirectory() as folder:
        paths = write_case(Path(folder), target, reference, labels)
        for model in args.cold_models.split(","):
            for runtime in ("auto", "torch"):
                cold[f"{model} ({'CPU engine' if runtime == 'auto' else 'eager PyTorch'})"] = measure(
                    model, *paths, threads=args.threads, runtime=runtime)
    ratio_rows = []
    parts = parts_table(["small"], device, args.batch, args.repeats)
    ratio_rows.append(ratio_table("small", device, args.slices, args.batch, parts[0]))
    memory = None
    if args.memory_shape != "none":  # a fresh process: the rows above leave their models in this one's memory
        import subprocess

        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-only", "--memory-model",
                               args.memory_model, "--memory-shape", args.memory_shape, "--batch", str(args.batch),
                               "--threads", str(args.threads)], capture_output=True, text=True, check=True)
        memory = json.loads(done.stdout.strip().splitlines()[-1])
    return cpu_markdown(case, rows, agreement, ratio, cold, ratio_rows, memory), {
        "case": case, "side_by_side": rows, "agreement": agreement, "encoder_ratio": ratio, "cold": cold,
        "ratios": ratio_rows, "memory": memory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (the CPU tables) or cuda (adds the GPU table)")
    parser.add_argument("--data", type=Path, help="shared data folder (default: $KNOWLEDGESAM_SHARED_DATA, ../shared/data)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--slices", type=int, default=16, help="N for the N-slices/1-slice ratio")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--encoder-slices", type=int, default=4, help="slices of the encoder-alone comparison")
    parser.add_argument("--cold-models", default="default,lite")
    parser.add_argument("--memory-model", default="default", help="model of the big-CT memory run")
    parser.add_argument("--memory-shape", default="300,512,512", help="Z,Y,X of the memory run's CT, or none")
    parser.add_argument("--memory-only", action="store_true", help="only the memory run; print it as JSON")
    parser.add_argument("--gpu-configs", default="tiny,small,lite,vit_b")
    parser.add_argument("--gpu-slices", type=int, default=64)
    parser.add_argument("--gpu-batches", default="8,32")
    parser.add_argument("--record-precision", action="store_true",
                        help="CUDA: write the bf16-vs-fp32 verdict per config to KnowledgeSAMLib/infer/gpu_precision.json")
    parser.add_argument("--cpu", default=None, action=argparse.BooleanOptionalAction,
                        help="the CPU tables (default: on for --device cpu, off for cuda)")
    parser.add_argument("--write-docs", type=Path, help="replace the generated speed section of this file "
                        "(docs/benchmarks.md)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = choose_device(args.device)
    if args.memory_only:
        shape = tuple(int(v) for v in args.memory_shape.split(","))
        print(json.dumps(memory_row(args.memory_model, device, shape, args.batch)))
        return 0
    started = time.perf_counter()
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} ({platform.processor() or platform.machine()},"
              f" {os.cpu_count()} cores), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
              f"load average {' / '.join(f'{v:.1f}' for v in os.getloadavg())} at the start.")
    print(f"# KnowledgeSAM speed\n\n{header}\n")
    lines, record = [], {"header": header}
    if args.cpu if args.cpu is not None else device.type == "cpu":
        cpu_lines, record["cpu"] = cpu_tables(args, torch.device("cpu"))
        lines += cpu_lines
    if device.type == "cuda":
        from bench.speed_gpu import gpu_rows, markdown, precision_record, write_precision

        def build(name):
            from KnowledgeSAMLib.model.build import build_model as build_any
            return build_any(name)

        identity, rows = gpu_rows(args.gpu_configs.split(","), device, args.gpu_slices,
                                  [int(b) for b in args.gpu_batches.split(",")], run_engine, phantom_ct, build)
        lines += ["", "### GPU: engine slices/s per config, precision and batch (random heads)", "", *markdown(identity, rows)]
        record["gpu"] = {"identity": identity, "rows": rows}
        if args.record_precision:
            write_precision(precision_record(identity, rows))
    lines.append(f"\n(total {time.perf_counter() - started:.0f} s)")
    print("\n".join(lines))
    if args.write_docs:
        write_docs(args.write_docs, header, lines)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
