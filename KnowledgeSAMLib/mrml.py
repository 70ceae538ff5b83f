"""The only door between KnowledgeSAM and Slicer's MRML scene: nodes in, nodes out, all or nothing.

Why a separate, Qt-free layer: the module panel, the Segment Editor effect, the batch script and the
tests all need the same three conversions, and each is where orientation and data-loss bugs breed:

* :func:`image_from_volume_node` — a volume node's voxels (Slicer's KJI order, RAS) become an
  :class:`~KnowledgeSAMLib.data.volume.Image` (numpy ``(z, y, x)``, ITK/LPS geometry). The node's
  IJK→RAS matrix is the single source of geometry; RAS→LPS is a sign flip of the first two rows.
* :func:`labels_from_segmentation_node` — chosen segments, resampled (nearest neighbour) onto a
  reference volume's grid as ``slicer.util.arrayFromSegmentBinaryLabelmap`` does, but with
  ``vtkOrientedImageDataResample`` only, so it runs without ``slicer.app`` (PyPI ``slicer-core``).
* :func:`apply_result_to_segmentation` — writes result segments into a new or existing segmentation
  node. Only the output segments are added or replaced; a failure restores the previous state
  (``vtkSegmentationHistory``) or removes the node it created. The returned :class:`WriteBack` can
  undo a successful run as one step.

:func:`segment_volume_nodes` composes them around the engine. For the Slicer GUI (inference on a worker
thread, MRML only on the main thread) the same work is split into :func:`prepare_inputs` (main thread),
:func:`run_engine` (any thread; touches no node) and :func:`write_outputs` (main thread).

Runs inside Slicer (``slicer`` is the application's module) and on PyPI's ``slicer-core`` (create the
scene with :func:`headless_scene`, which registers the segmentation node classes and converters).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .data.volume import Geometry, Image, Labels, Segment
from .errors import InputError, KnowledgeSAMError

__all__ = [
    "MRMLOptions",
    "PreparedRun",
    "WriteBack",
    "headless_scene",
    "geometry_from_volume_node",
    "image_from_volume_node",
    "labels_from_segmentation_node",
    "resolve_segment_ids",
    "slice_index_at_ras",
    "oriented_image_from_mask",
    "same_coordinate_frame",
    "apply_result_to_segmentation",
    "prepare_inputs",
    "run_engine",
    "write_outputs",
    "segment_volume_nodes",
    "write_segmentation_node",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
# The engine seam: same signature as KnowledgeSAMLib.infer.segment(request, model, progress, cancel).
Engine = Callable[[Any, Any, ProgressCallback | None, Any], Any]

# RAS <-> LPS: flip the sign of the first two physical axes (the matrix is its own inverse).
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class MRMLOptions:
    """How results are written into a segmentation node."""

    tag_prefix: str = "KnowledgeSAM"  # provenance tags: <prefix>.Model, .Reference, .Mode, .Provenance
    output_name_suffix: str = " KnowledgeSAM"  # a new output node is named "<target name><suffix>"
    mark_in_progress: bool = True  # set the segment status to "In progress" (review needed)
    replace_existing: bool = True  # a segment with the output's name is replaced; False: always add


DEFAULT_OPTIONS = MRMLOptions()


# ------------------------------------------------------------------------------------------ slicer access

def _slicer():
    """The ``slicer`` module (Slicer's own, or slicer-core's); imported late so this module imports anywhere."""
    try:
        import slicer
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise KnowledgeSAMError(
            "KnowledgeSAMLib.mrml needs 3D Slicer or the 'slicer-core' package (pip install slicer-core)"
        ) from error
    return slicer


def _segmentations_logic():
    return _slicer().vtkSlicerSegmentationsModuleLogic


def _numpy_support():
    from vtk.util import numpy_support

    return numpy_support


def headless_scene():
    """A new MRML scene usable without the Slicer application (slicer-core, tests, scripts).

    ``vtkSlicerSegmentationsModuleLogic`` must be given the scene: that registers the segmentation node
    classes and the labelmap/surface converters. The logic is kept alive as an attribute of the scene.
    """
    slicer = _slicer()
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    scene.knowledgesam_segmentations_logic = logic
    return scene


def _node_name(node) -> str:
    return f"'{node.GetName()}'" if node is not None and node.GetName() else "(unnamed node)"


def _ijk_to_ras(volume_node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _vtk_matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _parent_transform(node):
    return node.GetParentTransformNode() if node is not None else None


def _check_volume_node(node, role: str) -> None:
    if node is None:
        raise InputError(f"no {role} volume was given")
    if not node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLVectorVolumeNode"):
        raise InputError(f"{role} {_node_name(node)} is a {node.GetClassName()}, not a scalar or RGB volume")
    image = node.GetImageData()
    if image is None or min(image.GetDimensions()) < 1:
        raise InputError(f"{role} volume {_node_name(node)} has no voxels")


def _check_segmentation_node(node, role: str) -> None:
    if node is None:
        raise InputError(f"no {role} segmentation was given")
    if not node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"{role} {_node_name(node)} is a {node.GetClassName()}, not a segmentation")


# ------------------------------------------------------------------------------------------ volumes

def geometry_from_volume_node(volume_node) -> Geometry:
    """ITK/LPS geometry of a volume node's grid (its own coordinates; parent transforms not applied)."""
    ijk_to_lps = _RAS_TO_LPS @ _ijk_to_ras(volume_node)
    linear = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"volume {_node_name(volume_node)} has a degenerate IJK-to-RAS matrix")
    return Geometry(spacing=tuple(spacing), origin=tuple(ijk_to_lps[:3, 3]),
                    direction=tuple((linear / spacing).ravel()), ndim=3)


def image_from_volume_node(volume_node) -> Image:
    """Copy a scalar or RGB volume node into an :class:`Image` (``(z, y, x)`` or ``(z, y, x, 3)``, LPS).

    The voxels are copied, so the image stays valid (and thread-safe) whatever happens to the node.
    """
    _check_volume_node(volume_node, "the")
    vtk_image = volume_node.GetImageData()
    nx, ny, nz = vtk_image.GetDimensions()
    components = vtk_image.GetNumberOfScalarComponents()
    scalars = vtk_image.GetPointData().GetScalars()
    if scalars is None:
        raise InputError(f"volume {_node_name(volume_node)} has no voxel values")
    flat = _numpy_support().vtk_to_numpy(scalars)
    if components == 1:
        array = np.array(flat.reshape(nz, ny, nx), copy=True)
    elif components == 3:
        array = np.array(flat.reshape(nz, ny, nx, 3), copy=True)
    else:
        raise InputError(
            f"volume {_node_name(volume_node)} has {components} components per voxel; "
            "only grey-scale and RGB volumes are supported"
        )
    return Image(array=array, geometry=geometry_from_volume_node(volume_node), source=volume_node.GetName() or "")


def slice_index_at_ras(volume_node, ras: Sequence[float], axis: str) -> int:
    """Index (along the engine's slice axis for ``axis``) of the slice of ``volume_node`` through a
    world RAS point, e.g. the centre of the slice a view shows. Parent transforms are honoured."""
    import vtk

    from .infer.slicing import axis_view

    point = [float(v) for v in ras[:3]]
    transform_node = _parent_transform(volume_node)
    if transform_node is not None:
        to_local = vtk.vtkGeneralTransform()
        transform_node.GetTransformFromWorld(to_local)
        point = list(to_local.TransformPoint(point))
    ras_to_ijk = np.linalg.inv(_ijk_to_ras(volume_node))
    ijk = ras_to_ijk @ np.array(point + [1.0])
    nx, ny, nz = volume_node.GetImageData().GetDimensions()
    view = axis_view((nz, ny, nx), geometry_from_volume_node(volume_node), axis)
    index = int(round(float(ijk[2 - view.slice_axis])))  # numpy axis a <-> IJK component 2 - a
    if not 0 <= index < view.n:
        raise InputError(
            f"the chosen slice is outside volume {_node_name(volume_node)} "
            f"(slice {index} of 0..{view.n - 1} along the {axis} axis)"
        )
    return index


# ------------------------------------------------------------------------------------------ segmentations

@dataclass(frozen=True)
class _SegmentRecord:
    """Identity and display metadata of a reference segment, carried to the output."""

    segment_id: str
    name: str
    color: tuple[float, float, float]
    terminology: str | None


def _get_tag(segment, tag: str) -> str | None:
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(tag, value) else None


def _segment_ids(segmentation) -> list[str]:
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def resolve_segment_ids(segmentation_node, segment_ids: Iterable[str] | str | None) -> list[str]:
    """Segment IDs from IDs or names (``None`` or empty: all segments); unknown ones are an InputError."""
    _check_segmentation_node(segmentation_node, "the reference")
    segmentation = segmentation_node.GetSegmentation()
    existing = _segment_ids(segmentation)
    if isinstance(segment_ids, str):
        segment_ids = [segment_ids]
    wanted = list(segment_ids or [])
    if not wanted:
        if not existing:
            raise InputError(f"segmentation {_node_name(segmentation_node)} has no segments")
        return existing
    resolved: list[str] = []
    for key in wanted:
        key = str(key)
        segment_id = key if segmentation.GetSegment(key) is not None else segmentation.GetSegmentIdBySegmentName(key)
        if not segment_id:
            names = ", ".join(f"{segmentation.GetSegment(s).GetName()} ({s})" for s in existing) or "none"
            raise InputError(
                f"segment {key!r} is not in segmentation {_node_name(segmentation_node)} (segments: {names})"
            )
        if segment_id not in resolved:
            resolved.append(segment_id)
    return resolved


def _binary_source_segmentation(segmentation_node):
    """The node's vtkSegmentation if it holds binary labelmaps; else a converted copy (node untouched)."""
    slicer = _slicer()
    segmentation = segmentation_node.GetSegmentation()
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if segmentation.ContainsRepresentation(binary):
        return segmentation
    copy = slicer.vtkSegmentation()
    copy.DeepCopy(segmentation)
    if not copy.CreateRepresentation(binary):
        raise InputError(
            f"segmentation {_node_name(segmentation_node)} cannot be converted to a binary labelmap"
        )
    return copy


def _oriented_geometry_of(volume_node):
    """An empty vtkOrientedImageData with the volume's grid (IJK→RAS and extent), for resampling."""
    slicer = _slicer()
    geometry = slicer.vtkOrientedImageData()
    geometry.SetExtent(volume_node.GetImageData().GetExtent())
    geometry.SetImageToWorldMatrix(_vtk_matrix(_ijk_to_ras(volume_node)))
    return geometry


def _labelmap_to_grid(labelmap, volume_node, transform=None) -> np.ndarray:
    """Resample a binary vtkOrientedImageData onto the volume's grid; ``(z, y, x)`` uint8 0/1."""
    slicer = _slicer()
    nx, ny, nz = volume_node.GetImageData().GetDimensions()
    out = np.zeros((nz, ny, nx), dtype=np.uint8)
    extent = labelmap.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return out  # empty segment
    reference = _oriented_geometry_of(volume_node)
    resampled = slicer.vtkOrientedImageData()
    ok = slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, reference, resampled, False, False, transform)
    if not ok:
        raise InputError(f"could not resample a segment onto volume {_node_name(volume_node)}")
    e = resampled.GetExtent()
    if e[0] > e[1] or e[2] > e[3] or e[4] > e[5]:
        return out
    values = _numpy_support().vtk_to_numpy(resampled.GetPointData().GetScalars())
    block = values.reshape(e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
    # paste the resampled block (whose extent may be any part of the grid) into the full grid
    z0, z1 = max(e[4], 0), min(e[5], nz - 1)
    y0, y1 = max(e[2], 0), min(e[3], ny - 1)
    x0, x1 = max(e[0], 0), min(e[1], nx - 1)
    if z0 <= z1 and y0 <= y1 and x0 <= x1:
        out[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = block[
            z0 - e[4]:z1 - e[4] + 1, y0 - e[2]:y1 - e[2] + 1, x0 - e[0]:x1 - e[0] + 1] != 0
    return out


def same_coordinate_frame(node_a, node_b) -> bool:
    """True when both nodes sit under the same parent transform (or none), so their RAS coordinates agree."""
    return _transform_between(node_a, node_b) is None


def _transform_between(source_node, target_node):
    """vtkGeneralTransform from ``source_node``'s coordinates to ``target_node``'s (None if identical)."""
    source, target = _parent_transform(source_node), _parent_transform(target_node)
    if source is target:
        return None
    import vtk

    transform = vtk.vtkGeneralTransform()
    _slicer().vtkMRMLTransformNode.GetTransformBetweenNodes(source, target, transform)
    return transform


def _segment_record(segmentation, segment_id: str) -> _SegmentRecord:
    segment = segmentation.GetSegment(segment_id)
    return _SegmentRecord(
        segment_id=segment_id,
        name=segment.GetName() or segment_id,
        color=tuple(float(c) for c in segment.GetColor()),
        terminology=_get_tag(segment, segment.GetTerminologyEntryTagName()),
    )


def labels_from_segmentation_node(segmentation_node, segment_ids: Iterable[str] | str | None,
                                  reference_volume_node) -> Labels:
    """Segments of a segmentation node as :class:`Labels` on the reference volume's grid.

    Each segment is resampled with nearest neighbour onto the grid (parent transforms of both nodes are
    honoured). Segments that share a Slicer layer share a layer here (they cannot overlap); others get
    their own layer. Label values are 1..N in the order given; ``Segment.id`` keeps the Slicer ID and
    ``name``/``color``/``terminology`` are copied. Nothing in the scene is modified.
    """
    _check_volume_node(reference_volume_node, "the reference")
    ids = resolve_segment_ids(segmentation_node, segment_ids)
    source = _binary_source_segmentation(segmentation_node)
    transform = _transform_between(segmentation_node, reference_volume_node)
    slicer = _slicer()
    nx, ny, nz = reference_volume_node.GetImageData().GetDimensions()

    layer_of_slicer_layer: dict[int, int] = {}
    masks: list[np.ndarray] = []
    segments: list[Segment] = []
    for value, segment_id in enumerate(ids, start=1):
        labelmap = slicer.vtkOrientedImageData()
        if source is segmentation_node.GetSegmentation():
            ok = segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        else:
            ok = _copy_binary_from(source, segment_id, labelmap)
        if not ok:
            raise InputError(f"segment {segment_id!r} of {_node_name(segmentation_node)} has no labelmap")
        masks.append(_labelmap_to_grid(labelmap, reference_volume_node, transform))
        record = _segment_record(segmentation_node.GetSegmentation(), segment_id)
        slicer_layer = source.GetLayerIndex(segment_id)
        layer = layer_of_slicer_layer.setdefault(slicer_layer, len(layer_of_slicer_layer))
        segments.append(Segment(name=record.name, label_value=value, layer=layer, color=record.color,
                                terminology=record.terminology, id=segment_id))

    layers = np.zeros((max(len(layer_of_slicer_layer), 1), nz, ny, nx), dtype=np.uint16 if len(ids) > 255 else np.uint8)
    for segment, mask in zip(segments, masks):
        target = layers[segment.layer]
        if np.any(target[mask != 0]):  # resampling made two shared-layer segments touch: split them
            segment.layer = layers.shape[0]
            layers = np.concatenate([layers, np.zeros((1, nz, ny, nx), dtype=layers.dtype)])
            target = layers[segment.layer]
        target[mask != 0] = segment.label_value
    return Labels(layers=layers, geometry=geometry_from_volume_node(reference_volume_node), segments=segments,
                  source=f"{segmentation_node.GetName()} on {reference_volume_node.GetName()}")


def _copy_binary_from(segmentation, segment_id: str, output) -> bool:
    """Binary labelmap of one segment of a (converted) vtkSegmentation that is not in a node."""
    slicer = _slicer()
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    segment = segmentation.GetSegment(segment_id)
    shared = segment.GetRepresentation(binary) if segment is not None else None
    if shared is None:
        return False
    output.DeepCopy(shared)
    values = _numpy_support().vtk_to_numpy(output.GetPointData().GetScalars())
    values[:] = values == segment.GetLabelValue()
    return True


# ------------------------------------------------------------------------------------------ write-back

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
            _remove_node_and_helpers(self.segmentation_node)
        elif self._history is not None:
            self._history.RestorePreviousState()
        self.undone = True


def _remove_node_and_helpers(node) -> None:
    scene = node.GetScene()
    if scene is None:
        return
    helpers = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.GetStorageNode() is not None:
        helpers.append(node.GetStorageNode())
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None and helper.GetScene() is scene:
            scene.RemoveNode(helper)


def oriented_image_from_mask(mask: np.ndarray, volume_node):
    """A binary ``(z, y, x)`` mask on the volume's grid as a vtkOrientedImageData (uint8, IJK→RAS set)."""
    import vtk

    slicer = _slicer()
    nz, ny, nx = mask.shape
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(nx, ny, nz)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    _numpy_support().vtk_to_numpy(image.GetPointData().GetScalars())[:] = (mask != 0).ravel().astype(np.uint8)
    image.SetImageToWorldMatrix(_vtk_matrix(_ijk_to_ras(volume_node)))
    return image


def _match_record(segment: Segment, records: Sequence[_SegmentRecord] | None) -> _SegmentRecord | None:
    for record in records or ():
        if segment.id is not None and segment.id == record.segment_id:
            return record
    for record in records or ():
        if segment.name == record.name:
            return record
    return None


def _provenance_tags(provenance: dict[str, Any], options: MRMLOptions) -> dict[str, str]:
    """Segment tags: the full provenance as JSON plus the three a user looks for (model, reference, mode)."""
    prefix = options.tag_prefix
    tags = {f"{prefix}.Provenance": json.dumps(provenance, sort_keys=True, default=str)}
    model = provenance.get("model")
    model_hash = model.get("sha256") if isinstance(model, dict) else (model or provenance.get("model_hash"))
    if model_hash:
        tags[f"{prefix}.Model"] = str(model_hash)
    reference = provenance.get("knowledge_prompt") or provenance.get("reference")
    if reference is not None:
        tags[f"{prefix}.Reference"] = reference if isinstance(reference, str) else json.dumps(reference, default=str)
    if provenance.get("mode") is not None:
        tags[f"{prefix}.Mode"] = str(provenance["mode"])
    return tags


def apply_result_to_segmentation(result_labels: Labels, output_segmentation_node, target_volume_node, *,
                                 reference_segments: Sequence[Segment] | None = None,
                                 provenance: dict[str, Any] | None = None,
                                 scene=None, save_state_for_undo: Callable[[], None] | None = None,
                                 options: MRMLOptions = DEFAULT_OPTIONS) -> WriteBack:
    """Write every segment of ``result_labels`` (on the target's grid) into a segmentation node.

    ``output_segmentation_node=None`` creates a node in ``scene`` (default: the target's scene), aligned to
    the target. In an existing node a segment with the same name is replaced (``options.replace_existing``)
    and every other segment is left untouched. Output segments take name, colour and terminology from the
    matching ``reference_segments`` entry (by ID, then name), else from the result itself, and carry the
    ``provenance`` as tags. Any exception restores the node (or removes the one created) and re-raises.
    ``save_state_for_undo`` (e.g. the Segment Editor's) is called once, just before the first change.
    """
    slicer = _slicer()
    logic = _segmentations_logic()
    _check_volume_node(target_volume_node, "the target")
    nx, ny, nz = target_volume_node.GetImageData().GetDimensions()
    if result_labels.shape != (nz, ny, nx):
        raise KnowledgeSAMError(
            f"result shape {result_labels.shape} does not match target volume {_node_name(target_volume_node)} "
            f"({nz}, {ny}, {nx})"
        )
    if output_segmentation_node is not None:
        _check_segmentation_node(output_segmentation_node, "the output")
        if _transform_between(target_volume_node, output_segmentation_node) is not None:
            raise InputError(
                f"output segmentation {_node_name(output_segmentation_node)} is under a different transform "
                f"than target volume {_node_name(target_volume_node)}; choose a new output segmentation"
            )
    records = [
        _SegmentRecord(s.id or s.name, s.name, tuple(s.color) if s.color else (0.5, 0.5, 0.5), s.terminology)
        for s in (reference_segments or [])
    ]
    tags = _provenance_tags(dict(provenance or {}), options)
    # Everything that can fail on bad data is computed before the first change to the scene.
    planned = []
    for segment in result_labels.segments:
        record = _match_record(segment, records)
        name = record.name if record else segment.name
        color = record.color if record else (tuple(segment.color) if segment.color else (0.5, 0.5, 0.5))
        terminology = record.terminology if record else segment.terminology
        labelmap = oriented_image_from_mask(result_labels.mask(segment), target_volume_node)
        planned.append((name, color, terminology, labelmap))
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if output_segmentation_node is not None:
        existing = output_segmentation_node.GetSegmentation()
        if existing.GetSourceRepresentationName() != binary and existing.GetNumberOfSegments() > 0:
            raise InputError(
                f"output segmentation {_node_name(output_segmentation_node)} stores "
                f"{existing.GetSourceRepresentationName()}, not labelmaps; choose a new output segmentation"
            )

    scene = scene or target_volume_node.GetScene()
    created = output_segmentation_node is None
    node = output_segmentation_node
    history = None
    batch_started = False
    try:
        if scene is not None:
            scene.StartState(scene.BatchProcessState)
            batch_started = True
        if created:
            name = scene.GenerateUniqueName(f"{target_volume_node.GetName()}{options.output_name_suffix}")
            node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            node.CreateDefaultDisplayNodes()
            node.SetReferenceImageGeometryParameterFromVolumeNode(target_volume_node)
            if _parent_transform(target_volume_node) is not None:
                node.SetAndObserveTransformNodeID(_parent_transform(target_volume_node).GetID())
        else:
            history = slicer.vtkSegmentationHistory()
            history.SetSegmentation(node.GetSegmentation())
            history.SaveState()
            if save_state_for_undo is not None:
                save_state_for_undo()
        segmentation = node.GetSegmentation()
        if segmentation.GetSourceRepresentationName() != binary:  # an empty node: make it a labelmap one
            segmentation.SetSourceRepresentationName(binary)
        written: list[str] = []
        for name, color, terminology, labelmap in planned:
            segment_id = segmentation.GetSegmentIdBySegmentName(name) if options.replace_existing else ""
            if not segment_id:
                segment_id = segmentation.AddEmptySegment("", name, list(color))
            segment = segmentation.GetSegment(segment_id)
            if not logic.SetBinaryLabelmapToSegment(labelmap, node, segment_id, logic.MODE_REPLACE):
                raise KnowledgeSAMError(f"could not write segment {name!r} into {_node_name(node)}")
            segment.SetColor(*color)
            if terminology:
                segment.SetTag(segment.GetTerminologyEntryTagName(), terminology)
            for key, value in tags.items():
                segment.SetTag(key, value)
            if options.mark_in_progress:
                logic.SetSegmentStatus(segment, logic.InProgress)
            written.append(segment_id)
    except BaseException:
        if created and node is not None:
            _remove_node_and_helpers(node)
        elif history is not None:
            history.RestorePreviousState()
        raise
    finally:
        if batch_started:
            scene.EndState(scene.BatchProcessState)
    return WriteBack(segmentation_node=node, segment_ids=written, created_node=created, _history=history)


# ------------------------------------------------------------------------------------------ the run

@dataclass
class PreparedRun:
    """Everything the engine needs, read from the scene on the main thread (no node references inside
    ``request``), plus the nodes the result goes back to."""

    request: Any  # KnowledgeSAMLib.infer.SegmentRequest
    target_volume_node: Any
    output_segmentation_node: Any
    reference_segments: list[Segment]
    reference_description: str


def _request_class():
    from .infer.request import SegmentRequest

    return SegmentRequest


def prepare_inputs(target_volume_node, reference_volume_node, reference_segmentation_node,
                   segment_ids: Iterable[str] | str | None, output_segmentation_node=None,
                   reference_slice_index: int | Sequence[int] | None = None, axis: str = "axial",
                   mode: str = "auto", device: str = "auto", slice_range: tuple[int, int] | None = None,
                   **request_options: Any) -> PreparedRun:
    """Read the nodes into a validated engine request (main thread). Raises InputError on bad input."""
    from .infer.slicing import axis_view

    _check_volume_node(target_volume_node, "the target")
    if reference_volume_node is None:
        reference_volume_node = target_volume_node
    _check_volume_node(reference_volume_node, "the reference")
    _check_segmentation_node(reference_segmentation_node, "the reference")
    if output_segmentation_node is not None:
        _check_segmentation_node(output_segmentation_node, "the output")
    target = image_from_volume_node(target_volume_node)
    same = reference_volume_node is target_volume_node or (
        bool(target_volume_node.GetID()) and reference_volume_node.GetID() == target_volume_node.GetID())
    reference = target if same else image_from_volume_node(reference_volume_node)
    labels = labels_from_segmentation_node(reference_segmentation_node, segment_ids, reference_volume_node)

    names = [s.name for s in labels.segments]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"segmentation {_node_name(reference_segmentation_node)} has several segments named "
                         f"{duplicated[0]!r}; rename them so that each output segment has its own name")
    known_axis = axis in ("axial", "coronal", "sagittal")  # others: the engine refuses them with its message
    view = axis_view(reference.shape, reference.geometry, axis) if known_axis else None
    slices: list[int] | None = None
    if reference_slice_index is not None:
        indices = [reference_slice_index] if np.isscalar(reference_slice_index) else reference_slice_index
        slices = [int(k) for k in indices]
    for segment in labels.segments:
        mask = labels.mask(segment)
        if not mask.any():
            raise InputError(
                f"segment {segment.name!r} of {_node_name(reference_segmentation_node)} is empty on reference "
                f"volume {_node_name(reference_volume_node)}; draw it (or choose the volume it was drawn on) first"
            )
        if view is not None and slices is not None:
            for k in slices:
                if not 0 <= k < view.n:
                    raise InputError(
                        f"reference slice {k} is outside volume {_node_name(reference_volume_node)} "
                        f"(0..{view.n - 1} along the {axis} axis)"
                    )
                if not view.slice_has(mask)[k]:
                    raise InputError(
                        f"segment {segment.name!r} has no voxels on reference slice {k} ({axis}) of "
                        f"{_node_name(reference_volume_node)}; pick a slice where it is drawn, or use all labelled slices"
                    )
    request = _request_class()(
        target=target, reference=reference, reference_labels=labels, segments=list(labels.segments),
        mode=mode, axis=axis, reference_slices=slices, slice_range=slice_range, device=device, **request_options)
    description = (f"{reference_volume_node.GetName()} / {reference_segmentation_node.GetName()}: "
                   + ", ".join(s.name for s in labels.segments)
                   + (f" (slices {', '.join(map(str, slices))})" if slices else ""))
    return PreparedRun(request=request, target_volume_node=target_volume_node,
                       output_segmentation_node=output_segmentation_node,
                       reference_segments=list(labels.segments), reference_description=description)


def _default_engine() -> Engine:
    from .infer import segment  # the engine (owner: infer); imported late: it pulls in torch

    return segment


def _default_model(model: Any, sam_checkpoint: str | Path | None = None):
    """A KSAM from a model object, a saved-model folder, a config name or ``"default"`` (None: default)."""
    if model is not None and not isinstance(model, (str, Path)):
        return model
    from .model.registry import resolve_model  # owner: training

    return resolve_model(str(model or "default"), sam_checkpoint=sam_checkpoint)


def run_engine(prepared: PreparedRun, model: Any = None, progress: ProgressCallback | None = None,
               cancel: Any = None, engine: Engine | None = None, sam_checkpoint: str | Path | None = None):
    """Run the engine on a prepared request. Touches no MRML node, so it may run on a worker thread.

    ``engine`` is a test seam: any callable with the signature of ``KnowledgeSAMLib.infer.segment``
    (default: the real engine; the model is then resolved with :func:`_default_model`).
    """
    if engine is None:
        engine = _default_engine()
        model = _default_model(model, sam_checkpoint)
    if cancel is not None:
        cancel.raise_if_cancelled()
    started = time.perf_counter()
    result = engine(prepared.request, model, progress, cancel)
    if cancel is not None:
        cancel.raise_if_cancelled()  # a cancel during the last batch still writes nothing
    provenance = dict(getattr(result, "provenance", None) or {})
    provenance["knowledge_prompt"] = prepared.reference_description
    provenance.setdefault("mode", prepared.request.mode)
    provenance.setdefault("axis", prepared.request.axis)
    provenance["wall_s"] = round(time.perf_counter() - started, 3)
    result.provenance = provenance
    return result


def write_outputs(prepared: PreparedRun, result, save_state_for_undo: Callable[[], None] | None = None,
                  options: MRMLOptions = DEFAULT_OPTIONS) -> WriteBack:
    """Write an engine result back into the scene (main thread); all or nothing."""
    return apply_result_to_segmentation(
        result.labels, prepared.output_segmentation_node, prepared.target_volume_node,
        reference_segments=prepared.reference_segments, provenance=result.provenance,
        save_state_for_undo=save_state_for_undo, options=options)


def segment_volume_nodes(targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                         outputSegmentationNode=None, referenceSliceIndex=None, axis: str = "axial",
                         mode: str = "auto", device: str = "auto", progressCallback: ProgressCallback | None = None,
                         cancel: Any = None, *, sliceRange: tuple[int, int] | None = None, model: Any = None,
                         samCheckpoint: str | Path | None = None, engine: Engine | None = None,
                         saveStateForUndo: Callable[[], None] | None = None,
                         options: MRMLOptions = DEFAULT_OPTIONS, **requestOptions: Any):
    """Segment ``targetVolumeNode`` with the knowledge prompt (reference volume + segments); return the
    output ``vtkMRMLSegmentationNode``.

    ``referenceVolumeNode`` may be the target (same-volume modes; ``referenceSliceIndex`` then names the
    labelled slice(s) to use, along ``axis``). ``outputSegmentationNode=None`` creates a new node; in an
    existing node only the output segments are added or replaced. ``mode``: auto/anchor/propagate/volume;
    ``device``: auto/cpu/cuda[:n]/mps. ``progressCallback(done, total)``; ``cancel``: a
    ``KnowledgeSAMLib.infer.cancel.CancelToken``. ``model``: a KSAM, a saved-model folder or a registry
    name (default: the embedded default model). A run that fails or is cancelled leaves the scene as it
    was. ``engine`` replaces the inference engine (a documented test seam).
    """
    prepared = prepare_inputs(targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                              outputSegmentationNode, referenceSliceIndex, axis, mode, device, sliceRange,
                              **requestOptions)
    result = run_engine(prepared, model=model, progress=progressCallback, cancel=cancel, engine=engine,
                        sam_checkpoint=samCheckpoint)
    return write_outputs(prepared, result, save_state_for_undo=saveStateForUndo, options=options).segmentation_node


# ------------------------------------------------------------------------------------------ files

def write_segmentation_node(segmentation_node, path: str | Path, overwrite: bool = False) -> Path:
    """Save a segmentation node as ``.seg.nrrd`` (or ``.nii.gz``) atomically; never overwrites unless asked.

    Slicer's storage node writes the segmentation's reference geometry (for a node made by
    :func:`apply_result_to_segmentation`: the target's grid), not cropped to the segments."""
    from .data.io import atomic_write

    _check_segmentation_node(segmentation_node, "the")
    path = Path(path)
    storage = _slicer().vtkMRMLSegmentationStorageNode()
    storage.SetCropToMinimumExtent(False)
    with atomic_write(path, overwrite=overwrite) as temporary:
        storage.SetFileName(str(temporary))
        if not storage.WriteData(segmentation_node):
            raise InputError(f"{path}: could not write segmentation {_node_name(segmentation_node)}")
    return path
