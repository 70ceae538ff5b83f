"""One segmenter behind every front-end.

The CLI, the MRML bridge (and through it Slicer's panel, Segment Editor effect and batch script) and any
new front-end hand a :class:`~KnowledgeSAMLib.infer.request.SegmentRequest` to a :class:`Segmenter` and
only translate their own inputs and outputs (files, nodes, widgets) to and from it. What it owns, so that
no front-end writes it again:

* the model: ``"default"``, a saved model folder, a config name or a checkpoint path, resolved by
  ``KnowledgeSAMLib.model.registry.resolve_model`` and kept by a :class:`ModelCache` (loaded once,
  loaded again only when its files change; Slicer shares one per process, :func:`shared_models`);
* one reference cache across calls: many targets prompted by one reference encode it once;
* :func:`check`, the engine's input checks, for front-ends that refuse bad input before any compute;
* the provenance: the engine's record plus the front-end's names for the inputs (:class:`Sources`).

Requests and options pass through untouched, so a new field of ``SegmentRequest`` or ``EngineOptions``
reaches the engine without a change here. Importing this module does not import torch.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from typing import Any, Callable

from ..choices import DEFAULT_MODEL
from .cancel import CancelToken
from .provenance import Sources, with_sources
from .request import PreparedRequest, SegmentationResult, SegmentRequest, labelled_slices, prepare_request
from .roi import resolve_roi
from .slicing import axis_view, slice_count

__all__ = ["Segmenter", "ModelCache", "Sources", "check", "shared_models", "Engine", "ProgressCallback"]

ProgressCallback = Callable[[int, int], None]
# The engine's signature, (request, model, progress, cancel) -> SegmentationResult: a test seam.
Engine = Callable[[SegmentRequest, Any, "ProgressCallback | None", "CancelToken | None"], SegmentationResult]
REFERENCES_KEPT = 2  # volumes whose embeddings are kept: the reference of a batch and the latest target


def check(request: SegmentRequest) -> PreparedRequest:
    """Everything about ``request`` that can be checked before compute; an InputError says what is wrong.

    The engine runs the same checks again; a front-end calls this to refuse bad input at once (before the
    model loads, or on Slicer's main thread before the worker starts)."""
    prepared = prepare_request(request, slice_count)
    reference = request.reference
    view = axis_view(reference.shape, reference.geometry, request.axis)
    labelled_slices(prepared.reference_labels, prepared.segments, view.slice_has, request.reference_slices,
                    reference.source or "the reference")
    target = request.target
    tview = axis_view(target.shape, target.geometry, request.axis)
    slices = range(*request.slice_range) if request.slice_range else range(tview.n)
    resolve_roi(request.roi, target, tview, list(slices))  # a box that misses the image: refused before compute
    return prepared


def _is_name(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike))


def _stamp(path: Any) -> int | None:
    try:
        return os.stat(path).st_mtime_ns if path else None
    except (OSError, TypeError, ValueError):
        return None


def _resolve(name_or_path: Any, sam_checkpoint: Any, sam_sha256: str | None = None):
    from ..model import registry  # looked up at call time: tests replace registry.resolve_model

    if sam_sha256:
        return registry.resolve_model(str(name_or_path), sam_checkpoint=sam_checkpoint, sam_sha256=sam_sha256)
    return registry.resolve_model(str(name_or_path), sam_checkpoint=sam_checkpoint)


class ModelCache:
    """The last model loaded, keyed by what it was loaded from and when those files changed (thread-safe).

    It keeps one model: asking for another releases the first, so a long Slicer session holds one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._model = None

    def get(self, name_or_path: str | os.PathLike, sam_checkpoint: str | os.PathLike | None = None,
            sam_sha256: str | None = None):
        """The model for ``name_or_path`` (+ checkpoint and its hash), loaded now or reused."""
        key = (str(name_or_path), str(sam_checkpoint or ""), _stamp(name_or_path), _stamp(sam_checkpoint),
               str(sam_sha256 or ""))
        with self._lock:
            if self._key != key or self._model is None:
                self._model = None  # release the old model before loading a new one
                self._model = _resolve(name_or_path, sam_checkpoint, sam_sha256)
                self._key = key
            return self._model

    def clear(self) -> None:
        with self._lock:
            self._key, self._model = None, None


_SHARED_MODELS = ModelCache()


def shared_models() -> ModelCache:
    """The process's model cache, for front-ends that live side by side (Slicer's panel and effect)."""
    return _SHARED_MODELS


class Segmenter:
    """Segments requests with one model, reusing the model and the reference's encoding across calls.

    ``model``: ``"default"``, a model folder, a config name, a checkpoint path, or a loaded model;
    ``sam_checkpoint``: SAM's weights, for models built on them; ``models``: where loaded models are kept
    (default: this segmenter's own cache); ``engine``: replaces the inference engine (a test seam with the
    engine's signature; it receives ``model`` as given, unloaded). Use one segmenter from one thread at a
    time.
    """

    def __init__(self, model: Any = DEFAULT_MODEL, sam_checkpoint: str | os.PathLike | None = None, *,
                 sam_sha256: str | None = None, models: ModelCache | None = None, engine: Engine | None = None,
                 references_kept: int = REFERENCES_KEPT) -> None:
        self.engine = engine
        self._sam_sha256 = sam_sha256
        self._models = models if models is not None else ModelCache()
        self._references_kept = references_kept
        self._references = None  # a ReferenceCache, made on the first real run (its module imports torch)
        self._model: Any = None
        self._sam_checkpoint: str | None = None
        self.use_model(model, sam_checkpoint)

    def use_model(self, model: Any = DEFAULT_MODEL, sam_checkpoint: str | os.PathLike | None = None) -> None:
        """Segment with this model from the next call on; a different one empties the reference cache."""
        model = DEFAULT_MODEL if model is None else (str(model) if _is_name(model) else model)
        checkpoint = None if sam_checkpoint is None else str(sam_checkpoint)
        if (model is self._model or model == self._model) and checkpoint == self._sam_checkpoint:
            return
        self._model, self._sam_checkpoint = model, checkpoint
        if self._references is not None:
            self._references.clear()

    @property
    def model_source(self) -> str | None:
        """What the model was asked for as (``None`` for a model object)."""
        return self._model if isinstance(self._model, str) else None

    def load_model(self):
        """The model the next call uses (loading it if needed: raises WeightsError when it cannot)."""
        if not _is_name(self._model):
            return self._model
        if self._sam_sha256:
            return self._models.get(self._model, self._sam_checkpoint, self._sam_sha256)
        return self._models.get(self._model, self._sam_checkpoint)

    check = staticmethod(check)

    def segment(self, request: SegmentRequest, progress: ProgressCallback | None = None,
                cancel: CancelToken | None = None, sources: Sources | None = None) -> SegmentationResult:
        """Run the engine on ``request``; ``sources`` names the inputs in the provenance. Raises InputError,
        WeightsError, or CancelledError (also when ``cancel`` fires during the last batch: nothing to write)."""
        if cancel is not None:
            cancel.raise_if_cancelled()
        engine, model = self._engine_and_model()
        started = time.perf_counter()
        result = engine(request, model, progress, cancel)
        if cancel is not None:
            cancel.raise_if_cancelled()
        sources = sources or Sources()
        if sources.model is None:
            sources = replace(sources, model=self.model_source)
        result.provenance = with_sources(result.provenance, request, sources, time.perf_counter() - started)
        return result

    def _engine_and_model(self) -> tuple[Callable[..., SegmentationResult], Any]:
        if self.engine is not None:
            return self.engine, self._model
        from .engine import segment
        from .reference import ReferenceCache

        if self._references is None:
            self._references = ReferenceCache(max_volumes=self._references_kept)
        references = self._references

        def engine(request, model, progress, cancel):
            return segment(request, model, progress, cancel, reference_cache=references)

        return engine, self.load_model()
