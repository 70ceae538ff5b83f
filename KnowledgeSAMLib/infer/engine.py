"""``segment``: the one loop over slices that the CLI, the Slicer bridge and the batch script all use.

Order of work: validate everything (fail before compute), cut both volumes along the chosen axis,
fit one intensity mapping per volume, run the chosen mode (anchor / propagate / volume) with shared
per-slice target embeddings and a cached reference (a second time on the mirrored target and reference
when ``flip_tta`` is on, the two probability maps averaged), post-process, and return labels in exactly
the target's geometry with per-slice confidence and provenance. Nothing is written here (see output.py).
"""

from __future__ import annotations

import hashlib
import time
import weakref
from typing import Callable

import numpy as np
import torch

from ..data.intensity import get_preset
from ..data.volume import Labels
from ..data.resize import SquareFit
from .cancel import CancelToken, Progress
from .device import DevicePolicy, choose_device
from .modes import RUNNERS, RunContext, average_runs, labelled_override
from .output import labels_from_probabilities
from .provenance import engine_record
from .reference import EmbeddingCache, ReferenceBank, ReferenceCache, SliceSource
from .request import EngineOptions, SegmentationResult, SegmentRequest, prepare_request
from .slicing import axis_view, slice_count

__all__ = ["segment", "relabel", "model_fingerprint"]

_FINGERPRINTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[int, str]]" = weakref.WeakKeyDictionary()


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA256 over the model's tensors (names, shapes, bytes): which weights produced a result.

    Cached per model object until a tensor is replaced or modified in place (storage pointers and
    version counters).
    """
    state = model.state_dict()
    version = hash(tuple((t.data_ptr(), int(getattr(t, "_version", 0))) for t in state.values()))
    cached = _FINGERPRINTS.get(model)
    if cached is not None and cached[0] == version:
        return cached[1]
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    _FINGERPRINTS[model] = (version, digest.hexdigest())
    return _FINGERPRINTS[model][1]


def _digest(array: np.ndarray) -> str:
    """Content hash of an array (shape, type, bytes): cache keys that survive copies and resampling."""
    digest = hashlib.blake2b(f"{array.shape}:{array.dtype}".encode(), digest_size=16)
    contiguous = np.ascontiguousarray(array)
    for k in range(contiguous.shape[0]):  # slice by slice: no full-volume byte copy
        digest.update(contiguous[k].tobytes())
    return digest.hexdigest()


def segment(request: SegmentRequest, model, progress: Callable[[int, int], None] | None = None,
            cancel: CancelToken | None = None, reference_cache: ReferenceCache | None = None) -> SegmentationResult:
    """Segment ``request.target`` with the knowledge prompt (reference image + labels); see
    :class:`SegmentRequest`. Raises :class:`InputError` on bad input and :class:`CancelledError` when
    ``cancel`` is triggered (checked between batches; nothing is returned or written then).

    ``reference_cache`` (optional) keeps the reference's embeddings for the next call with the same
    reference, e.g. many targets segmented with one labelled reference volume.
    """
    started = time.perf_counter()
    tracker = Progress(progress, cancel)
    tracker.check()
    prepared = prepare_request(request, slice_count)
    opts = request.options
    target, reference, same = request.target, request.reference, prepared.same_volume
    size = int(model.config.image_size)

    tview = axis_view(target.shape, target.geometry, request.axis)
    rview = tview if same else axis_view(reference.shape, reference.geometry, request.axis)
    slices = list(range(*request.slice_range)) if request.slice_range else list(range(tview.n))
    preset = get_preset(request.preset)
    t_map = preset.fit(target)
    r_map = t_map if same else preset.fit(reference)

    device = choose_device(request.device)
    policy = DevicePolicy(device, int(request.batch_size), bf16_on_cuda=opts.mixed_precision)
    dtype = getattr(torch, opts.embedding_dtype)
    reference_key = None
    if reference_cache is not None and not same:
        reference_key = (_digest(reference.array), reference.geometry, _digest(prepared.reference_labels.layers),
                         request.axis, tuple(sorted(r_map.to_dict().items())), size, str(dtype),
                         model_fingerprint(model))

    def run_orientation(mirrored: bool) -> RunContext:
        """One full pass of the mode, on the target and reference as they are or mirrored left-right."""
        t_src = SliceSource(target, tview, t_map, SquareFit(tview.slice_shape, tview.spacing_hw, size), mirrored)
        r_src = t_src if same else SliceSource(reference, rview, r_map,
                                               SquareFit(rview.slice_shape, rview.spacing_hw, size), mirrored)
        targets = EmbeddingCache(model, t_src, policy, dtype, tracker)
        bank = ReferenceBank(model, r_src, prepared.reference_labels, prepared.segments, policy,
                             request.reference_slices, cache=targets if same else None,
                             prompt_cache_size=opts.prompt_cache_size, embedding_dtype=dtype, progress=tracker,
                             shared=reference_cache,
                             shared_key=None if reference_key is None else reference_key + (mirrored,))

        def fall_back(cpu: torch.device) -> None:  # out of memory on the GPU: model and caches move to the CPU
            model.to(cpu)
            targets.move_to(cpu)
            bank.move_to(cpu)

        policy.on_fallback = fall_back
        ctx = RunContext(model=model, policy=policy, options=opts, progress=tracker, target=t_src, targets=targets,
                         bank=bank, segments=prepared.segments, slices=slices, same_volume=same)
        RUNNERS[prepared.mode](ctx)
        return ctx

    was_training = bool(getattr(model, "training", False))
    model.to(device)
    model.eval()
    inference_started = time.perf_counter()
    try:
        with torch.inference_mode():
            runs = [run_orientation(mirrored) for mirrored in ((False, True) if opts.flip_tta else (False,))]
    finally:
        model.train(was_training)
    inference_s = time.perf_counter() - inference_started
    tracker.check()
    ctx = average_runs(runs)

    if same and opts.keep_reference_labels:
        labelled_override(ctx, prepared.reference_labels)
    labels = labels_from_probabilities(ctx.probabilities, prepared.segments, tview, opts, target)
    tracker.check()
    timings = {"inference_s": round(inference_s, 3), "total_s": round(time.perf_counter() - started, 3)}
    provenance = engine_record(request, prepared, model, fingerprint=model_fingerprint(model), view=tview,
                               slices=slices, labels=labels, mappings=(t_map, r_map), policy=policy, runs=runs,
                               merged=ctx, timings=timings)
    confidence = {name: np.asarray(values, dtype=np.float32) for name, values in ctx.confidence.items()}
    return SegmentationResult(labels=labels, confidence=confidence, provenance=provenance,
                              probabilities=ctx.probabilities if request.keep_probabilities else None)


def relabel(request: SegmentRequest, result: SegmentationResult, options: EngineOptions) -> Labels:
    """The labels ``segment(request)`` returns with other *post-processing* options (threshold, overlap,
    contested, smooth_z, largest_component), from ``result``'s probabilities — no model run.

    Why: choosing post-processing settings (``bench/tune_engine.py``) would otherwise recompute the same
    probabilities once per setting. Retrieval and test-time options in ``options`` do not apply here.
    """
    if result.probabilities is None:
        raise ValueError("relabel needs a result computed with SegmentRequest(keep_probabilities=True)")
    prepared = prepare_request(request, slice_count)
    view = axis_view(request.target.shape, request.target.geometry, request.axis)
    return labels_from_probabilities(result.probabilities, prepared.segments, view, options, request.target)
