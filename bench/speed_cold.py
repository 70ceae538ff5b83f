"""Cold start of ``knowledgesam segment``: what a fresh process pays before and up to its first slice.

Run in a fresh interpreter (``python bench/speed_cold.py --target ... --reference ... --labels ...``) it prints one
JSON line of phase times: importing torch, importing the library's engine, loading the model, the first slice
(one target slice through the engine: the reference's encoding, and on the CPU engine its compile, included), and
which heavy modules were imported.
``bench/speed.py`` runs it as a subprocess, and also times the whole CLI command in another fresh process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def phases(model: str, target: str, reference: str, labels: str, threads: int | None, runtime: str = "auto") -> dict:
    started = time.perf_counter()
    import torch

    if threads:
        torch.set_num_threads(threads)
    t_torch = time.perf_counter()
    from KnowledgeSAMLib.data.io import read_image, read_labels
    from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest
    from KnowledgeSAMLib.infer.segmenter import Segmenter

    t_lib = time.perf_counter()
    segmenter = Segmenter(model)
    segmenter.load_model()
    t_model = time.perf_counter()
    target_image, reference_image = read_image(target), read_image(reference)
    request = SegmentRequest(target_image, reference_image, read_labels(labels), device="cpu", slice_range=(0, 1),
                             options=EngineOptions(cpu_runtime=runtime))
    segmenter.segment(request)
    t_first = time.perf_counter()
    return {"import_torch_s": t_torch - started, "import_engine_s": t_lib - t_torch, "load_model_s": t_model - t_lib,
            "first_slice_s": t_first - t_model, "to_first_slice_s": t_first - started,
            "imported": {name: name in sys.modules for name in ("peft", "transformers", "openvino", "onnxruntime")}}


def measure(model: str, target: Path, reference: Path, labels: Path, threads: int | None, runtime: str = "auto") -> dict:
    """Phase times in a fresh process, then the whole CLI command on the case in another fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--model", model, "--target", str(target),
               "--reference", str(reference), "--labels", str(labels), "--cpu-runtime", runtime]
    command += ["--threads", str(threads)] if threads else []
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    out = target.parent / f"cold-{model.replace('/', '_')}.seg.nrrd"
    cli = [sys.executable, "-m", "KnowledgeSAMLib.cli", "segment", "--model", model, "--target", str(target),
           "--reference", str(reference), "--reference-labels", str(labels), "--output", str(out), "--overwrite",
           "--quiet", "--device", "cpu", "--cpu-runtime", runtime]
    env_threads = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    import os

    started = time.perf_counter()
    subprocess.run(cli, capture_output=True, text=True, cwd=ROOT, check=True, env={**os.environ, **env_threads})
    record["cli_case_s"] = time.perf_counter() - started
    return record


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--target", required=True)
    parser.add_argument("--reference", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--cpu-runtime", default="auto")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    print(json.dumps(phases(args.model, args.target, args.reference, args.labels, args.threads, args.cpu_runtime)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
