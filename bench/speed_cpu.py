"""The side-by-side CPU table of ``bench/speed.py``: one case, every way a user could segment it.

Rows: KSAM with the default model (through ``resolve_model("default")``) and ``lite``, each in eager PyTorch and on
the CPU engine (``EngineOptions.cpu_runtime``: encoder and heads), LiteMedSAM prompted with the truth's box on every slice that holds a
structure (``model/box_prompt.py``, encoder on the CPU engine), and atlas registration
(``bench/atlas_registration.py``). Each row: seconds for the case (models loaded and runtimes compiled before, by a
one-slice warm-up), target slices per second, and the process's peak resident memory during the row. Plus the
encoder alone, eager against the engine, interleaved on the same slices (the ratio the issue's target names).
"""

from __future__ import annotations

import statistics
import time
import warnings

import numpy as np
import torch

from KnowledgeSAMLib.data.volume import Image, Labels
from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, segment


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _ksam(model, target: Image, reference: Image, labels: Labels, runtime: str):
    request = SegmentRequest(target, reference, labels, device="cpu", keep_probabilities=True,
                             options=EngineOptions(cpu_runtime=runtime))
    segment(SegmentRequest(target, reference, labels, device="cpu", slice_range=(0, 1),
                           options=EngineOptions(cpu_runtime=runtime)), model)  # warm-up: export, compile
    started = time.perf_counter()
    result = segment(request, model)
    return time.perf_counter() - started, result


def _boxes(model, target: Image, truth: Labels) -> float:
    """LiteMedSAM with the truth's box on every (slice, structure) the truth holds; returns seconds."""
    from KnowledgeSAMLib.data.intensity import get_preset
    from KnowledgeSAMLib.data.resize import SquareFit
    from KnowledgeSAMLib.infer.reference import SliceSource
    from KnowledgeSAMLib.infer.slicing import axis_view
    from KnowledgeSAMLib.model.box_prompt import BoxPromptedSAM

    box_model = BoxPromptedSAM.from_ksam(model).eval()
    size = model.config.image_size
    started = time.perf_counter()
    view = axis_view(target.shape, target.geometry, "axial")
    source = SliceSource(target, view, get_preset("auto").fit(target), SquareFit(view.slice_shape, view.spacing_hw, size))
    slices = [k for k in range(view.n) if any(view.get(truth.mask(s.name), k).any() for s in truth.segments)]
    with torch.inference_mode():
        for start in range(0, len(slices), 8):
            chunk = slices[start:start + 8]
            embeddings = model.encode(source.images(chunk))  # the KSAM encoder path: the CPU engine when on
            for seg in truth.segments:
                masks = source.masks(truth, seg, chunk)[:, 0]
                keep = [i for i in range(len(chunk)) if masks[i].any()]
                boxes = []
                for i in keep:
                    ys, xs = torch.nonzero(masks[i], as_tuple=True)
                    boxes.append([xs.min(), ys.min(), xs.max(), ys.max()])
                if keep:
                    box_model.decode(embeddings[keep], torch.tensor(boxes, dtype=torch.float32))
    return time.perf_counter() - started


def side_by_side(target: Image, reference: Image, labels: Labels, truth: Labels, peak_rss) -> tuple[list[dict], dict]:
    """The rows, and the lite eager-vs-engine agreement on the case."""
    from KnowledgeSAMLib.model.build import build_model
    from KnowledgeSAMLib.model.registry import resolve_model

    n = target.shape[0]
    rows, results = [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default = resolve_model("default")
        lite = build_model("lite")
    name = default.config.name
    plan = [(f"KSAM default model ({name}), eager PyTorch", default, "torch"),
            (f"KSAM default model ({name}), CPU engine", default, "auto"),
            ("KSAM lite, eager PyTorch", lite, "torch"), ("KSAM lite, CPU engine", lite, "auto")]
    for label, model, runtime in plan:
        with peak_rss() as rss:
            seconds, result = _ksam(model, target, reference, labels, runtime)
        results[label] = result
        rows.append({"method": label, "seconds": seconds, "slices_per_s": n / seconds, "rss_peak_mib": rss.peak / 2**20,
                     "encoder_runtime": result.provenance["encoder_runtime"]})
    with peak_rss() as rss:
        seconds = _boxes(lite, target, truth)  # lite still has its CPU engine from the row above
    rows.append({"method": "LiteMedSAM, truth box per slice (CPU engine encoder)", "seconds": seconds,
                 "slices_per_s": n / seconds, "rss_peak_mib": rss.peak / 2**20})
    try:
        from bench.atlas_registration import atlas_segment

        with peak_rss() as rss:
            started = time.perf_counter()
            atlas_segment(target, reference, labels)
            seconds = time.perf_counter() - started
        rows.append({"method": "atlas registration (SimpleITK affine + B-spline)", "seconds": seconds,
                     "slices_per_s": n / seconds, "rss_peak_mib": rss.peak / 2**20})
    except Exception as error:  # noqa: BLE001 - a failed baseline is a row that says so, not a failed benchmark
        rows.append({"method": f"atlas registration: failed ({error})", "seconds": float("nan"),
                     "slices_per_s": float("nan"), "rss_peak_mib": float("nan")})
    agreement = {model: _agreement(results[f"{model}, eager PyTorch"], results[f"{model}, CPU engine"])
                 for model in (f"KSAM default model ({name})", "KSAM lite")}
    return rows, agreement


def _agreement(eager, fast) -> dict:
    """How far the CPU engine's result is from eager PyTorch's on the same case."""
    return {"dice": {s.name: _dice(eager.labels.mask(s.name), fast.labels.mask(s.name)) for s in eager.labels.segments},
            "max_probability_delta_255": max(int(np.abs(eager.probabilities[k].astype(int)
                                                        - fast.probabilities[k].astype(int)).max())
                                             for k in eager.probabilities),
            "voxels": {s.name: int(eager.labels.mask(s.name).sum()) for s in eager.labels.segments}}


def encoder_ratio(model, images: torch.Tensor, repeats: int) -> dict:
    """Eager PyTorch against the model's CPU engine on the same slices, interleaved (load hits both alike)."""
    runtime = model.encoder_runtime
    normalised = model.normalise(images)
    eager_times, engine_times = [], []
    with torch.inference_mode():
        eager = model.image_encoder(normalised)
        delta = float((runtime(normalised) - eager).abs().max())
        for _ in range(repeats):
            started = time.perf_counter()
            model.image_encoder(normalised)
            eager_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            runtime(normalised)
            engine_times.append(time.perf_counter() - started)
    n = images.shape[0]
    return {"runtime": runtime.name, "slices": n, "repeats": repeats,
            "eager_ms_per_slice": 1e3 * statistics.median(eager_times) / n,
            "engine_ms_per_slice": 1e3 * statistics.median(engine_times) / n,
            "ratio": statistics.median(eager_times) / statistics.median(engine_times),
            "ratios": [e / f for e, f in zip(eager_times, engine_times)], "max_abs_delta": delta}
