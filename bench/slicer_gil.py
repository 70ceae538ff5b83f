#!/usr/bin/env python
"""Is inference starved inside Slicer? One run on the one-click sample, four ways, under a simulated Slicer.

Slicer's main thread keeps Python's GIL while Qt's event loop waits (PythonQt's thread support is never
enabled), and our front-ends look at a running job from a 150 ms ``QTimer``. The simulation holds the GIL in C
for 150 ms (``ctypes.PyDLL``'s calls do not release it), then polls the job in Python, until it is done.

Rows (wall time of one segmentation of ``KidneyPhantom1`` with its one labelled slice, default engine settings,
after a warm-up run that loads the model):

* ``bare``: the engine on this thread, nothing else running (the reference);
* ``thread``: the engine on a worker thread, the simulated main loop polling it (what the extension did before);
* ``thread+wait``: the same, but each poll also waits ``Event.wait(0.03)`` for the job (SlicerNNInteractive's
  pattern: the GIL is free for 30 ms per tick);
* ``process``: the engine in the inference process (``KnowledgeSAMLib.mrml.WorkerProcess``), the simulated
  main loop polling it (what the extension does now).

    python bench/slicer_gil.py --model default --repeats 2 --json runs/slicer_gil.json
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO / "KnowledgeSAM" / "Resources" / "SampleData"
HOLD_GIL_US = ctypes.PyDLL(None).usleep  # runs in C with the GIL held, like Qt's idle event loop in Slicer
TICK_US = 150_000


def sample_request():
    from KnowledgeSAMLib.data.io import read_image, read_labels
    from KnowledgeSAMLib.infer.request import SegmentRequest

    image = read_image(SAMPLE / "KidneyPhantom1.nrrd")
    labels = read_labels(SAMPLE / "KidneyPhantom1-slice.seg.nrrd")
    return SegmentRequest(target=image, reference=image, reference_labels=labels, device="cpu")


def slicer_main_loop(done, poll=lambda: None):
    """Until ``done()``: 150 ms in C holding the GIL, then the timer's Python callback."""
    while not done():
        HOLD_GIL_US(TICK_US)
        poll()


def run_bare(segmenter, request):
    started = time.perf_counter()
    segmenter.segment(request)
    return time.perf_counter() - started


def run_thread(segmenter, request, wait_s=0.0):
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(lambda: None).result()  # the thread exists before timing, as Slicer's persistent one did
        finished = threading.Event()
        started = time.perf_counter()
        future = pool.submit(segmenter.segment, request)
        future.add_done_callback(lambda _: finished.set())
        slicer_main_loop(future.done, (lambda: finished.wait(wait_s)) if wait_s else (lambda: None))
        future.result()
        return time.perf_counter() - started


def run_process(worker, request, model):
    started = time.perf_counter()
    job = worker.submit(request, model=model)
    slicer_main_loop(job.done, job.progress)
    job.result()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in the inference process")
    parser.add_argument("--skip", nargs="*", default=[], help="rows to leave out (thread is slow by design)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch

    from KnowledgeSAMLib.mrml import Segmenter, WorkerProcess

    torch.set_num_threads(args.threads)
    request = sample_request()
    segmenter = Segmenter(args.model)
    run_bare(segmenter, request)  # warm-up: model loaded, caches filled
    worker = WorkerProcess(env={"KNOWLEDGESAM_WORKER_THREADS": str(args.threads)})
    run_process(worker, request, args.model)  # warm-up: process started, model loaded there
    rows = {"bare": lambda: run_bare(segmenter, request), "thread": lambda: run_thread(segmenter, request),
            "thread+wait": lambda: run_thread(segmenter, request, 0.03),
            "process": lambda: run_process(worker, request, args.model)}
    times: dict[str, list[float]] = {name: [] for name in rows if name not in args.skip}
    try:
        for _ in range(args.repeats):
            for name in times:
                times[name].append(rows[name]())
                print(f"{name:12s} {times[name][-1]:7.2f} s", flush=True)
    finally:
        worker.stop()
    best = {name: min(values) for name, values in times.items()}
    for name, value in best.items():
        print(f"{name:12s} best {value:7.2f} s  ({value / best['bare']:.2f}x bare)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "threads": args.threads, "times_s": times,
                                         "best_s": best}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
