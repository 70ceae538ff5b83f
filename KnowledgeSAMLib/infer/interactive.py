"""The annotator's loop: label or correct a slice, update only what that can change, look where the model is unsure.

In propagate mode every labelled slice prompts the slices up to its labelled neighbours (:mod:`.propagate`), and a
walk never crosses a slice marked "structure absent", so a change to slice ``k`` can only change the slab between
the labelled (or absent) slices on either side of it. An update therefore segments that slab alone
(``slice_range``) and keeps every other slice of the earlier result; the annotator's own slices are kept exactly as
drawn. Several corrected slices give one slab: from the first one's lower neighbour to the last one's upper one.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from ..data.volume import Labels
from ..errors import InputError
from .slicing import AxisView, axis_view

__all__ = ["affected_slab", "expected_errors", "merge_slab", "next_slice_to_check", "slice_to_check", "spread_in_gaps",
           "suggestion", "update_slab", "SUGGESTION_REACH"]

# slices: how far a correction's benefit is counted around it (chosen on 40 tuning volumes, see slice_to_check)
SUGGESTION_REACH = 3.0


def affected_slab(labelled: Sequence[int], corrected: int, n_slices: int) -> tuple[int, int]:
    """``(start, stop)`` of the slices a change to labelled slice ``corrected`` can change: from just after the
    previous labelled slice to just before the next one (the volume's ends where there is none)."""
    if not 0 <= corrected < n_slices:
        raise InputError(f"corrected slice {corrected} is outside 0..{n_slices - 1}")
    others = sorted(int(k) for k in labelled if int(k) != int(corrected))
    below = [k for k in others if k < corrected]
    above = [k for k in others if k > corrected]
    return (below[-1] + 1 if below else 0), (above[0] if above else n_slices)


def merge_slab(previous: Labels, update: Labels, view: AxisView, slab: tuple[int, int]) -> Labels:
    """The earlier result with the slices of ``slab`` (along ``view``'s axis) taken from ``update``; both on the
    same grid with the same layers (an update of the same request)."""
    if previous.layers.shape != update.layers.shape:
        raise InputError(f"cannot merge an update of shape {update.layers.shape} into a result of shape "
                         f"{previous.layers.shape}: not the same request")
    layers = previous.layers.copy()
    for layer in range(layers.shape[0]):
        for k in range(*slab):
            view.put(layers[layer], k, np.ascontiguousarray(view.get(update.layers[layer], k)))
    return Labels(layers, previous.geometry, previous.segments, previous.source)


def expected_errors(confidence: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Per slice, about how many voxels of one structure are wrong: its predicted area × (1 − confidence).

    Why not simply the least confident slice: the IoU head is least sure at the structure's thin ends, where a whole
    wrong slice costs a few voxels; an annotator's correction pays most where the most voxels are likely wrong. (On
    20 MSD hippocampus volumes the model never trained on, a simulated annotator correcting the slice chosen this
    way reached 0.889 / 0.912 mean Dice from 2 / 4 slices, against 0.866 / 0.887 for the least confident slice; those
    volumes are tuning data, ``msd-hippocampus-more``, which no training step reads.)
    NaN where no confidence was computed; 0 where nothing was predicted."""
    confidence = np.asarray(confidence, dtype=np.float64)
    area = np.asarray(area, dtype=np.float64)
    if confidence.shape != area.shape:
        raise InputError(f"confidence for {confidence.shape[0]} slices but areas for {area.shape[0]}")
    return np.where(area > 0, area * (1.0 - np.clip(confidence, 0.0, 1.0)), 0.0)


def next_slice_to_check(errors: np.ndarray, skip: Sequence[int] = ()) -> int | None:
    """The slice the annotator should look at next: the most expected wrong voxels (:func:`expected_errors`, summed
    over the structures when there are several), leaving out ``skip`` (the slices already labelled or marked absent);
    None when no other slice has any (ties: the lowest slice)."""
    errors = np.asarray(errors, dtype=np.float64)
    skip = set(int(k) for k in skip)
    candidates = [int(k) for k in np.flatnonzero(np.isfinite(errors) & (errors > 0)) if int(k) not in skip]
    if not candidates:
        return None
    return max(candidates, key=lambda k: (float(errors[k]), -k))


def spread_in_gaps(errors: np.ndarray, bounds: Iterable[int], reach: float) -> np.ndarray:
    """Per slice ``k``: the expected errors of every slice in ``k``'s gap (between the ``bounds`` around it, the
    labelled or absent slices), weighted by ``exp(-|j - k| / reach)``; 0 on the bounds themselves.

    Why: a corrected slice becomes a labelled slice, and the walks from it re-segment its neighbours up to the next
    labelled slices, so a correction pays for the likely-wrong voxels around it, not only its own. Ranked by their
    own errors alone, the suggested slices bunched up and trailed slices spread evenly over the volume."""
    errors = np.nan_to_num(np.asarray(errors, dtype=np.float64), nan=0.0)  # a copy: the caller's stays as it is
    n = len(errors)
    index = np.arange(n)
    edges = np.array(sorted({int(k) for k in bounds if 0 <= int(k) < n}), dtype=np.int64)
    errors[edges] = 0.0
    gap = np.searchsorted(edges, index, side="right")  # slices between the same two bounds share a number
    weights = np.exp(-np.abs(index[:, None] - index[None, :]) / float(reach)) * (gap[:, None] == gap[None, :])
    spread = weights @ errors
    spread[edges] = 0.0
    return spread


def slice_to_check(confidence: Mapping[str, np.ndarray], areas: Mapping[str, np.ndarray],
                   skip: Mapping[str, Iterable[int]], reach: float = SUGGESTION_REACH) -> tuple[str, int, float] | None:
    """``(segment, slice, confidence)`` to check next over several segments: a slice where some segment is
    predicted, ranked by :func:`expected_errors` spread over its gap (:func:`spread_in_gaps`, ``reach`` in slices;
    ``0``: its own errors alone) and summed over the segments. A segment's own ``skip`` slices (the annotator's,
    absent) count nothing for it and bound its gaps; the segment named is the one that contributes most on that
    slice. None if no slice has any expected error."""
    own: dict[str, np.ndarray] = {}
    for name, values in confidence.items():
        errors = np.nan_to_num(expected_errors(values, areas[name]), nan=0.0)
        errors[[int(k) for k in skip.get(name, ()) if 0 <= int(k) < len(errors)]] = 0.0
        own[name] = errors
    if not own:
        return None
    n = max(len(e) for e in own.values())
    own = {name: np.pad(e, (0, n - len(e))) for name, e in own.items()}
    ranked = own if reach <= 0 else {name: spread_in_gaps(e, skip.get(name, ()), reach) for name, e in own.items()}
    candidates = np.sum(list(own.values()), axis=0) > 0
    k = next_slice_to_check(np.where(candidates, np.sum(list(ranked.values()), axis=0), 0.0))
    if k is None:
        return None
    name = max(ranked, key=lambda name: ranked[name][k])
    return name, int(k), float(confidence[name][k])


def suggestion(request, result, prepared=None) -> dict | None:
    """Where the annotator should look next in a propagate-mode result (same volume), for the provenance and the
    CLI: ``{"slice", "segment", "confidence"}``, leaving out each segment's own slices (the request's
    ``reference_slices``, else every slice it is labelled on) and absent slices; None if nothing is left.
    ``prepared``: the request already prepared (the engine has it)."""
    from .request import labelled_slices, prepare_request
    from .slicing import slice_count

    prepared = prepared if prepared is not None else prepare_request(request, slice_count)
    view = axis_view(request.target.shape, request.target.geometry, request.axis)
    drawn = labelled_slices(prepared.reference_labels, prepared.segments, view.slice_has, request.reference_slices)
    names = [seg.name for seg in prepared.segments if seg.name in result.confidence]
    found = slice_to_check({name: result.confidence[name] for name in names},
                           {name: view.slice_sizes(result.labels.mask(name)) for name in names},
                           {name: [*drawn[name], *prepared.absent.get(name, [])] for name in names})
    if found is None:
        return None
    name, k, value = found
    return {"slice": k, "segment": name, "confidence": round(value, 4) if np.isfinite(value) else None}


def _merged_confidence(earlier: Mapping[str, np.ndarray], update: dict[str, np.ndarray], view: AxisView,
                       slab: tuple[int, int]) -> dict[str, np.ndarray]:
    merged = {}
    for name, values in update.items():
        values = np.array(values, dtype=np.float32)
        before = earlier.get(name)
        if before is not None and len(before) == view.n:
            outside = np.r_[0:slab[0], slab[1]:view.n]
            values[outside] = np.asarray(before, dtype=np.float32)[outside]
        merged[name] = values
    return merged


def _absent_everywhere(prepared) -> set[int]:
    """Slices marked absent for every requested segment: no walk crosses them, so they bound a slab too."""
    sets = [set(prepared.absent.get(seg.name, ())) for seg in prepared.segments]
    return set.intersection(*sets) if sets else set()


def update_slab(run, request, corrected: int | Sequence[int],
                previous_confidence: Mapping[str, np.ndarray] | None = None):
    """Re-segment only the slab a change to labelled slice(s) ``corrected`` can change; every other slice comes
    from the request's reference labels, which hold the annotator's slices *and* the earlier result (same volume).

    ``run(request) -> SegmentationResult`` is the segmenter to use (``Segmenter.segment`` or ``infer.segment`` with
    its model bound). The annotator's slices are ``request.reference_slices`` (required: the rest of the labels is
    an earlier result, not the annotator's); slices marked absent for every segment bound the slab as labelled
    slices do. Several corrected slices give one slab spanning all of theirs. Returns the result with the merged
    labels.
    """
    from dataclasses import replace

    from .output import assemble_labels
    from .request import prepare_request
    from .slicing import slice_count

    if request.reference_slices is None:
        raise InputError("an update needs the annotator's slices (--keep-slices): the other labelled slices are an "
                         "earlier result")
    prepared = prepare_request(request, slice_count)
    if not prepared.same_volume:
        raise InputError("an update re-segments part of the target from its own labelled slices; the reference is "
                         "another image")
    view = axis_view(request.target.shape, request.target.geometry, request.axis)
    corrected = sorted({int(k) for k in np.atleast_1d(corrected)})
    if not corrected:
        raise InputError("an update needs the corrected slice(s)")
    keep = sorted({int(k) for k in request.reference_slices} | set(corrected))
    bounds = set(keep) | _absent_everywhere(prepared)
    slabs = [affected_slab(bounds, k, view.n) for k in corrected]
    slab = (min(s[0] for s in slabs), max(s[1] for s in slabs))
    if request.slice_range is not None:
        slab = (max(slab[0], int(request.slice_range[0])), min(slab[1], int(request.slice_range[1])))
    result = run(replace(request, slice_range=slab, reference_slices=keep))
    labels = prepared.reference_labels
    earlier = assemble_labels({seg.name: labels.mask(seg) for seg in prepared.segments}, prepared.segments,
                              request.target.geometry, request.target.shape)
    merged = merge_slab(earlier, result.labels, view, slab)
    result.labels = merged
    if previous_confidence is not None:
        result.confidence = _merged_confidence(previous_confidence, result.confidence, view, slab)
    first = corrected[0] if len(corrected) == 1 else corrected
    result.provenance = {**result.provenance,
                         "next_slice_to_check": suggestion(replace(request, reference_slices=keep), result, prepared),
                         "update": {"corrected_slice": first, "slab": list(slab)}}
    return result
