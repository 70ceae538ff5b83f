"""The only door between KnowledgeSAM and Slicer's MRML scene: nodes in, nodes out, all or nothing.

Why a separate, Qt-free layer: the module panel, the Segment Editor effect, the batch script and the
tests all need the same conversions, and each is where orientation and data-loss bugs breed:

* :mod:`.volumes` — a volume node's voxels (Slicer's KJI order, RAS) become an
  :class:`~KnowledgeSAMLib.data.volume.Image` (numpy ``(z, y, x)``, ITK/LPS geometry), and masks go back
  onto a volume's grid;
* :mod:`.segmentations` — chosen segments, resampled onto a reference volume's grid, become ``Labels``;
* :mod:`.writeback` — result segments are written into a new or existing segmentation node (only the
  output segments change; a failure restores the node; :class:`WriteBack` undoes a run as one step);
* :mod:`.run` — one run: :func:`prepare_inputs` (main thread) → :func:`run_engine` (any thread) →
  :func:`write_outputs` (main thread), or all three in :func:`segment_volume_nodes`;
* :mod:`.loop` — the annotator's loop: which slices of a segment are the annotator's (a record in the segment's
  tags), "structure absent" marks, an update request around the corrected slices, the slice to check next;
* :mod:`.roi` — an ROI markup (its world box) as the engine's ``roi``, checked against the target;
* :mod:`.scene` — Slicer's modules, :func:`headless_scene`, node checks;
* :mod:`.files` — volume and segmentation files into a scene with Slicer's storage nodes (slicer-core).

Everything between the nodes (the model, the reference cache, input checks, provenance) belongs to the
front-end-neutral :class:`Segmenter` (and :class:`WorkerProcess`, which runs it in a separate process for
the GUI), re-exported here with the other names the Slicer front-ends need,
so that they import the library through this door only. Runs inside Slicer and on PyPI's ``slicer-core``
(create the scene with :func:`headless_scene`); ``slicer`` and ``vtk`` are imported only when a node is
touched, and torch only when a model runs.
"""

from __future__ import annotations

from .. import choices
from ..data.header import check_image_file
from ..infer.cancel import CancelToken
from ..infer.claims import OutputClaims
from ..infer.paths import expand_targets, plan_outputs, target_name
from ..infer.provenance import Sources
from ..infer.request import SegmentationResult
from ..infer.segmenter import ModelCache, Segmenter, shared_models
from ..infer.self_check import warning_text
from ..infer.worker_process import RemoteJob, WorkerError, WorkerProcess
from .run import PreparedRun, prepare_inputs, run_engine, segment_volume_nodes, write_outputs
from .files import load_segmentation, load_volume
from .roi import check_roi, roi_from_node, roi_points_from_bounds, world_bounds
from .scene import check_in_scene, headless_scene, remove_node, same_coordinate_frame, same_node
from .segmentations import labels_from_segmentation_node, resolve_segment_ids, segment_tag
from .volumes import (geometry_from_volume_node, image_from_volume_node, oriented_image_from_mask, replace_slices,
                      slab_extent, slice_centre_ras, slice_index_at_ras)
from .loop import (RECORD_TAG, SegmentState, SliceRecord, clear_absent, corrected_slices, drawn_slices,
                   slice_to_check, mark_absent, prepare_update, read_record, record_written, recorder,
                   segment_states)
from .writeback import (DEFAULT_OPTIONS, SEGMENTATION_FILE_TYPES, MRMLOptions, WriteBack,
                        apply_result_to_segmentation, check_output_node, write_segmentation_node)

__all__ = [
    # nodes <-> library data
    "headless_scene", "same_node", "same_coordinate_frame", "remove_node",
    "geometry_from_volume_node", "image_from_volume_node", "slice_index_at_ras", "slice_centre_ras",
    "slab_extent", "oriented_image_from_mask",
    "replace_slices", "labels_from_segmentation_node", "resolve_segment_ids", "segment_tag",
    "MRMLOptions", "DEFAULT_OPTIONS", "WriteBack", "apply_result_to_segmentation",
    "write_segmentation_node", "SEGMENTATION_FILE_TYPES", "check_output_node", "check_in_scene",
    # files into a scene without the application (slicer-core)
    "load_volume", "load_segmentation",
    # ROI markups -> the engine's roi
    "roi_from_node", "roi_points_from_bounds", "world_bounds", "check_roi",
    # one run
    "PreparedRun", "prepare_inputs", "run_engine", "write_outputs", "segment_volume_nodes",
    # the annotator's loop: the annotator's slices, absent marks, update, confidence
    "RECORD_TAG", "SliceRecord", "SegmentState", "segment_states", "corrected_slices", "prepare_update",
    "record_written", "recorder", "drawn_slices", "read_record", "mark_absent", "clear_absent",
    "slice_to_check",
    # the library behind the door, for the Slicer front-ends
    "choices", "Segmenter", "ModelCache", "shared_models", "Sources", "CancelToken", "SegmentationResult",
    "expand_targets", "plan_outputs", "target_name", "check_image_file", "OutputClaims",
    "list_user_models", "user_models_dir", "warning_text",
    # inference in a separate process (never starved by Slicer's main thread)
    "WorkerProcess", "RemoteJob", "WorkerError",
]


def list_user_models(root=None):
    """The user's own model folders for a model selector: ``model.registry.list_user_models`` (imported on
    call: the model package imports torch, which a panel should not pay for at start-up)."""
    from ..model.registry import list_user_models as _list

    return _list(root)


def user_models_dir():
    """Where the user's own models live: ``model.registry.user_models_dir`` (imported on call)."""
    from ..model.registry import user_models_dir as _where

    return _where()
