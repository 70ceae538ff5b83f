"""Slice views <-> (axis, slice index): which view shows an axis, which slice it shows now, and showing another.

Why: "reference slice = the slice I am looking at" is the natural default for same-volume modes, and the
annotator's loop marks the slice in view absent and jumps to the slice to check next. The index is computed
from the view's slice centre in RAS through ``KnowledgeSAMLib.mrml.slice_index_at_ras`` (the same axis
convention as the engine), a jump goes to ``slice_centre_ras``, and views oblique to the volume are refused
with a message instead of silently picking a wrong slice.
"""

import numpy as np

__all__ = ["AXIS_VIEW", "sliceNodeForAxis", "axisOfSliceNode", "currentSliceIndex", "jumpToSlice", "ObliqueViewError",
           "segmentEditorUndoHook"]

AXIS_VIEW = {"axial": "Red", "sagittal": "Yellow", "coronal": "Green"}  # Slicer's default layout
_AXIS_NORMAL_RAS = {"axial": 2, "coronal": 1, "sagittal": 0}
MAX_OBLIQUE_DEGREES = 1.0


class ObliqueViewError(ValueError):
    """The view is not aligned with an axis of the volume."""


def _sliceToRas(sliceNode):
    matrix = sliceNode.GetSliceToRAS()
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def axisOfSliceNode(sliceNode):
    """``axial``/``coronal``/``sagittal`` for the RAS axis the view's normal is closest to."""
    normal = _sliceToRas(sliceNode)[:3, 2]
    closest = int(np.argmax(np.abs(normal)))
    return {v: k for k, v in _AXIS_NORMAL_RAS.items()}[closest]


def sliceNodeForAxis(axis, layoutManager=None):
    """The slice node that shows ``axis``: the default view for it if it does, else any view that does."""
    import slicer

    layoutManager = layoutManager or slicer.app.layoutManager()
    if layoutManager is None:
        return None
    preferred = AXIS_VIEW.get(axis)
    names = list(layoutManager.sliceViewNames())
    ordered = ([preferred] if preferred in names else []) + [n for n in names if n != preferred]
    for name in ordered:
        sliceNode = layoutManager.sliceWidget(name).mrmlSliceNode()
        if axisOfSliceNode(sliceNode) == axis:
            return sliceNode
    return None


def _checkAligned(sliceNode, volumeNode, axis):
    """Refuse a view whose normal is more than MAX_OBLIQUE_DEGREES off the volume's slice axis."""
    import vtk

    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    directions = np.array([[ijkToRas.GetElement(r, c) for c in range(3)] for r in range(3)])
    directions /= np.linalg.norm(directions, axis=0)
    normal = _sliceToRas(sliceNode)[:3, 2]
    normal = normal / np.linalg.norm(normal)
    cosines = np.abs(directions.T @ normal)
    angle = float(np.degrees(np.arccos(np.clip(cosines.max(), -1.0, 1.0))))
    if angle > MAX_OBLIQUE_DEGREES:
        raise ObliqueViewError(
            f"The {sliceNode.GetName()} view is {angle:.1f} degrees oblique to volume '{volumeNode.GetName()}'; "
            f"reset its orientation to {axis} (view menu > Reset field of view / orientation) or type a slice index.")


def currentSliceIndex(volumeNode, axis, sliceNode=None):
    """Index (engine convention, along ``axis``) of the slice of ``volumeNode`` the view shows now."""
    from KnowledgeSAMLib.mrml import slice_index_at_ras

    sliceNode = sliceNode or sliceNodeForAxis(axis)
    if sliceNode is None:
        raise ObliqueViewError(f"No slice view shows the {axis} plane; set one to {axis} or type a slice index.")
    _checkAligned(sliceNode, volumeNode, axis)
    centre = _sliceToRas(sliceNode)[:3, 3]
    return slice_index_at_ras(volumeNode, centre, axis)


def jumpToSlice(volumeNode, axis, index, sliceNode=None):
    """Move the view that shows ``axis`` to slice ``index`` of ``volumeNode`` (along its normal: what the view
    shows in-plane stays)."""
    from KnowledgeSAMLib.mrml import slice_centre_ras

    sliceNode = sliceNode or sliceNodeForAxis(axis)
    if sliceNode is None:
        raise ObliqueViewError(f"No slice view shows the {axis} plane; set one to {axis} to go to slice {index}.")
    sliceNode.JumpSliceByOffsetting(*slice_centre_ras(volumeNode, index, axis))


def segmentEditorUndoHook(prepared):
    """The Segment Editor's ``saveStateForUndo`` when it edits the run's output node, else None: then Ctrl+Z in
    the Segment Editor undoes the run like any other edit."""
    import slicer

    from KnowledgeSAMSlicer.panel import sameNode

    output = prepared.output_segmentation_node if prepared is not None else None
    editor = getattr(getattr(slicer.modules, "SegmentEditorWidget", None), "editor", None)
    if output is None or editor is None or not sameNode(editor.segmentationNode(), output):
        return None
    return editor.saveStateForUndo
