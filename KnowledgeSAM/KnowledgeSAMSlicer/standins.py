"""Stand-in engines for the self-tests and the pytest suite: the Slicer plumbing without a model.

Why a module of their own: inference runs in a separate process (``KnowledgeSAMLib.mrml.WorkerProcess``),
which receives the engine by reference and imports it; a stand-in must therefore be a module-level function
of a module that imports neither Qt nor Slicer. Each has the engine's signature
``(request, model, progress, cancel) -> SegmentationResult`` and keeps its contract: labels in exactly the
target geometry, progress reported, the cancel token checked between "batches".
"""

import os
import sys
import time

__all__ = ["copyEngine", "fillEveryAxialSlice", "nearestLabelledSlice", "untilCancelled", "crashEngine",
           "ignoresCancel", "countingEngine"]

_calls = [0]


def _result(request, layers, segments, **provenance):
    from KnowledgeSAMLib.data.volume import Labels
    from KnowledgeSAMLib.mrml import SegmentationResult

    record = {"model": {"sha256": "stand-in"}, "device": "cpu", "mode": request.mode}
    record.update(provenance)
    return SegmentationResult(Labels(layers, request.target.geometry, list(segments)), {}, record)


def copyEngine(request, model, progress, cancel):
    """The reference labels resampled onto the target grid."""
    import numpy as np

    from KnowledgeSAMLib.data.io import resample_labels_to

    wanted = request.segments or request.reference_labels.segments
    onTarget = resample_labels_to(request.reference_labels, request.target.geometry, request.target.shape)
    layers = np.zeros_like(onTarget.layers)
    for index, segment in enumerate(wanted):
        if cancel is not None:
            cancel.raise_if_cancelled()
        layers[segment.layer][onTarget.mask(segment)] = segment.label_value
        if progress is not None:
            progress(index + 1, len(wanted))
    return _result(request, layers, wanted)


def fillEveryAxialSlice(request, model, progress, cancel):
    """The union of the first segment's labelled slices, copied to every slice of the target (same grid)."""
    import numpy as np

    segment = (request.segments or request.reference_labels.segments)[0]
    footprint = request.reference_labels.mask(segment).any(axis=0)
    layers = np.zeros((1,) + tuple(request.target.shape[:3]), dtype=np.uint8)
    layers[0][:, footprint] = 1
    if progress is not None:
        progress(1, 1)
    return _result(request, layers, [segment.__class__(segment.name, 1, 0, segment.color)])


def _absentFor(request, name):
    absent = request.absent_slices or []
    return {int(k) for k in (absent.get(name, []) if isinstance(absent, dict) else absent)}


def nearestLabelledSlice(request, model, progress, cancel):
    """Propagation in miniature (axial; first segment): every target slice in the slice range takes the mask of
    the nearest of the request's labelled slices (``reference_slices``) that no absent slice separates from it
    (ties: the lower one); labelled slices stay as drawn, absent slices empty. Confidence falls with the distance
    (``1 / (1 + d)``; NaN outside the range); the provenance names the slices ``computed`` and the ``absent`` ones
    it was given."""
    import numpy as np

    from KnowledgeSAMLib.data.volume import Labels
    from KnowledgeSAMLib.mrml import SegmentationResult

    segment = (request.segments or request.reference_labels.segments)[0]
    source = request.reference_labels.mask(segment)
    n = source.shape[0]
    labelled = [k for k in range(n) if source[k].any()]
    if request.reference_slices is not None:
        labelled = [k for k in labelled if k in {int(s) for s in request.reference_slices}]
    absent = _absentFor(request, segment.name)
    start, stop = request.slice_range or (0, n)
    layers = np.zeros((1,) + tuple(request.target.shape[:3]), dtype=np.uint8)
    confidence = np.full(n, np.nan, dtype=np.float32)
    for k in range(start, stop):
        free = [s for s in labelled if not any(min(s, k) < a < max(s, k) for a in absent) and k not in absent]
        if free:
            seed = min(free, key=lambda s: (abs(s - k), s))
            layers[0, k] = source[seed]
            confidence[k] = 1.0 / (1.0 + abs(seed - k))
    if progress is not None:
        progress(1, 1)
    name = segment.name
    labels = Labels(layers, request.target.geometry, [segment.__class__(name, 1, 0, segment.color)])
    record = {"model": {"sha256": "stand-in"}, "device": "cpu", "mode": request.mode, "computed": [start, stop],
              "absent": sorted(absent)}
    return SegmentationResult(labels, {name: confidence}, record)


def untilCancelled(request, model, progress, cancel, limitSeconds=60.0):
    """Reports progress, then waits for the cancel token (at most ``limitSeconds``: a test must not hang)."""
    if progress is not None:
        progress(1, 10)
    deadline = time.monotonic() + limitSeconds
    while time.monotonic() < deadline:
        cancel.raise_if_cancelled()
        time.sleep(0.01)
    raise RuntimeError("untilCancelled: nobody cancelled")


def ignoresCancel(request, model, progress, cancel):
    """Never looks at the cancel token (a model stuck in one long step): only killing the process stops it."""
    if progress is not None:
        progress(1, 10)
    time.sleep(60)
    raise RuntimeError("ignoresCancel: not stopped")


def crashEngine(request, model, progress, cancel):
    """Dies the way an out-of-memory kill does (SIGKILL; exit status 9 on Windows)."""
    if progress is not None:
        progress(1, 10)
    if sys.platform == "win32":
        os._exit(9)
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def countingEngine(request, model, progress, cancel):
    """copyEngine, with the process id and the number of calls in this process in the provenance."""
    _calls[0] += 1
    result = copyEngine(request, model, progress, cancel)
    result.provenance.update(pid=os.getpid(), calls=_calls[0])
    return result
