"""Volume nodes <-> :class:`~KnowledgeSAMLib.data.volume.Image`, and masks back onto a volume's grid.

Slicer keeps voxels in KJI order with an IJK→RAS matrix; the library works in ``(z, y, x)`` with ITK/LPS
geometry. The node's IJK→RAS matrix is the single source of geometry; RAS→LPS is a sign flip of the
first two rows (``scene.RAS_TO_LPS``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..data.volume import Geometry, Image
from ..errors import InputError
from .scene import (RAS_TO_LPS, check_volume_node, dimensions_zyx, ijk_to_ras, node_name, numpy_support,
                    parent_transform, slicer_module, vtk_matrix)

__all__ = ["geometry_from_volume_node", "image_from_volume_node", "slice_index_at_ras", "slice_centre_ras",
           "oriented_image_from_mask", "replace_slices", "slab_extent"]


def geometry_from_volume_node(volume_node) -> Geometry:
    """ITK/LPS geometry of a volume node's grid (its own coordinates; parent transforms not applied)."""
    ijk_to_lps = RAS_TO_LPS @ ijk_to_ras(volume_node)
    linear = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"volume {node_name(volume_node)} has a degenerate IJK-to-RAS matrix")
    return Geometry(spacing=tuple(spacing), origin=tuple(ijk_to_lps[:3, 3]),
                    direction=tuple((linear / spacing).ravel()), ndim=3)


def image_from_volume_node(volume_node) -> Image:
    """Copy a scalar or RGB volume node into an :class:`Image` (``(z, y, x)`` or ``(z, y, x, 3)``, LPS).

    The voxels are copied, so the image stays valid (and thread-safe) whatever happens to the node.
    """
    check_volume_node(volume_node, "the")
    return read_image(volume_node)


def read_image(volume_node) -> Image:
    """:func:`image_from_volume_node` for a node already checked."""
    vtk_image = volume_node.GetImageData()
    nz, ny, nx = dimensions_zyx(volume_node)
    components = vtk_image.GetNumberOfScalarComponents()
    scalars = vtk_image.GetPointData().GetScalars()
    if scalars is None:
        raise InputError(f"volume {node_name(volume_node)} has no voxel values")
    if components not in (1, 3):
        raise InputError(f"volume {node_name(volume_node)} has {components} components per voxel; "
                         "only grey-scale and RGB volumes are supported")
    flat = numpy_support().vtk_to_numpy(scalars)
    shape = (nz, ny, nx) if components == 1 else (nz, ny, nx, 3)
    array = np.array(flat.reshape(shape), copy=True)
    return Image(array=array, geometry=geometry_from_volume_node(volume_node), source=volume_node.GetName() or "")


def slice_index_at_ras(volume_node, ras: Sequence[float], axis: str) -> int:
    """Index (along the engine's slice axis for ``axis``) of the slice of ``volume_node`` through a
    world RAS point, e.g. the centre of the slice a view shows. Parent transforms are honoured."""
    import vtk

    from ..infer.slicing import axis_view

    point = [float(v) for v in ras[:3]]
    transform_node = parent_transform(volume_node)
    if transform_node is not None:
        to_local = vtk.vtkGeneralTransform()
        transform_node.GetTransformFromWorld(to_local)
        point = list(to_local.TransformPoint(point))
    ijk = np.linalg.inv(ijk_to_ras(volume_node)) @ np.array(point + [1.0])
    view = axis_view(dimensions_zyx(volume_node), geometry_from_volume_node(volume_node), axis)
    index = int(round(float(ijk[2 - view.slice_axis])))  # numpy axis a <-> IJK component 2 - a
    if not 0 <= index < view.n:
        raise InputError(
            f"the chosen slice is outside volume {node_name(volume_node)} "
            f"(slice {index} of 0..{view.n - 1} along the {axis} axis)"
        )
    return index


def slice_centre_ras(volume_node, index: int, axis: str) -> list[float]:
    """World RAS of the centre of slice ``index`` (the engine's count along ``axis``) of ``volume_node``: where a
    slice view jumps to show that slice (:func:`slice_index_at_ras` of it is ``index``). Parent transforms are
    honoured."""
    import vtk

    from ..infer.slicing import axis_view

    shape = dimensions_zyx(volume_node)
    view = axis_view(shape, geometry_from_volume_node(volume_node), axis)
    if not 0 <= int(index) < view.n:
        raise InputError(f"slice {index} is outside volume {node_name(volume_node)} (0..{view.n - 1} along the "
                         f"{axis} axis)")
    ijk = [(n - 1) / 2.0 for n in reversed(shape)] + [1.0]  # i, j, k = x, y, z
    ijk[2 - view.slice_axis] = float(index)
    point = [float(v) for v in (ijk_to_ras(volume_node) @ np.array(ijk))[:3]]
    transform_node = parent_transform(volume_node)
    if transform_node is not None:
        to_world = vtk.vtkGeneralTransform()
        transform_node.GetTransformToWorld(to_world)
        point = list(to_world.TransformPoint(point))
    return point


def oriented_image_from_mask(mask: np.ndarray, grid):
    """A binary ``(z, y, x)`` mask as a vtkOrientedImageData (uint8, IJK→RAS set) on ``grid``: a volume
    node, or the :class:`Geometry` of an image read from one (no node needed any more)."""
    import vtk

    matrix = RAS_TO_LPS @ grid.index_to_physical() if isinstance(grid, Geometry) else ijk_to_ras(grid)
    nz, ny, nx = mask.shape
    image = slicer_module().vtkOrientedImageData()
    image.SetDimensions(nx, ny, nz)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support().vtk_to_numpy(image.GetPointData().GetScalars())[:] = (mask != 0).ravel().astype(np.uint8)
    image.SetImageToWorldMatrix(vtk_matrix(matrix))
    return image


def replace_slices(original: np.ndarray, new: np.ndarray, geometry: Geometry, axis: str,
                   slice_range: tuple[int, int] | None) -> np.ndarray:
    """``new`` inside ``slice_range`` (slice indices along ``axis``, as the engine counts them) and
    ``original`` outside it; all of ``new`` when there is no range. Both masks are on ``geometry``'s grid."""
    from ..infer.slicing import axis_view

    if slice_range is None:
        return new.astype(np.uint8)
    combined = original.astype(np.uint8).copy()
    index = [slice(None)] * 3
    index[axis_view(combined.shape, geometry, axis).slice_axis] = slice(int(slice_range[0]), int(slice_range[1]))
    combined[tuple(index)] = new[tuple(index)]
    return combined


def slab_extent(shape: Sequence[int], geometry: Geometry, axis: str, slab: tuple[int, int]) -> list[int]:
    """The IJK extent ``[i0, i1, j0, j1, k0, k1]`` (inclusive) of slices ``slab`` = ``(start, stop)`` along ``axis``
    of a ``(z, y, x)`` grid: what a Segment Editor modification may touch so that only the slab changes."""
    from ..infer.slicing import axis_view

    view = axis_view(tuple(shape), geometry, axis)
    start, stop = max(0, int(slab[0])), min(view.n, int(slab[1]))
    if start >= stop:
        raise InputError(f"slices {slab[0]}..{slab[1]} are outside the grid (0..{view.n} along the {axis} axis)")
    bounds = [[0, int(n) - 1] for n in reversed(tuple(shape)[:3])]  # i, j, k = x, y, z
    bounds[2 - view.slice_axis] = [start, stop - 1]
    return [v for pair in bounds for v in pair]
