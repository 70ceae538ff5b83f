"""One segmentation run on MRML nodes: nodes -> request, the Segmenter, result -> nodes.

For the Slicer GUI (inference on a worker thread, MRML only on the main thread) the run is split into
:func:`prepare_inputs` (main thread: reads and checks the nodes, refuses bad input before any compute),
:func:`run_engine` (any thread; touches no node) and :func:`write_outputs` (main thread, all or nothing).
:func:`segment_volume_nodes` does all three. Everything between the nodes (model, reference cache, checks,
provenance) is the :class:`~KnowledgeSAMLib.infer.segmenter.Segmenter`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..choices import DEFAULT_AXIS, DEFAULT_DEVICE, DEFAULT_MODE
from ..data.volume import Labels, Segment
from ..errors import InputError
from ..infer.provenance import Sources
from ..infer.request import SegmentRequest
from ..infer.segmenter import Engine, ProgressCallback, Segmenter, check
from .roi import check_roi, roi_from_node
from .scene import check_in_scene, check_segmentation_node, check_volume_node, node_name, same_node
from .segmentations import read_labels
from .volumes import read_image
from .writeback import DEFAULT_OPTIONS, MRMLOptions, WriteBack, apply_result_to_segmentation, check_output_node

__all__ = ["PreparedRun", "prepare_inputs", "run_engine", "write_outputs", "segment_volume_nodes"]


@dataclass
class PreparedRun:
    """Everything the engine needs, read from the scene on the main thread (no node references inside
    ``request``), plus the nodes the result goes back to."""

    request: SegmentRequest
    target_volume_node: Any
    output_segmentation_node: Any
    reference_segments: list[Segment]
    sources: Sources  # how the provenance names the inputs (the knowledge prompt in one line)


def _refuse_shared_names(labels: Labels, segmentation_node) -> None:
    """Output segments are found by name, so two reference segments may not share one."""
    names = [s.name for s in labels.segments]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"segmentation {node_name(segmentation_node)} has several segments named "
                         f"{duplicated[0]!r}; rename them so that each output segment has its own name")


def prepare_inputs(target_volume_node, reference_volume_node, reference_segmentation_node,
                   segment_ids: Iterable[str] | str | None, output_segmentation_node=None,
                   reference_slice_index: int | Sequence[int] | None = None, *, roi_node=None,
                   **request_fields: Any) -> PreparedRun:
    """Read the nodes into a checked engine request (main thread); raises InputError on bad input, before
    any compute: bad nodes, an output the run may not write into (:func:`check_output_node`), an ROI that
    misses the target, and everything the engine checks.

    ``reference_volume_node=None`` means the target itself; ``reference_slice_index`` the labelled slice(s)
    to use; ``roi_node`` an ROI markup around the structures (None: the engine's ``roi="auto"``);
    ``request_fields`` go to :class:`SegmentRequest` as they are (``axis``, ``mode``, ``device``,
    ``slice_range``, ``options``, ``roi``, ...)."""
    check_volume_node(target_volume_node, "the target")
    check_in_scene(target_volume_node, None, "target volume")
    same = reference_volume_node is None or same_node(reference_volume_node, target_volume_node)
    reference_volume_node = target_volume_node if same else reference_volume_node
    if not same:
        check_volume_node(reference_volume_node, "the reference")
    check_segmentation_node(reference_segmentation_node, "the reference")
    if output_segmentation_node is not None:
        check_output_node(output_segmentation_node, target_volume_node, reference_segmentation_node)
    if roi_node is not None:
        request_fields["roi"] = roi_from_node(roi_node, target_volume_node)
    target = read_image(target_volume_node)
    reference = target if same else read_image(reference_volume_node)
    labels = read_labels(reference_segmentation_node, segment_ids, reference_volume_node)
    _refuse_shared_names(labels, reference_segmentation_node)
    slices = None if reference_slice_index is None else [int(k) for k in np.atleast_1d(reference_slice_index)]
    request = SegmentRequest(target=target, reference=reference, reference_labels=labels,
                             segments=list(labels.segments), reference_slices=slices, **request_fields)
    check_roi(request, f"ROI {node_name(roi_node)}" if roi_node is not None else "the ROI")
    check(request)
    prompt = (f"{reference_volume_node.GetName()} / {reference_segmentation_node.GetName()}: "
              + ", ".join(s.name for s in labels.segments)
              + (f" (slices {', '.join(map(str, slices))})" if slices else ""))
    return PreparedRun(request=request, target_volume_node=target_volume_node,
                       output_segmentation_node=output_segmentation_node,
                       reference_segments=list(labels.segments), sources=Sources(knowledge_prompt=prompt))


def run_engine(prepared: PreparedRun, segmenter: Segmenter, progress: ProgressCallback | None = None,
               cancel: Any = None):
    """Segment a prepared request. Touches no MRML node, so it may run on a worker thread."""
    return segmenter.segment(prepared.request, progress, cancel, prepared.sources)


def write_outputs(prepared: PreparedRun, result, save_state_for_undo: Callable[[], None] | None = None,
                  options: MRMLOptions = DEFAULT_OPTIONS,
                  after_write: Callable[[Any, list[str]], None] | None = None) -> WriteBack:
    """Write an engine result back into the scene (main thread); all or nothing (``after_write`` included)."""
    return apply_result_to_segmentation(
        result.labels, prepared.output_segmentation_node, prepared.target_volume_node,
        reference_segments=prepared.reference_segments, provenance=result.provenance,
        save_state_for_undo=save_state_for_undo, options=options, after_write=after_write)


def segment_volume_nodes(targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                         outputSegmentationNode=None, referenceSliceIndex=None, axis: str = DEFAULT_AXIS,
                         mode: str = DEFAULT_MODE, device: str = DEFAULT_DEVICE,
                         progressCallback: ProgressCallback | None = None, cancel: Any = None, *,
                         sliceRange: tuple[int, int] | None = None, model: Any = None,
                         samCheckpoint: str | Path | None = None, engine: Engine | None = None,
                         segmenter: Segmenter | None = None, saveStateForUndo: Callable[[], None] | None = None,
                         options: MRMLOptions = DEFAULT_OPTIONS, roiNode=None, **requestOptions: Any):
    """Segment ``targetVolumeNode`` with the knowledge prompt (reference volume + segments); return the
    output ``vtkMRMLSegmentationNode``.

    ``referenceVolumeNode`` may be the target (same-volume modes; ``referenceSliceIndex`` then names the
    labelled slice(s) to use, along ``axis``). ``outputSegmentationNode=None`` creates a new node; in an
    existing node only the output segments are added or replaced. ``mode``: auto/anchor/propagate/volume;
    ``device``: auto/cpu/cuda[:n]/mps. ``progressCallback(done, total)``; ``cancel``: a ``CancelToken``.
    ``segmenter``: the one to use (keeps the model and the reference's encoding across calls); without it,
    one is made for ``model`` (a KSAM, a saved-model folder or a registry name; default: the embedded
    default model), ``samCheckpoint`` and ``engine`` (a documented test seam). ``roiNode``: an ROI markup
    around the structures (None: the engine finds the region). A run that fails or is cancelled leaves the
    scene as it was.
    """
    prepared = prepare_inputs(targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                              outputSegmentationNode, referenceSliceIndex, axis=axis, mode=mode, device=device,
                              slice_range=sliceRange, roi_node=roiNode, **requestOptions)
    segmenter = segmenter or Segmenter(model, samCheckpoint, engine=engine)
    result = run_engine(prepared, segmenter, progressCallback, cancel)
    return write_outputs(prepared, result, save_state_for_undo=saveStateForUndo, options=options).segmentation_node
