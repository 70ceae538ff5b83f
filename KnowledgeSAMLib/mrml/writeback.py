"""Results -> segmentation nodes, all or nothing; and segmentation nodes -> files.

Only the output segments are added or replaced; a failure restores the previous state
(``vtkSegmentationHistory``) or removes the node it created. The returned :class:`WriteBack` can undo a
successful run as one step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..data.volume import Labels, Segment
from ..errors import InputError, KnowledgeSAMError
from ..infer.provenance import headline
from . import scene as _scene
from .scene import (check_in_scene, check_segmentation_node, check_volume_node, dimensions_zyx, node_name,
                    parent_transform, remove_node, same_node, transform_between)
from .volumes import oriented_image_from_mask

__all__ = ["MRMLOptions", "DEFAULT_OPTIONS", "WriteBack", "apply_result_to_segmentation", "write_segmentation_node",
           "SEGMENTATION_FILE_TYPES", "check_output_node"]

SEGMENTATION_FILE_TYPES = (".seg.nrrd", ".nii.gz", ".nii")  # what the segmentation storage node writes
_GREY = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class MRMLOptions:
    """How results are written into a segmentation node."""

    tag_prefix: str = "KnowledgeSAM"  # provenance tags: <prefix>.Model, .Reference, .Mode, .Provenance
    output_name_suffix: str = " KnowledgeSAM"  # a new output node is named "<target name><suffix>"
    mark_in_progress: bool = True  # set the segment status to "In progress" (review needed)
    replace_existing: bool = True  # a segment with the output's name is replaced; False: always add


DEFAULT_OPTIONS = MRMLOptions()


@dataclass
class WriteBack:
    """What a successful write changed; :meth:`undo` reverts it as one step."""

    segmentation_node: Any
    segment_ids: list[str]
    created_node: bool
    _history: Any = None
    undone: bool = False
    _written_mtime: int = 0

    def __post_init__(self) -> None:
        self._written_mtime = self._mtime()

    def _mtime(self) -> int:
        node = self.segmentation_node
        return int(node.GetSegmentation().GetMTime()) if node is not None and node.GetSegmentation() else 0

    def edited_since(self) -> bool:
        """Was the output segmentation changed after the write? (An undo would also revert those edits.)"""
        return self._mtime() != self._written_mtime

    def undo(self) -> None:
        """Restore the output segmentation as it was before the write (or remove the node it created)."""
        if self.undone:
            return
        if self.created_node:
            remove_node(self.segmentation_node)
        elif self._history is not None:
            self._history.RestorePreviousState()
        self.undone = True


@dataclass(frozen=True)
class _Planned:
    """One output segment, ready to write: everything that can fail on bad data is computed first."""

    name: str
    color: tuple[float, float, float]
    terminology: str | None
    labelmap: Any


def _reference_for(segment: Segment, references: Sequence[Segment]) -> Segment:
    """The reference segment an output segment came from (by Slicer ID, then by name), else itself."""
    for reference in references:
        if segment.id is not None and segment.id == (reference.id or reference.name):
            return reference
    return next((r for r in references if r.name == segment.name), segment)


def check_output_node(output_node, target_volume_node, reference_segmentation_node=None) -> None:
    """Refuse an output segmentation the run must not write into, in one line that says why (before compute,
    and again before writing: the scene may change during a run). Never written into: an input (the reference
    segmentation: its segments would be replaced by the result), a node outside the target's scene, an
    internal node of another tool (hidden from editors), a node under another transform than the target, and
    one that stores closed surfaces rather than labelmaps (writing would convert the user's source data)."""
    check_segmentation_node(output_node, "the output")
    name = node_name(output_node)
    if reference_segmentation_node is not None and same_node(output_node, reference_segmentation_node):
        raise InputError(f"output segmentation {name} is the reference segmentation: the result would replace the "
                         "segments it is computed from; choose another output, or create a new one")
    check_in_scene(output_node, target_volume_node.GetScene(), "output segmentation")
    if output_node.GetHideFromEditors():
        raise InputError(f"output segmentation {name} is an internal node of another tool; choose another output")
    if transform_between(target_volume_node, output_node) is not None:
        raise InputError(f"output segmentation {name} is under a different transform than target volume "
                         f"{node_name(target_volume_node)}; choose a new output segmentation")
    binary = _scene.slicer_module().vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    existing = output_node.GetSegmentation()
    if existing.GetSourceRepresentationName() != binary and existing.GetNumberOfSegments() > 0:
        raise InputError(f"output segmentation {name} stores {existing.GetSourceRepresentationName()}, not "
                         "labelmaps; choose a new output segmentation")


def _plan(result_labels: Labels, output_node, target_volume_node, references: Sequence[Segment]) -> list[_Planned]:
    check_volume_node(target_volume_node, "the target")  # again: the scene may have changed during the run
    check_in_scene(target_volume_node, None, "target volume")
    if result_labels.shape != dimensions_zyx(target_volume_node):
        raise KnowledgeSAMError(f"result shape {result_labels.shape} does not match target volume "
                                f"{node_name(target_volume_node)} {dimensions_zyx(target_volume_node)}")
    if output_node is not None:
        check_output_node(output_node, target_volume_node)
    planned = []
    for segment in result_labels.segments:
        origin = _reference_for(segment, references)
        planned.append(_Planned(origin.name, tuple(origin.color) if origin.color else _GREY, origin.terminology,
                                oriented_image_from_mask(result_labels.mask(segment), target_volume_node)))
    return planned


def _new_output_node(scene, target_volume_node, options: MRMLOptions):
    name = scene.GenerateUniqueName(f"{target_volume_node.GetName()}{options.output_name_suffix}")
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(target_volume_node)
    if parent_transform(target_volume_node) is not None:
        node.SetAndObserveTransformNodeID(parent_transform(target_volume_node).GetID())
    return node


def _write(node, planned: Sequence[_Planned], tags: dict[str, str], options: MRMLOptions) -> list[str]:
    logic = _scene.segmentations_logic()
    segmentation = node.GetSegmentation()
    binary = _scene.slicer_module().vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if segmentation.GetSourceRepresentationName() != binary:  # an empty node: make it a labelmap one
        segmentation.SetSourceRepresentationName(binary)
    written: list[str] = []
    for item in planned:
        segment_id = segmentation.GetSegmentIdBySegmentName(item.name) if options.replace_existing else ""
        if not segment_id:
            segment_id = segmentation.AddEmptySegment("", item.name, list(item.color))
        segment = segmentation.GetSegment(segment_id)
        if not logic.SetBinaryLabelmapToSegment(item.labelmap, node, segment_id, logic.MODE_REPLACE):
            raise KnowledgeSAMError(f"could not write segment {item.name!r} into {node_name(node)}")
        segment.SetColor(*item.color)
        if item.terminology:
            segment.SetTag(segment.GetTerminologyEntryTagName(), item.terminology)
        for key, value in tags.items():
            segment.SetTag(key, value)
        if options.mark_in_progress:
            logic.SetSegmentStatus(segment, logic.InProgress)
        written.append(segment_id)
    return written


def apply_result_to_segmentation(result_labels: Labels, output_segmentation_node, target_volume_node, *,
                                 reference_segments: Sequence[Segment] | None = None,
                                 provenance: dict[str, Any] | None = None,
                                 scene=None, save_state_for_undo: Callable[[], None] | None = None,
                                 options: MRMLOptions = DEFAULT_OPTIONS,
                                 after_write: Callable[[Any, list[str]], None] | None = None) -> WriteBack:
    """Write every segment of ``result_labels`` (on the target's grid) into a segmentation node.

    ``output_segmentation_node=None`` creates a node in ``scene`` (default: the target's scene), aligned to
    the target. In an existing node a segment with the same name is replaced (``options.replace_existing``)
    and every other segment is left untouched. Output segments take name, colour and terminology from the
    matching ``reference_segments`` entry (by ID, then name), else from the result itself, and carry the
    ``provenance`` as tags. Any exception restores the node (or removes the one created) and re-raises.
    ``save_state_for_undo`` (e.g. the Segment Editor's) is called once, just before the first change;
    ``after_write(node, segment_ids)`` (e.g. the annotator's loop's record, :func:`.loop.record_written`) runs as
    part of the write: undone with it, and rolled back with it if it fails.
    """
    planned = _plan(result_labels, output_segmentation_node, target_volume_node, reference_segments or [])
    tags = {f"{options.tag_prefix}.{key}": value for key, value in headline(dict(provenance or {})).items()}
    scene = scene or target_volume_node.GetScene()
    created = output_segmentation_node is None
    node, history = output_segmentation_node, None
    if scene is not None:
        scene.StartState(scene.BatchProcessState)
    try:
        if created:
            node = _new_output_node(scene, target_volume_node, options)
        else:
            history = _scene.slicer_module().vtkSegmentationHistory()
            history.SetSegmentation(node.GetSegmentation())
            history.SaveState()
            if save_state_for_undo is not None:
                save_state_for_undo()
        written = _write(node, planned, tags, options)
        if after_write is not None:
            after_write(node, written)
    except BaseException:
        if created and node is not None:
            remove_node(node)
        elif history is not None:
            history.RestorePreviousState()
        raise
    finally:
        if scene is not None:
            scene.EndState(scene.BatchProcessState)
    return WriteBack(segmentation_node=node, segment_ids=written, created_node=created, _history=history)


def write_segmentation_node(segmentation_node, path: str | Path, overwrite: bool = False) -> Path:
    """Save a segmentation node as ``.seg.nrrd`` (or ``.nii.gz``) atomically; never overwrites unless asked.

    Slicer's storage node writes the segmentation's reference geometry (for a node made by
    :func:`apply_result_to_segmentation`: the target's grid), not cropped to the segments."""
    from ..data.io import atomic_write

    check_segmentation_node(segmentation_node, "the")
    path = Path(path)
    storage = _scene.slicer_module().vtkMRMLSegmentationStorageNode()
    storage.SetCropToMinimumExtent(False)
    with atomic_write(path, overwrite=overwrite) as temporary:
        storage.SetFileName(str(temporary))
        if not storage.WriteData(segmentation_node):
            raise InputError(f"{path}: could not write segmentation {node_name(segmentation_node)}")
    return path
