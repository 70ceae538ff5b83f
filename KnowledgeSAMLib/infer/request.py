"""What the engine is asked to do (:class:`SegmentRequest`), how (:class:`EngineOptions`) and what it
returns (:class:`SegmentationResult`), plus the checks that turn bad input into one clear line.

Why validation lives here and not in the CLI: the Slicer module, the batch script and the CLI all call
the engine, and each must refuse the same bad input with the same message before any compute starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..choices import (AXES, CONTESTED, CPU_RUNTIMES, DEFAULT_AXIS, DEFAULT_BATCH_SIZE, DEFAULT_CPU_RUNTIME,
                       DEFAULT_DEVICE, DEFAULT_MODE, DEFAULT_PRESET, DEVICES, MODES, OVERLAPS)
from ..data.volume import Image, Labels, Segment
from ..errors import InputError

__all__ = [
    "AXES", "MODES", "DEVICES", "EngineOptions", "SegmentRequest", "SegmentationResult",
    "PreparedRequest", "prepare_request", "labelled_slices", "grid_notice",
]


@dataclass(frozen=True)
class EngineOptions:
    """Tuning knobs of the slice-wise engine (KSAM_SPEC §5.12).

    Current defaults, chosen by ``python bench/tune_engine.py`` with the stage-10 default model on
    *validation* pairs only (kidney ROI phantoms 1000–1002, each with training phantoms 0–3 as references, and
    hippocampus 057/058/060 with references 001/003/004; mean Dice over artery, medulla, cortex, head, body):

    * ``position_prior="aligned"`` (was ``"scan"``): the reference's labelled slices are placed in the target
      by a 1D affine alignment of the slice stacks (:mod:`.alignment`) before the position penalty is applied.
      The scan-range prior assumed the structures sit at the same relative height in both scans; references
      whose kidney lies higher or lower lost whole slabs of medulla (stage 9, held-out target 5004 with
      reference 5104: 0.47). Validation means, stage 10: scan 0.844, two-pass 0.853, aligned 0.854,
      similarity only 0.836 (hippocampus body 0.723); stage 9: 0.819 / 0.850 / 0.845 / 0.822.
    * ``contested="probability"``, ``smooth_z=True``, ``threshold=0.4`` (were ``"smaller"``, off, 0.5): on the
      aligned retrieval the post-processing rounds gave 0.854 → 0.860 (probability + smoothing) → 0.864
      (threshold 0.4). Stage 6 had needed ``contested="smaller"`` (its probability argmax erased most of the
      renal artery: 0.706 vs 0.832); stage 10's artery does better with the argmax (0.869 → 0.880 on aligned
      retrieval), and a weak model still does better with ``"smaller"`` — pass it for such models.
    * ``flip_tta=False``: flipping scored 0.867 against 0.864 at twice the compute; pass ``flip_tta=True``
      (CLI ``--flip-tta``) when the time is there.
    * ``top_k=1`` and ``position_weight=0.5`` have been the best of the grid with every model since stage 6
      (top-2/3 fusion and weights 1–4 scored lower); the largest-component filter costs the medulla, whose
      pyramids are separate components (0.858 → 0.739).

    ``overlap="auto"`` keeps the reference's exclusivity (argmax between structures of one layer) even where
    ``"layers"`` scores a little higher (stage 10: 0.857 vs 0.854 with the other defaults of that round): a user
    whose reference is a partition expects a partition back. Pass ``overlap="layers"`` to keep every
    structure's own mask. Held-out results with these defaults are in the default model's card.
    """

    threshold: float = 0.4  # probability above which a pixel is foreground (another scan as reference)
    # propagate mode (the target's own labelled slices): the model is surer of itself there, and 0.4 let the walk
    # run past the structure's ends. Chosen with propagate_min_confidence on 36 MSD hippocampus volumes no training
    # step used (msd-hippocampus-more), n slices per structure: (0.4, 0.3) 0.872 / 0.912 / 0.953 at n = 2 / 4 / 8
    # on 24 of them, (0.5, 0.5) 0.882 / 0.924 / 0.962, (0.45, 0.5) 0.880 / 0.924 / 0.963, (0.5, 0.65) 0.872 /
    # 0.913 / 0.959, (0.5, 0.3) 0.879 / 0.918 / 0.958; (0.6, 0.3) lower on the other 12
    propagate_threshold: float = 0.5
    # volume mode: score s(r) = cos(g_z, g_r) - position_weight * |u_z - u_r|, top-k softmax(s / T) fusion
    top_k: int = 1
    position_weight: float = 0.5
    temperature: float = 0.1
    position_prior: str = "aligned"  # "aligned" (scan, after aligning the stacks) | "scan" | "two-pass" | "none"
    first_pass_k: int = 1  # references fused in the similarity-only first pass (only its extent is used)
    min_similarity: float | None = None  # below this best score the slice is left empty
    # propagate mode: stop walking when the prediction is empty or the IoU head falls below this
    propagate_min_confidence: float = 0.5
    propagate_min_pixels: int = 1
    # within this many slices of a labelled slice, average anchor and propagated. 4 chosen on the 40 tuning volumes of
    # msd-hippocampus-more (no training step reads them), n evenly spread labelled slices per structure, n = 1/2/4/8:
    # 2 0.858/0.878/0.918/0.959, 3 -/0.878/0.919/-, 4 0.859/0.882/0.919/0.959, every slice 0.882/0.919 at n = 2/4
    hybrid_slices: int = 4
    # between two labelled slices, the shape interpolated from both is blended in with weight g / (g + gap);
    # this is g (0: the model alone; infer/between.py). Chosen on 12 *training* MSD hippocampus volumes, n slices
    # per structure at n = 2/4/8: g = 0 0.880/0.904/0.944, 4 0.884/0.915/0.951, 8 0.885/0.916/0.949,
    # 12 0.884/0.915/0.948
    between_weight: float = 4.0
    # propagate mode: next to a labelled slice that the model reproduces with a Dice below this (its own prediction
    # there, the slice its own reference), the structure is interpolated from the drawn slices alone and left
    # empty beyond them, with a warning (infer/self_check.py); 0 = never. On 40 msd-hippocampus-more volumes at
    # 1/2/4/8 labelled slices (560 labelled slices; 1st percentile 0.51, 2 below 0.3) the loop scores
    # 0.858/0.878/0.918/0.959 with 0.3 and with 0 (drawn slices under a quarter of the largest are not judged:
    # self_check.MIN_JUDGED_SHARE); on the TotalSegmentator example CT (kidneys, liver, aorta, IVC) every labelled
    # slice is below 0.07, and the loop goes from 0.047/0.095/0.263/0.644 to 0.047/0.480/0.751/0.870
    self_check_min: float = 0.3
    # post-processing (§5.12C)
    largest_component: bool = False
    smooth_z: bool = True  # 1-2-1 smoothing of probabilities across slices before thresholding
    overlap: str = "auto"  # "auto" (as the reference: shared layer => exclusive), "layers", "argmax"
    contested: str = "probability"  # who keeps a voxel two exclusive structures claim: "probability" | "smaller"
    keep_reference_labels: bool = True  # same volume: the user's labelled slices are kept as drawn
    # test-time augmentation: also run on the left-right mirrored target and reference, average (2x compute)
    flip_tta: bool = False
    # compute
    # bf16 autocast on CUDA (fp32 elsewhere); "measured": only for configs where the last GPU lease measured bf16
    # faster than fp32 (infer/gpu_precision.json, written by bench/speed.py --device cuda --record-precision)
    mixed_precision: bool | str = True
    # CUDA: grow the batch to what free memory holds (up to 128 slices; an out-of-memory error backs off)
    batch_from_memory: bool = False
    # what runs the image encoder and heads on the CPU (infer/cpu_runtime.py): "auto" (OpenVINO, else ONNX Runtime,
    # for models of 128 px or more: small, lite, vit_b), "openvino", "onnxruntime" or "torch" (eager PyTorch, the
    # reference); a runtime that is not installed falls back to PyTorch with one line saying so
    cpu_runtime: str = DEFAULT_CPU_RUNTIME
    # caches
    embedding_dtype: str = "float16"
    prompt_cache_size: int = 64

    @property
    def byte_threshold(self) -> int:
        """:attr:`threshold` on the uint8 probability maps (0-255) the engine keeps."""
        return int(round(self.threshold * 255))

    def for_mode(self, mode: str) -> "EngineOptions":
        """The options a run in ``mode`` uses: propagate mode thresholds at :attr:`propagate_threshold`."""
        return replace(self, threshold=self.propagate_threshold) if mode == "propagate" else self

    def __post_init__(self) -> None:
        if not (0.0 < self.threshold < 1.0 and 0.0 < self.propagate_threshold < 1.0):
            raise ValueError("threshold and propagate_threshold must lie between 0 and 1")
        if self.position_prior not in ("two-pass", "scan", "aligned", "none"):
            raise ValueError(f"position_prior must be two-pass, scan, aligned or none, not {self.position_prior!r}")
        if self.overlap not in OVERLAPS:
            raise ValueError(f"overlap must be auto, layers or argmax, not {self.overlap!r}")
        if self.contested not in CONTESTED:
            raise ValueError(f"contested must be probability or smaller, not {self.contested!r}")
        if self.top_k < 1 or self.first_pass_k < 1:
            raise ValueError("top_k and first_pass_k must be at least 1")
        if self.temperature <= 0:
            raise ValueError("temperature must be positive")
        if self.between_weight < 0:
            raise ValueError("between_weight must be 0 or more")
        if self.mixed_precision not in (True, False, "measured"):
            raise ValueError(f"mixed_precision must be True, False or 'measured', not {self.mixed_precision!r}")
        if self.cpu_runtime not in CPU_RUNTIMES:
            raise ValueError(f"cpu_runtime must be one of {', '.join(CPU_RUNTIMES)}, not {self.cpu_runtime!r}")


@dataclass
class SegmentRequest:
    """One target, one labelled reference, the structures wanted.

    ``segments`` are segments of ``reference_labels`` (an empty list means all of them).
    ``reference_slices`` restricts the reference labels to these slice indices along ``axis`` (e.g. the
    one slice a user drew; same volume: these slices are complete, so a structure of a layer not drawn on one of
    them is absent there — without them each structure's labelled slices are its own and nothing is implied);
    ``slice_range`` = ``(start, stop)`` limits the target slices segmented; ``roi``
    says where in the slices the model looks (see :mod:`.focus`).
    """

    target: Image
    reference: Image
    reference_labels: Labels
    segments: list[Segment] = field(default_factory=list)
    mode: str = DEFAULT_MODE
    axis: str = DEFAULT_AXIS
    reference_slices: Sequence[int] | None = None
    slice_range: tuple[int, int] | None = None
    device: str = DEFAULT_DEVICE
    batch_size: int = DEFAULT_BATCH_SIZE
    preset: str = DEFAULT_PRESET  # intensity preset name (KnowledgeSAMLib.data.intensity.get_preset)
    options: EngineOptions = field(default_factory=EngineOptions)
    keep_probabilities: bool = False  # also return the probability maps (see ``relabel``)
    # where the model looks (infer/focus.py): "auto" (around the reference's structures and, in another image,
    # where a coarse pass finds them), "none" (whole slices), a voxel ``RoiBox`` or two RAS points
    roi: Any = "auto"
    # target slices (along ``axis``) the annotator marked "structure absent": kept empty, and propagation stops
    # there. A sequence applies to every segment; a mapping gives them per segment name.
    absent_slices: Any = None


@dataclass
class SegmentationResult:
    """Labels in exactly the target geometry, per-slice IoU-head confidence, and provenance.

    ``probabilities`` (only with ``SegmentRequest.keep_probabilities``): per structure, the uint8
    probability map (255 = 1.0) on the target grid before post-processing.
    """

    labels: Labels
    confidence: dict[str, np.ndarray]  # segment name -> (n slices along the axis,), NaN where not run
    provenance: dict[str, Any]
    probabilities: dict[str, np.ndarray] | None = None


@dataclass
class PreparedRequest:
    """A validated request: labels on the reference grid, resolved segments and mode."""

    request: SegmentRequest
    reference_labels: Labels
    segments: list[Segment]
    mode: str
    same_volume: bool
    absent: dict[str, list[int]] = field(default_factory=dict)  # segment name -> slices marked absent
    notes: list[str] = field(default_factory=list)  # what was done to the inputs that a user should know


def _name(image: Image | Labels, role: str) -> str:
    return image.source or f"the {role}"


def _check_image(image: Image, role: str) -> None:
    if not isinstance(image, Image):
        raise InputError(f"{role} must be an Image, got {type(image).__name__}")
    array = image.array
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] != 3):
        raise InputError(f"{_name(image, role)}: expected a 2D or 3D image, got array shape {array.shape}")
    if min(image.shape) < 1:
        raise InputError(f"{_name(image, role)}: image is empty (shape {image.shape})")
    if np.issubdtype(array.dtype, np.floating):
        # chunked over slices so a big volume is never copied as a whole boolean mask
        for k in range(array.shape[0]):
            if not np.isfinite(array[k]).all():
                raise InputError(f"{_name(image, role)}: image contains NaN or infinite intensities")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise InputError(f"{_name(image, role)}: unsupported pixel type {array.dtype}")


def is_same_volume(target: Image, reference: Image) -> bool:
    """True when the reference *is* the target (same-volume modes): same object, file or voxels."""
    if target is reference:
        return True
    if target.shape != reference.shape or not target.geometry.same_grid(reference.geometry):
        return False
    if target.source and target.source == reference.source:
        return True
    return bool(np.shares_memory(target.array, reference.array) or np.array_equal(target.array, reference.array))


def _grid_differences(labels: Labels, reference: Image) -> list[str]:
    a, b = labels.geometry, reference.geometry
    found = []
    if labels.shape != reference.shape:
        found.append(f"size {'x'.join(map(str, labels.shape))} vs {'x'.join(map(str, reference.shape))} voxels")
    if not np.allclose(a.spacing, b.spacing, rtol=1e-4, atol=1e-6):
        found.append("spacing " + " vs ".join("x".join(f"{v:g}" for v in g.spacing) + " mm" for g in (a, b)))
    if not np.allclose(a.origin, b.origin, rtol=0, atol=1e-3):
        found.append("origin " + " vs ".join("(" + ", ".join(f"{v:g}" for v in g.origin) + ")" for g in (a, b)))
    if not np.allclose(a.direction, b.direction, rtol=0, atol=1e-5):
        found.append("orientation")
    return found or ["grid"]


def grid_notice(labels: Labels, reference: Image) -> str | None:
    """The sentence that tells a user their reference labels were resampled (None when on the same grid)."""
    if labels.shape == reference.shape and labels.geometry.same_grid(reference.geometry):
        return None
    return (f"{_name(labels, 'reference labels')} are on another grid than the reference image "
            f"{_name(reference, 'reference')} ({'; '.join(_grid_differences(labels, reference))}); "
            "resampled onto the image (nearest neighbour)")


def _labels_on_reference_grid(labels: Labels, reference: Image) -> Labels:
    if grid_notice(labels, reference) is None:
        return labels
    from ..data.io import resample_labels_to  # owner: data; nearest neighbour as Slicer does

    return resample_labels_to(labels, reference.geometry, reference.shape)


def _resolve_segments(labels: Labels, wanted: Sequence[Segment]) -> list[Segment]:
    if not labels.segments:
        raise InputError(f"{_name(labels, 'reference labels')}: the reference labels contain no segments")
    if not wanted:
        return list(labels.segments)
    resolved = []
    for seg in wanted:
        key: str | int = seg.name if isinstance(seg, Segment) else seg
        try:
            found = labels.find(key)
        except KeyError:
            if isinstance(seg, Segment):
                try:
                    found = labels.find(seg.label_value)
                except KeyError:
                    found = None
            else:
                found = None
            if found is None:
                raise InputError(
                    f"{_name(labels, 'reference labels')}: segment {key!r} is not in the reference labels "
                    f"({', '.join(f'{s.name}={s.label_value}' for s in labels.segments)})"
                ) from None
        if found not in resolved:
            resolved.append(found)
    return resolved


def prepare_request(request: SegmentRequest, slice_count_fn=None) -> PreparedRequest:
    """Check everything that can be checked before compute; raise :class:`InputError` on bad input.

    ``slice_count_fn(image, axis) -> int`` gives the number of slices along the axis (from slicing.py);
    injected to keep this module free of geometry code.
    """
    target, reference = request.target, request.reference
    _check_image(target, "target")
    _check_image(reference, "reference")
    if not isinstance(request.reference_labels, Labels):
        raise InputError(f"reference labels must be Labels, got {type(request.reference_labels).__name__}")
    if target.geometry.ndim != reference.geometry.ndim:
        raise InputError(
            f"{_name(target, 'target')} is {target.geometry.ndim}D but the reference "
            f"{_name(reference, 'reference')} is {reference.geometry.ndim}D; both must be 2D or both 3D"
        )
    if request.axis not in AXES:
        raise InputError(f"unknown axis {request.axis!r}; choose one of {', '.join(AXES)}")
    if target.geometry.ndim == 2 and request.axis != "axial":
        raise InputError(f"{_name(target, 'target')} is a 2D image; only --axis axial applies")
    if request.mode not in MODES:
        raise InputError(f"unknown mode {request.mode!r}; choose one of {', '.join(MODES)}")
    if str(request.device).split(":")[0] not in DEVICES:
        raise InputError(f"unknown device {request.device!r}; choose one of {', '.join(DEVICES)}")
    if int(request.batch_size) < 1:
        raise InputError(f"batch size must be at least 1, got {request.batch_size}")

    labels = request.reference_labels
    if labels.layers.ndim != 4:
        raise InputError(f"{_name(labels, 'reference labels')}: expected (layers, z, y, x) labels")
    notice = grid_notice(labels, reference)
    labels = _labels_on_reference_grid(labels, reference)
    segments = _resolve_segments(labels, request.segments)

    same = is_same_volume(target, reference)
    mode = request.mode
    if mode == "auto":
        mode = "anchor" if same else "volume"
    if mode == "propagate" and not same:
        raise InputError(
            f"propagate mode walks from a labelled slice of the target itself; the reference "
            f"{_name(reference, 'reference')} is another image (use --mode volume or anchor)"
        )

    n_ref = slice_count_fn(reference, request.axis) if slice_count_fn else None
    n_tgt = slice_count_fn(target, request.axis) if slice_count_fn else None
    if request.reference_slices is not None:
        ref_slices = [int(k) for k in request.reference_slices]
        if not ref_slices:
            raise InputError("reference_slices is empty; give at least one labelled slice")
        if n_ref is not None:
            bad = [k for k in ref_slices if not 0 <= k < n_ref]
            if bad:
                raise InputError(
                    f"{_name(reference, 'reference')}: slice {bad[0]} is outside 0..{n_ref - 1} along the "
                    f"{request.axis} axis"
                )
    if request.slice_range is not None and n_tgt is not None:
        start, stop = (int(v) for v in request.slice_range)
        if not 0 <= start < stop <= n_tgt:
            raise InputError(
                f"{_name(target, 'target')}: slice range {start}..{stop} is not within 0..{n_tgt} along the "
                f"{request.axis} axis"
            )
    absent = _absent_slices(request.absent_slices, segments, n_tgt, _name(target, "target"))
    if same:
        for seg in segments:
            plane_has = labels.layers[seg.layer] == seg.label_value
            clash = [k for k in absent.get(seg.name, []) if slice_count_fn and _slice_has(plane_has, request, k)]
            if clash:
                raise InputError(f"slice {clash[0]} is both labelled with {seg.name!r} and marked absent")
        absent = _with_drawn_absences(absent, labels, segments, request)
    return PreparedRequest(request=request, reference_labels=labels, segments=segments, mode=mode,
                           same_volume=same, absent=absent, notes=[notice] if notice else [])


def _with_drawn_absences(absent: dict[str, list[int]], labels: Labels, segments: Sequence[Segment],
                         request: SegmentRequest) -> dict[str, list[int]]:
    """Same volume, ``reference_slices`` given: those slices are complete — every structure of a layer drawn on
    one of them is shown as it is, so a structure of the layer missing there is absent there (negative knowledge
    the annotator gave implicitly; the annotator's loop passes the slices it touched).

    Without ``reference_slices`` nothing is implied: each structure's labelled slices are its own. An annotator
    who draws the head on slice 9 and the body on slice 16 has said nothing about the body on slice 9 (reading
    it as absent there cut holes into held-out hippocampi: bench/interactive.py); "absent" is then explicit
    (``absent_slices``)."""
    from .slicing import axis_view

    if request.reference_slices is None:
        return absent
    view = axis_view(labels.shape, request.reference.geometry, request.axis)
    allowed = {int(k) for k in request.reference_slices}
    drawn_per_layer: dict[int, set[int]] = {}
    for layer in {seg.layer for seg in segments}:
        drawn = {int(k) for k in np.flatnonzero(view.slice_has(labels.layers[layer] > 0))}
        drawn_per_layer[layer] = drawn & allowed
    out = {name: list(ks) for name, ks in absent.items()}
    for seg in segments:
        own = {int(k) for k in np.flatnonzero(view.slice_has(labels.layers[seg.layer] == seg.label_value))}
        implicit = drawn_per_layer[seg.layer] - own
        if implicit:
            out[seg.name] = sorted(set(out.get(seg.name, [])) | implicit)
    return out


def _slice_has(mask: np.ndarray, request: SegmentRequest, k: int) -> bool:
    from .slicing import axis_view

    view = axis_view(mask.shape, request.reference.geometry, request.axis)
    return bool(view.get(mask, int(k)).any())


def _absent_slices(value: Any, segments: Sequence[Segment], n_slices: int | None, where: str) -> dict[str, list[int]]:
    """``absent_slices`` as {segment name: sorted slices}; out-of-range slices or unknown names are refused."""
    if value is None:
        return {}
    names = [seg.name for seg in segments]
    if isinstance(value, dict):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise InputError(f"absent slices given for {unknown[0]!r}, which is not among the segments "
                             f"({', '.join(names)})")
        per = {name: list(value.get(name, ())) for name in names}
    else:
        per = {name: list(value) for name in names}
    out = {}
    for name, ks in per.items():
        try:
            ks = sorted({int(k) for k in ks})
        except (TypeError, ValueError):
            raise InputError(f"absent slices must be slice numbers, got {ks!r}") from None
        if n_slices is not None and any(not 0 <= k < n_slices for k in ks):
            bad = next(k for k in ks if not 0 <= k < n_slices)
            raise InputError(f"{where}: absent slice {bad} is outside 0..{n_slices - 1}")
        if ks:
            out[name] = ks
    return out


def labelled_slices(labels: Labels, segments: Sequence[Segment], slice_has: Callable[[np.ndarray], np.ndarray],
                    reference_slices: Sequence[int] | None = None, where: str = "the reference") -> dict[str, np.ndarray]:
    """Per segment, the reference slices that carry it (``slice_has``: an axis view's), limited to
    ``reference_slices``; an InputError names the first segment with none.

    One check for everyone: the engine's reference bank uses these lists, and the Segmenter runs the same
    function before any compute so a front-end can refuse the input at once."""
    allowed = None if reference_slices is None else {int(k) for k in reference_slices}
    found: dict[str, np.ndarray] = {}
    for seg in segments:
        present = np.flatnonzero(slice_has(labels.layers[seg.layer] == seg.label_value))
        if allowed is not None:
            present = np.array([k for k in present if k in allowed], dtype=int)
        if present.size == 0:
            on = "" if allowed is None else f" on slice(s) {', '.join(str(k) for k in sorted(allowed))}"
            raise InputError(f"{labels.source or where}: segment {seg.name!r} is empty in the reference labels{on}")
        found[seg.name] = present.astype(int)
    return found


def with_options(request: SegmentRequest, **changes: Any) -> SegmentRequest:
    """A copy of ``request`` with some :class:`EngineOptions` changed (convenience for callers)."""
    return replace(request, options=replace(request.options, **changes))
