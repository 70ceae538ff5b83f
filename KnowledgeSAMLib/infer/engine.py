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
from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch

from ..data.intensity import get_preset
from ..data.volume import Labels
from ..data.resize import SquareFit
from .between import blend_between_labelled, fill_between_labelled
from .cancel import CancelToken, Progress
from .cpu_runtime import use_cpu_runtime
from .device import DevicePolicy, choose_device
from .focus import resolve_roi, run_focused
from .gpu_precision import use_bf16
from .interactive import suggestion
from .modes import RUNNERS, RunContext, labelled_override, run_volume
from .output import assemble_labels, labels_from_probabilities, postprocess
from .provenance import engine_record
from .reference import EmbeddingCache, ReferenceBank, ReferenceCache, SliceSource
from .request import EngineOptions, SegmentationResult, SegmentRequest, labelled_slices, prepare_request
from .self_check import agreement_per_slice, failed_slices, unreliable_slices, warning_for
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


class _Runner:
    """Everything one ``segment`` call shares between its passes (coarse, per region, mirrored).

    A pass runs the chosen mode over some target slices, optionally looking only at a crop of the target and of
    the reference (:mod:`.roi`), and leaves its probabilities on the whole target grid.
    """

    def __init__(self, request: SegmentRequest, prepared, model, tracker: Progress,
                 reference_cache: ReferenceCache | None) -> None:
        self.request, self.prepared, self.model, self.tracker = request, prepared, model, tracker
        self.opts = request.options.for_mode(prepared.mode)  # e.g. propagate mode's own threshold
        target, reference = request.target, request.reference
        self.same = prepared.same_volume
        self.size = int(model.config.image_size)
        self.tview = axis_view(target.shape, target.geometry, request.axis)
        self.rview = self.tview if self.same else axis_view(reference.shape, reference.geometry, request.axis)
        preset = get_preset(request.preset)
        self.t_map = preset.fit(target)
        self.r_map = self.t_map if self.same else preset.fit(reference)
        self.policy = DevicePolicy(choose_device(request.device), int(request.batch_size),
                                   bf16_on_cuda=use_bf16(self.opts.mixed_precision, model),
                                   grow_batch=self.opts.batch_from_memory)
        self.dtype = getattr(torch, self.opts.embedding_dtype)
        # without a caller's cache, one for this call: the passes of a focused run share the reference's crops
        self.reference_cache = reference_cache if reference_cache is not None else ReferenceCache()
        self.reference_key = self.target_key = None
        if not self.same:
            self.reference_key = (_digest(reference.array), reference.geometry,
                                  _digest(prepared.reference_labels.layers), request.axis,
                                  tuple(sorted(self.r_map.to_dict().items())), self.size, str(self.dtype),
                                  model_fingerprint(model))
        if reference_cache is not None:  # the target's embeddings outlive the call too (an annotator's update,
            # a rerun with other settings); the cache's size bound decides how many volumes are kept
            self.target_key = ("volume", _digest(target.array), target.geometry, request.axis,
                               tuple(sorted(self.t_map.to_dict().items())), self.size, str(self.dtype),
                               model_fingerprint(model))
        self.runs: list[RunContext] = []

    def source(self, image, view, mapping, crop, mirrored: bool) -> SliceSource:
        shape = view.slice_shape if crop is None else (crop[1] - crop[0], crop[3] - crop[2])
        return SliceSource(image, view, mapping, SquareFit(shape, view.spacing_hw, self.size), mirrored, crop)

    def run(self, slices: list[int], *, mirrored: bool = False, target_crop=None, reference_crop=None,
            segments=None, labels: Labels | None = None, target_pos: np.ndarray | None = None,
            extent: tuple[float, float] | None = None) -> RunContext:
        """One pass of the mode over ``slices``; see the class docstring."""
        request, prepared = self.request, self.prepared
        segments = list(segments or prepared.segments)
        labels = labels if labels is not None else prepared.reference_labels
        t_src = self.source(request.target, self.tview, self.t_map, target_crop, mirrored)
        same_source = self.same and target_crop == reference_crop
        r_src = t_src if same_source else self.source(request.reference, self.rview, self.r_map, reference_crop,
                                                       mirrored)
        kept = None
        if self.target_key is not None:
            kept = self.reference_cache.entry(self.target_key, (mirrored, target_crop))["embeddings"]
        targets = EmbeddingCache(self.model, t_src, self.policy, self.dtype, self.tracker, store=kept,
                                 retain=kept is not None)
        key = None if self.reference_key is None else (self.reference_key, (mirrored, reference_crop))
        bank = ReferenceBank(self.model, r_src, labels, segments, self.policy, request.reference_slices,
                             cache=targets if same_source else None, prompt_cache_size=self.opts.prompt_cache_size,
                             embedding_dtype=self.dtype, progress=self.tracker,
                             shared=self.reference_cache if key is not None else None, shared_key=key)

        def fall_back(cpu: torch.device) -> None:  # out of memory on the GPU: model and caches move to the CPU
            self.model.to(cpu)
            targets.move_to(cpu)
            bank.move_to(cpu)

        self.policy.on_fallback = fall_back
        ctx = RunContext(model=self.model, policy=self.policy, options=self.opts, progress=self.tracker, target=t_src,
                         targets=targets, bank=bank, segments=segments, slices=slices, same_volume=self.same)
        ctx.absent = {seg.name: prepared.absent.get(seg.name, []) for seg in segments}
        if prepared.mode == "volume":
            run_volume(ctx, target_pos=target_pos, extent=extent)
        else:
            RUNNERS[prepared.mode](ctx)
        self.runs.append(ctx)
        return ctx

    def orientations(self) -> tuple[bool, ...]:
        return (False, True) if self.opts.flip_tta else (False,)


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
    runner = _Runner(request, prepared, model, tracker, reference_cache)
    tview = runner.tview
    slices = list(range(*request.slice_range)) if request.slice_range else list(range(tview.n))
    roi = resolve_roi(request.roi, request.target, tview, slices)

    was_training = bool(getattr(model, "training", False))
    model.to(runner.policy.device)
    model.eval()
    encoder_runtime = use_cpu_runtime(model, runner.policy.device, request.options.cpu_runtime)
    inference_started = time.perf_counter()
    try:
        pinned = getattr(model, "runtimes_pinned", None)  # weights are fixed for the run: check them once
        with torch.inference_mode(), (pinned() if pinned is not None else nullcontext()):
            ctx, roi_record = run_focused(runner, slices, roi)
    finally:
        model.train(was_training)
    inference_s = time.perf_counter() - inference_started
    tracker.check()

    checks: dict[str, dict[str, float]] = {}
    warnings: list[str] = []
    if prepared.mode == "propagate":
        checks, warnings = _between_labelled(ctx, prepared, request, runner.opts, tview, slices)
    drawn = {}
    if prepared.same_volume and request.options.keep_reference_labels:
        drawn = labelled_override(ctx, prepared.reference_labels, request.reference_slices)
    _clear_absent(ctx, prepared, slices)
    labels = _final_labels(ctx, prepared, request, runner.opts, tview, slices, drawn)
    tracker.check()
    provenance = _provenance(request, prepared, runner, ctx, slices, roi_record, labels, inference_s, started)
    provenance["encoder_runtime"] = encoder_runtime if runner.policy.device.type == "cpu" else "torch"
    if prepared.mode == "propagate":
        provenance["self_check"] = checks  # per structure: labelled slice -> Dice of the model's own prediction
    provenance["warnings"] = warnings
    confidence = {name: np.asarray(values, dtype=np.float32) for name, values in ctx.confidence.items()}
    result = SegmentationResult(labels=labels, confidence=confidence, provenance=provenance,
                                probabilities=ctx.probabilities if request.keep_probabilities else None)
    if prepared.mode == "propagate" and prepared.same_volume:  # the annotator's loop: where to look next
        provenance["next_slice_to_check"] = suggestion(request, result, prepared)
    return result


def _final_labels(ctx: RunContext, prepared, request: SegmentRequest, options: EngineOptions, view,
                  slices: list[int], drawn: dict[str, dict[int, np.ndarray]]) -> Labels:
    """Post-processed masks with the user's own slices imposed exactly (smoothing must not alter what was drawn)
    and nothing outside the requested slices."""
    masks = postprocess(ctx.probabilities, prepared.segments, view, options)
    outside = [k for k in range(view.n) if k not in set(slices)]
    empty = np.zeros(view.slice_shape, dtype=bool)
    for seg in prepared.segments:
        for k, plane in drawn.get(seg.name, {}).items():
            view.put(masks[seg.name], k, plane)
        for k in prepared.absent.get(seg.name, []) + outside:
            view.put(masks[seg.name], k, empty)
    return assemble_labels(masks, prepared.segments, request.target.geometry, request.target.shape)


def _between_labelled(ctx: RunContext, prepared, request: SegmentRequest, options: EngineOptions, view,
                      slices: list[int]) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Propagate mode, between each structure's labelled slices: the self-check (:mod:`.self_check`), then the
    interpolated shape blended into the model's probabilities (:mod:`.between`) — or, next to a labelled slice the
    model could not reproduce, the interpolated shape alone (and nothing beyond it). Returns the per-slice
    agreements and the warnings."""
    labels = prepared.reference_labels
    found = labelled_slices(labels, prepared.segments, view.slice_has, request.reference_slices)
    checks: dict[str, dict[str, float]] = {}
    warnings: list[str] = []
    for seg in prepared.segments:
        drawn = {int(k): np.ascontiguousarray(view.get(labels.layers[seg.layer], int(k))) == seg.label_value
                 for k in found[seg.name]}
        absent = prepared.absent.get(seg.name, ())
        probabilities = ctx.probabilities[seg.name]
        agreement = agreement_per_slice(probabilities, drawn, view, options.byte_threshold)
        if agreement:
            checks[seg.name] = {str(k): round(v, 3) for k, v in agreement.items()}
        failed = failed_slices(agreement, drawn, request.options.self_check_min)
        fill, clear = unreliable_slices(agreement, failed, absent, slices)
        empty = np.zeros(view.slice_shape, dtype=np.uint8)
        for k in fill + clear:  # walks that started from a prediction the model could not get right
            view.put(probabilities, k, empty)
        if fill:
            fill_between_labelled(probabilities, drawn, view, absent=absent, slices=fill)
        if request.options.between_weight > 0:
            filled = set(fill)
            rest = [k for k in slices if k not in filled]
            blend_between_labelled(probabilities, drawn, view, request.options.between_weight, absent=absent,
                                   slices=rest)
        warning = warning_for(seg.name, agreement, failed)
        if warning:
            warnings.append(warning)
    return checks, warnings


def _clear_absent(ctx: RunContext, prepared, slices: list[int]) -> None:
    """Slices the annotator marked "structure absent" stay empty, whatever the mode predicted there."""
    wanted = set(slices)
    for seg in prepared.segments:
        for k in prepared.absent.get(seg.name, []):
            if k in wanted:
                ctx.clear(seg, k, 1.0)


def _provenance(request: SegmentRequest, prepared, runner: _Runner, ctx: RunContext, slices: list[int],
                roi_record: dict, labels: Labels, inference_s: float, started: float) -> dict:
    timings = {"inference_s": round(inference_s, 3), "total_s": round(time.perf_counter() - started, 3)}
    return engine_record(request, prepared, runner.model, fingerprint=model_fingerprint(runner.model),
                         view=runner.tview, slices=slices, labels=labels, mappings=(runner.t_map, runner.r_map),
                         policy=runner.policy, runs=runner.runs, merged=ctx, timings=timings, roi=roi_record)


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
    return labels_from_probabilities(result.probabilities, prepared.segments, view, options.for_mode(prepared.mode),
                                     request.target)
