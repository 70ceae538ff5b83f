"""The annotator's loop on segmentation nodes: which slices are the annotator's, which were marked "structure absent",
how confident the last result was — remembered on each segment, so that Update knows what to keep.

Why a record on the segment: once KnowledgeSAM has written a segment, it holds the annotator's slices and a result
side by side, and nothing in a labelmap tells them apart. So every write leaves a record in the segment's tag
``KnowledgeSAM.Slices`` (JSON): the axis and the grid, the annotator's slices of that run, the slices marked absent,
a fingerprint of every non-empty slice *as written*, and the per-slice confidence. At the next Update:

* a slice whose content no longer matches its fingerprint was changed since — by the annotator, with any tool —
  and joins the annotator's slices (kept exactly as drawn, and a prompt); a slice changed to empty is marked absent;
* without a record (a segment KnowledgeSAM never wrote), or with one made on another grid or axis, every labelled
  slice is the annotator's, as in a first run.

The tag is saved with the scene (``.seg.nrrd``) and restored by the Segment Editor's undo, so the record always
describes the segment it is on. :func:`segment_states` reads it, :func:`prepare_update` turns it into an update
request (:func:`~KnowledgeSAMLib.infer.interactive.update_slab` runs it), :func:`record_written` leaves the new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.volume import Geometry, Labels
from ..errors import InputError
from ..infer.interactive import slice_to_check as choose_slice
from ..infer.provenance import Sources
from ..infer.request import SegmentRequest
from ..infer.segmenter import check
from ..infer.slicing import axis_view
from .roi import check_roi, roi_from_node
from .run import PreparedRun
from .scene import check_segmentation_node, check_volume_node, node_name
from .segmentations import read_labels, segment_tag
from .volumes import read_image

__all__ = ["RECORD_TAG", "SliceRecord", "SegmentState", "slice_fingerprints", "read_record", "write_record",
           "segment_states", "corrected_slices", "prepare_update", "record_written", "recorder", "drawn_slices",
           "mark_absent", "clear_absent", "slice_to_check"]

RECORD_TAG = "KnowledgeSAM.Slices"
_VERSION = 1


def _grid_key(geometry: Geometry, shape: Sequence[int]) -> str:
    """A short digest of a grid: a record made on another grid (resampled, cropped) is not this one's."""
    numbers = [*shape, *np.round(geometry.spacing, 4), *np.round(geometry.origin, 3), *np.round(geometry.direction, 4)]
    return hashlib.blake2b(repr([float(v) + 0.0 for v in numbers]).encode(), digest_size=6).hexdigest()  # no -0.0


def slice_fingerprints(mask: np.ndarray, geometry: Geometry, axis: str) -> dict[int, str]:
    """Slice index -> a digest of that slice's voxels, for every non-empty slice of ``mask`` along ``axis``."""
    view = axis_view(mask.shape, geometry, axis)
    out = {}
    for k in np.flatnonzero(view.slice_has(mask != 0)):
        plane = np.packbits(np.ascontiguousarray(view.get(mask, int(k)) != 0))
        out[int(k)] = hashlib.blake2b(plane.tobytes(), digest_size=8).hexdigest()
    return out


@dataclass
class SliceRecord:
    """What KnowledgeSAM knows about one segment's slices along ``axis`` on the grid ``grid``.

    ``written``: a result was written (``fingerprints`` describe it); False while only absent marks exist."""

    axis: str
    grid: str
    drawn: list[int] = field(default_factory=list)
    absent: list[int] = field(default_factory=list)
    fingerprints: dict[int, str] = field(default_factory=dict)
    confidence: dict[int, float] = field(default_factory=dict)
    written: bool = False

    def to_json(self) -> str:
        return json.dumps({"version": _VERSION, "axis": self.axis, "grid": self.grid, "written": self.written,
                           "drawn": self.drawn, "absent": self.absent,
                           "fingerprints": {str(k): v for k, v in sorted(self.fingerprints.items())},
                           "confidence": {str(k): round(v, 4) for k, v in sorted(self.confidence.items())}},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "SliceRecord | None":
        try:
            data = json.loads(text)
            if data.get("version") != _VERSION:
                return None
            return cls(axis=str(data["axis"]), grid=str(data["grid"]), written=bool(data["written"]),
                       drawn=sorted(int(k) for k in data["drawn"]), absent=sorted(int(k) for k in data["absent"]),
                       fingerprints={int(k): str(v) for k, v in data["fingerprints"].items()},
                       confidence={int(k): float(v) for k, v in data["confidence"].items()})
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def read_record(segment) -> SliceRecord | None:
    """The segment's record, or None (none, or unreadable: then every labelled slice is the annotator's)."""
    text = segment_tag(segment, RECORD_TAG)
    return SliceRecord.from_json(text) if text else None


def write_record(segment, record: SliceRecord) -> None:
    segment.SetTag(RECORD_TAG, record.to_json())


@dataclass
class SegmentState:
    """One segment now, on a volume's grid, compared with its record.

    ``labelled``: the non-empty slices; ``drawn``: the annotator's slices (kept exactly; the prompts); ``absent``:
    marked "structure absent"; ``changed``: slices that differ from the last result written (the annotator's
    corrections), ``emptied`` those of them that are empty now (absent too). The last result's confidence is in
    ``record.confidence``."""

    segment_id: str
    name: str
    mask: np.ndarray
    record: SliceRecord
    labelled: list[int]
    drawn: list[int]
    absent: list[int]
    changed: list[int]
    emptied: list[int]
    areas: dict[int, int] = field(default_factory=dict)  # voxels per non-empty slice


def _state(segment_id: str, segment, mask: np.ndarray, geometry: Geometry, axis: str) -> SegmentState:
    now = slice_fingerprints(mask, geometry, axis)
    grid = _grid_key(geometry, mask.shape)
    record = read_record(segment)
    if record is None or record.axis != axis or record.grid != grid:
        record = SliceRecord(axis=axis, grid=grid)  # another grid or axis: its slice numbers mean nothing here
    if record.written:
        changed = sorted(k for k in set(now) | set(record.fingerprints) if now.get(k) != record.fingerprints.get(k))
        emptied = [k for k in changed if k not in now]
        absent = sorted(set(record.absent) | set(emptied))
        drawn = sorted((set(record.drawn) | set(changed)) & set(now) - set(absent))
    else:
        changed, emptied = [], []
        absent = sorted(record.absent)
        drawn = sorted(set(now) - set(absent))
    sizes = axis_view(mask.shape, geometry, axis).slice_sizes(mask)
    areas = {k: int(sizes[k]) for k in now}
    return SegmentState(segment_id, segment.GetName() or segment_id, mask, record, sorted(now), drawn, absent, changed,
                        emptied, areas)


def segment_states(segmentation_node, segment_ids: Iterable[str], volume_node, axis: str) -> list[SegmentState]:
    """Each segment's state on ``volume_node``'s grid along ``axis`` (read now; nothing is modified)."""
    check_volume_node(volume_node, "the")
    check_segmentation_node(segmentation_node, "the")
    segment_ids = list(segment_ids)
    if not segment_ids:
        return []
    labels = read_labels(segmentation_node, segment_ids, volume_node)
    segmentation = segmentation_node.GetSegmentation()
    return [_state(seg.id, segmentation.GetSegment(seg.id), labels.mask(seg).astype(np.uint8), labels.geometry, axis)
            for seg in labels.segments]


def corrected_slices(states: Sequence[SegmentState]) -> list[int]:
    """The slices an update must recompute around: every slice changed since the last write, and every slice
    marked absent where a segment still shows the structure (its walk went through there)."""
    found: set[int] = set()
    for state in states:
        found |= set(state.changed)
        found |= set(state.absent) & set(state.labelled)
    return sorted(found)


def prepare_update(volume_node, segmentation_node, states: Sequence[SegmentState], axis: str, *, roi_node=None,
                   **request_fields: Any) -> PreparedRun:
    """A request on the volume itself (propagate mode unless ``mode`` is given): the segments as they are now (the
    annotator's slices and the earlier result) are the reference labels, the annotator's slices of every segment
    are ``reference_slices``, absent slices are emptied and passed as ``absent_slices``; ``roi_node`` as for
    :func:`~.run.prepare_inputs`. Checked like any request (InputError)."""
    if not states:
        raise InputError("choose at least one segment to update")
    drawn = sorted({k for state in states for k in state.drawn})
    if not drawn:
        raise InputError(f"segment {states[0].name!r} has no slice drawn by you yet: draw one, then Update")
    image = read_image(volume_node)
    labels = read_labels(segmentation_node, [s.segment_id for s in states], volume_node)
    view = axis_view(labels.shape, labels.geometry, axis)
    layers = labels.layers.copy()
    for seg, state in zip(labels.segments, states):
        for k in state.absent:
            plane = view.get(layers[seg.layer], k).copy()
            plane[plane == seg.label_value] = 0
            view.put(layers[seg.layer], k, plane)
    labels = Labels(layers, labels.geometry, labels.segments, labels.source)
    request_fields.setdefault("mode", "propagate")
    if roi_node is not None:
        request_fields["roi"] = roi_from_node(roi_node, volume_node)
    absent = {state.name: state.absent for state in states if state.absent}
    request = SegmentRequest(target=image, reference=image, reference_labels=labels, segments=list(labels.segments),
                             axis=axis, reference_slices=drawn, absent_slices=absent or None, **request_fields)
    check_roi(request, f"ROI {node_name(roi_node)}" if roi_node is not None else "the ROI")
    check(request)
    prompt = (f"{node_name(volume_node)} / {segmentation_node.GetName()}: "
              + ", ".join(s.name for s in labels.segments) + f" (your slices {', '.join(map(str, drawn))})")
    return PreparedRun(request=request, target_volume_node=volume_node, output_segmentation_node=segmentation_node,
                       reference_segments=list(labels.segments), sources=Sources(knowledge_prompt=prompt))


def record_written(segmentation_node, volume_node, axis: str, written: dict[str, dict[str, Any]]) -> None:
    """After a write: leave each written segment's new record (``written``: segment ID -> ``drawn`` slices,
    ``absent`` slices, ``confidence`` (array along the axis, NaN where not computed) and optionally ``previous``
    (the record whose confidence is kept where this run computed nothing)). Fingerprints are taken from the
    segment as it is now, so whatever the editor's masking let through is what the next Update compares with."""
    labels = read_labels(segmentation_node, list(written), volume_node)
    segmentation = segmentation_node.GetSegmentation()
    for seg in labels.segments:
        info = written[seg.id]
        previous: SliceRecord | None = info.get("previous")
        confidence = dict(previous.confidence) if previous is not None else {}
        values = info.get("confidence")
        for k, value in enumerate(np.asarray([] if values is None else values, dtype=float).ravel()):
            if np.isfinite(value):
                confidence[k] = float(value)
        record = SliceRecord(axis=axis, grid=_grid_key(labels.geometry, labels.shape),
                             drawn=sorted(int(k) for k in info.get("drawn", ())),
                             absent=sorted(int(k) for k in info.get("absent", ())),
                             fingerprints=slice_fingerprints(labels.mask(seg), labels.geometry, axis),
                             confidence=confidence, written=True)
        write_record(segmentation.GetSegment(seg.id), record)


def drawn_slices(request: SegmentRequest) -> dict[str, list[int]]:
    """Segment name -> the slices the annotator drew, for a request on the target itself (its labelled slices,
    within ``reference_slices``); empty for a reference from another image (none of its slices are the target's)."""
    if request.reference is not request.target:
        return {}
    labels = request.reference_labels
    view = axis_view(labels.shape, labels.geometry, request.axis)
    allowed = None if request.reference_slices is None else {int(k) for k in request.reference_slices}
    found = {}
    for seg in request.segments or labels.segments:
        ks = [int(k) for k in np.flatnonzero(view.slice_has(labels.mask(seg)))]
        found[seg.name] = [k for k in ks if allowed is None or k in allowed]
    return found


def recorder(result, volume_node, axis: str, drawn: dict[str, list[int]], absent: dict[str, list[int]],
             previous: dict[str, SliceRecord] | None = None):
    """An ``after_write(node, segment_ids)`` for :func:`~.run.write_outputs`: the record of every written segment
    (by the result's segment names: their drawn and absent slices, the result's confidence, and the ``previous``
    record whose confidence stays where this run computed nothing), written as part of the write."""
    def after_write(node, segment_ids: list[str]) -> None:
        written = {}
        for seg, segment_id in zip(result.labels.segments, segment_ids):
            written[segment_id] = {"drawn": drawn.get(seg.name, []), "absent": absent.get(seg.name, []),
                                   "confidence": (result.confidence or {}).get(seg.name),
                                   "previous": (previous or {}).get(seg.name)}
        record_written(node, volume_node, axis, written)

    return after_write


def _record_for_marks(state: SegmentState) -> SliceRecord:
    record = state.record
    return SliceRecord(record.axis, record.grid, list(record.drawn), list(record.absent), dict(record.fingerprints),
                       dict(record.confidence), record.written)


def mark_absent(segmentation_node, state: SegmentState, slices: Iterable[int]) -> list[int]:
    """Mark ``slices`` "structure absent" for the segment (kept in its record); returns its absent slices."""
    record = _record_for_marks(state)
    record.absent = sorted(set(record.absent) | set(state.emptied) | {int(k) for k in slices})
    write_record(segmentation_node.GetSegmentation().GetSegment(state.segment_id), record)
    return record.absent


def clear_absent(segmentation_node, state: SegmentState) -> None:
    """Forget the segment's absent marks (its slices emptied since the last write stay absent until redrawn)."""
    record = _record_for_marks(state)
    record.absent = []
    write_record(segmentation_node.GetSegmentation().GetSegment(state.segment_id), record)


def slice_to_check(states: Sequence[SegmentState]) -> tuple[str, int, float] | None:
    """``(segment name, slice, confidence)`` of the slice to check next: where the last result most likely has the
    most wrong voxels (:func:`~KnowledgeSAMLib.infer.interactive.slice_to_check`), leaving out every segment's own
    and absent slices for that segment; None if no such slice shows a structure."""
    confidences: dict[str, np.ndarray] = {}  # by segment id: two segments may share a name
    areas: dict[str, np.ndarray] = {}
    skip: dict[str, list[int]] = {}
    for state in states:
        if not state.record.written or not state.record.confidence:
            continue
        n = max([*state.record.confidence, *state.labelled]) + 1
        confidences[state.segment_id] = np.full(n, np.nan)
        for k, value in state.record.confidence.items():
            confidences[state.segment_id][k] = value
        areas[state.segment_id] = np.zeros(n)
        for k, voxels in state.areas.items():
            areas[state.segment_id][k] = voxels
        skip[state.segment_id] = [*state.drawn, *state.absent]
    found = choose_slice(confidences, areas, skip)
    if found is None:
        return None
    segment_id, k, confidence = found
    return next(state.name for state in states if state.segment_id == segment_id), k, confidence
