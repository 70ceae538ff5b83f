"""An ROI markup as the engine's ``roi``: the box a user draws around the structures, as a MedSAM user would.

Why here: the engine takes a region as two RAS points in the *target image's own* coordinates
(``SegmentRequest.roi``); a Slicer ROI lives in world coordinates, may sit under a transform, and so may the
target volume. :func:`roi_from_node` takes the ROI's world bounding box (``GetRASBounds``: its own transforms
applied), maps its eight corners into the target's coordinates and returns the two corners of their box.
:func:`check_roi` refuses, before any compute, an ROI that misses the target or the slices asked for.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from .scene import node_name, parent_transform

__all__ = ["roi_from_node", "roi_points_from_bounds", "world_bounds", "check_roi", "ROI_NODE_CLASS"]

ROI_NODE_CLASS = "vtkMRMLMarkupsROINode"
Points = tuple[tuple[float, float, float], tuple[float, float, float]]


def world_bounds(roi_node) -> list[float]:
    """``[r0, r1, a0, a1, s0, s1]``: the ROI's axis-aligned box in world RAS (its transforms applied)."""
    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)
    return bounds


def roi_points_from_bounds(bounds: Sequence[float], to_target=None, name: str = "the ROI") -> Points:
    """Two RAS corners of the box around ``bounds`` (``r0, r1, a0, a1, s0, s1``) in the target's coordinates.

    ``to_target`` maps a world point to the target's coordinates (a callable, e.g. a vtkGeneralTransform's
    ``TransformPoint``; None: the target is not transformed). A rotation between the two makes the box a
    little larger than the ROI, never smaller."""
    values = np.asarray(bounds, dtype=float)
    if values.shape != (6,) or not np.all(np.isfinite(values)) or np.any(values[1::2] < values[0::2]):
        raise InputError(f"{name} has no extent yet; place it around the structures, or choose no ROI")
    corners = np.array(list(itertools.product(*values.reshape(3, 2))))
    if to_target is not None:
        corners = np.array([to_target([float(v) for v in corner]) for corner in corners])
    lower, upper = corners.min(axis=0), corners.max(axis=0)
    return tuple(float(v) for v in lower), tuple(float(v) for v in upper)  # type: ignore[return-value]


def _world_to(volume_node):
    transform_node = parent_transform(volume_node)
    if transform_node is None:
        return None
    import vtk

    transform = vtk.vtkGeneralTransform()
    transform_node.GetTransformFromWorld(transform)
    return transform.TransformPoint


def roi_from_node(roi_node, target_volume_node) -> Any:
    """The request's ``roi`` for an ROI node: ``"auto"`` for None (the engine finds the region itself), else
    the ROI's world box as two RAS points in the target volume's coordinates."""
    if roi_node is None:
        return "auto"
    if not roi_node.IsA(ROI_NODE_CLASS):
        raise InputError(f"{node_name(roi_node)} is a {roi_node.GetClassName()}, not an ROI ({ROI_NODE_CLASS})")
    return roi_points_from_bounds(world_bounds(roi_node), _world_to(target_volume_node), f"ROI {node_name(roi_node)}")


def check_roi(request, roi_name: str = "the ROI") -> None:
    """Refuse an ROI (two RAS points or a voxel box) that misses the target or every slice of the request's
    slice range, in one line that names it; ``"auto"``/``"none"`` pass."""
    from ..infer.roi import RoiBox
    from ..infer.slicing import axis_view

    roi, target = request.roi, request.target
    if roi is None or isinstance(roi, str):
        return
    box = RoiBox.from_ras(roi[0], roi[1], target.geometry) if not isinstance(roi, RoiBox) else roi
    name = target.source or "the target"
    try:
        box = box.check(target.shape, name)
    except InputError:
        raise InputError(f"{roi_name} lies outside target volume '{name}'; move it over the structures to "
                         "segment, or choose no ROI") from None
    _, slices = box.crop_and_slices(axis_view(target.shape, target.geometry, request.axis))
    if request.slice_range is not None:
        wanted = set(range(*request.slice_range))
        if not wanted.intersection(slices):
            raise InputError(f"{roi_name} covers {request.axis} slices {slices[0]}-{slices[-1]} of '{name}', none "
                             f"of the slice range {request.slice_range[0]}-{request.slice_range[1] - 1}")
