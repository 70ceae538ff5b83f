"""Segmentation nodes -> :class:`~KnowledgeSAMLib.data.volume.Labels` on a volume's grid.

Each chosen segment is resampled (nearest neighbour) onto the volume's grid as
``slicer.util.arrayFromSegmentBinaryLabelmap`` does, but with ``vtkOrientedImageDataResample`` only, so
it runs without ``slicer.app`` (PyPI ``slicer-core``). Nothing in the scene is modified.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..data.volume import Labels, Segment
from ..errors import InputError
from .scene import (check_segmentation_node, check_volume_node, dimensions_zyx, ijk_to_ras, node_name,
                    numpy_support, slicer_module, transform_between, vtk_matrix)
from .volumes import geometry_from_volume_node

__all__ = ["resolve_segment_ids", "labels_from_segmentation_node", "segment_tag"]


def segment_tag(segment, tag: str) -> str | None:
    """A segment's tag value (``None`` when it has none), e.g. ``KnowledgeSAM.Model``."""
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(tag, value) else None


def _segment_ids(segmentation) -> list[str]:
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def resolve_segment_ids(segmentation_node, segment_ids: Iterable[str] | str | None) -> list[str]:
    """Segment IDs from IDs or names (``None`` or empty: all segments); unknown ones are an InputError."""
    check_segmentation_node(segmentation_node, "the reference")
    return _resolve_ids(segmentation_node, segment_ids)


def _resolve_ids(segmentation_node, segment_ids: Iterable[str] | str | None) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    existing = _segment_ids(segmentation)
    wanted = [segment_ids] if isinstance(segment_ids, str) else list(segment_ids or [])
    if not wanted:
        if not existing:
            raise InputError(f"segmentation {node_name(segmentation_node)} has no segments")
        return existing
    resolved: list[str] = []
    for key in map(str, wanted):
        segment_id = key if segmentation.GetSegment(key) is not None else segmentation.GetSegmentIdBySegmentName(key)
        if not segment_id:
            names = ", ".join(f"{segmentation.GetSegment(s).GetName()} ({s})" for s in existing) or "none"
            raise InputError(
                f"segment {key!r} is not in segmentation {node_name(segmentation_node)} (segments: {names})"
            )
        if segment_id not in resolved:
            resolved.append(segment_id)
    return resolved


def _binary_source_segmentation(segmentation_node):
    """The node's vtkSegmentation if it holds binary labelmaps; else a converted copy (node untouched)."""
    slicer = slicer_module()
    segmentation = segmentation_node.GetSegmentation()
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if segmentation.ContainsRepresentation(binary):
        return segmentation
    copy = slicer.vtkSegmentation()
    copy.DeepCopy(segmentation)
    if not copy.CreateRepresentation(binary):
        raise InputError(f"segmentation {node_name(segmentation_node)} cannot be converted to a binary labelmap")
    return copy


def _copy_binary_from(segmentation, segment_id: str, output) -> bool:
    """Binary labelmap of one segment of a (converted) vtkSegmentation that is not in a node."""
    slicer = slicer_module()
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    segment = segmentation.GetSegment(segment_id)
    shared = segment.GetRepresentation(binary) if segment is not None else None
    if shared is None:
        return False
    output.DeepCopy(shared)
    values = numpy_support().vtk_to_numpy(output.GetPointData().GetScalars())
    values[:] = values == segment.GetLabelValue()
    return True


def _labelmap_to_grid(labelmap, volume_node, transform=None) -> np.ndarray:
    """Resample a binary vtkOrientedImageData onto the volume's grid; ``(z, y, x)`` uint8 0/1."""
    slicer = slicer_module()
    nz, ny, nx = dimensions_zyx(volume_node)
    out = np.zeros((nz, ny, nx), dtype=np.uint8)
    extent = labelmap.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return out  # empty segment
    reference = slicer.vtkOrientedImageData()  # empty, with the volume's grid (IJK→RAS and extent)
    reference.SetExtent(volume_node.GetImageData().GetExtent())
    reference.SetImageToWorldMatrix(vtk_matrix(ijk_to_ras(volume_node)))
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, reference, resampled, False, False, transform):
        raise InputError(f"could not resample a segment onto volume {node_name(volume_node)}")
    e = resampled.GetExtent()
    if e[0] > e[1] or e[2] > e[3] or e[4] > e[5]:
        return out
    values = numpy_support().vtk_to_numpy(resampled.GetPointData().GetScalars())
    block = values.reshape(e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
    # paste the resampled block (whose extent may be any part of the grid) into the full grid
    z0, z1 = max(e[4], 0), min(e[5], nz - 1)
    y0, y1 = max(e[2], 0), min(e[3], ny - 1)
    x0, x1 = max(e[0], 0), min(e[1], nx - 1)
    if z0 <= z1 and y0 <= y1 and x0 <= x1:
        out[z0:z1 + 1, y0:y1 + 1, x0:x1 + 1] = block[
            z0 - e[4]:z1 - e[4] + 1, y0 - e[2]:y1 - e[2] + 1, x0 - e[0]:x1 - e[0] + 1] != 0
    return out


def labels_from_segmentation_node(segmentation_node, segment_ids: Iterable[str] | str | None,
                                  reference_volume_node) -> Labels:
    """Segments of a segmentation node as :class:`Labels` on the reference volume's grid.

    Each segment is resampled with nearest neighbour onto the grid (parent transforms of both nodes are
    honoured). Segments that share a Slicer layer share a layer here (they cannot overlap); others get
    their own layer. Label values are 1..N in the order given; ``Segment.id`` keeps the Slicer ID and
    ``name``/``color``/``terminology`` are copied. Nothing in the scene is modified.
    """
    check_volume_node(reference_volume_node, "the reference")
    check_segmentation_node(segmentation_node, "the reference")
    return read_labels(segmentation_node, segment_ids, reference_volume_node)


def _segment(segmentation, segment_id: str, value: int, layer: int) -> Segment:
    segment = segmentation.GetSegment(segment_id)
    return Segment(name=segment.GetName() or segment_id, label_value=value, layer=layer,
                   color=tuple(float(c) for c in segment.GetColor()),
                   terminology=segment_tag(segment, segment.GetTerminologyEntryTagName()), id=segment_id)


def read_labels(segmentation_node, segment_ids: Iterable[str] | str | None, reference_volume_node) -> Labels:
    """:func:`labels_from_segmentation_node` for nodes already checked."""
    ids = _resolve_ids(segmentation_node, segment_ids)
    source = _binary_source_segmentation(segmentation_node)
    transform = transform_between(segmentation_node, reference_volume_node)
    shape = dimensions_zyx(reference_volume_node)
    layer_of_slicer_layer: dict[int, int] = {}
    masks: list[np.ndarray] = []
    segments: list[Segment] = []
    for value, segment_id in enumerate(ids, start=1):
        labelmap = slicer_module().vtkOrientedImageData()
        if source is segmentation_node.GetSegmentation():
            ok = segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        else:
            ok = _copy_binary_from(source, segment_id, labelmap)
        if not ok:
            raise InputError(f"segment {segment_id!r} of {node_name(segmentation_node)} has no labelmap")
        masks.append(_labelmap_to_grid(labelmap, reference_volume_node, transform))
        layer = layer_of_slicer_layer.setdefault(source.GetLayerIndex(segment_id), len(layer_of_slicer_layer))
        segments.append(_segment(segmentation_node.GetSegmentation(), segment_id, value, layer))

    layers = np.zeros((max(len(layer_of_slicer_layer), 1),) + shape, dtype=np.uint16 if len(ids) > 255 else np.uint8)
    for segment, mask in zip(segments, masks):
        if np.any(layers[segment.layer][mask != 0]):  # resampling made two shared-layer segments touch: split
            segment.layer = layers.shape[0]
            layers = np.concatenate([layers, np.zeros((1,) + shape, dtype=layers.dtype)])
        layers[segment.layer][mask != 0] = segment.label_value
    return Labels(layers=layers, geometry=geometry_from_volume_node(reference_volume_node), segments=segments,
                  source=f"{segmentation_node.GetName()} on {reference_volume_node.GetName()}")
