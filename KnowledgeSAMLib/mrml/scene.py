"""Access to Slicer's modules, a scene without the application, node checks and the matrices shared by the
other parts of the bridge.

``slicer`` and ``vtk`` are imported inside functions, so importing the bridge costs nothing and works
where neither is installed (the error then comes when a node is touched).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError, KnowledgeSAMError

__all__ = ["headless_scene", "same_coordinate_frame", "same_node", "remove_node", "check_in_scene"]

# RAS <-> LPS: flip the sign of the first two physical axes (the matrix is its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slicer_module():
    """The ``slicer`` module (Slicer's own, or slicer-core's)."""
    try:
        import slicer
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise KnowledgeSAMError(
            "KnowledgeSAMLib.mrml needs 3D Slicer or the 'slicer-core' package (pip install slicer-core)"
        ) from error
    return slicer


def segmentations_logic():
    """``vtkSlicerSegmentationsModuleLogic`` (its static methods: the write-back's one seam for tests)."""
    return slicer_module().vtkSlicerSegmentationsModuleLogic


def numpy_support():
    from vtk.util import numpy_support as support

    return support


def headless_scene():
    """A new MRML scene usable without the Slicer application (slicer-core, tests, scripts).

    ``vtkSlicerSegmentationsModuleLogic`` must be given the scene: that registers the segmentation node
    classes and the labelmap/surface converters. The logic is kept alive as an attribute of the scene.
    """
    slicer = slicer_module()
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    scene.knowledgesam_segmentations_logic = logic
    return scene


def node_name(node) -> str:
    return f"'{node.GetName()}'" if node is not None and node.GetName() else "(unnamed node)"


def same_node(a, b) -> bool:
    """The same MRML node (by identity, or by ID in one scene: Python wrappers of one node are not always one
    object, and two scenes number their nodes alike)."""
    return a is b or (a is not None and b is not None and bool(a.GetID()) and a.GetID() == b.GetID()
                      and a.GetScene() is b.GetScene())


def ijk_to_ras(volume_node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtk_matrix(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def dimensions_zyx(volume_node) -> tuple[int, int, int]:
    nx, ny, nz = volume_node.GetImageData().GetDimensions()
    return nz, ny, nx


def parent_transform(node):
    return node.GetParentTransformNode() if node is not None else None


def check_volume_node(node, role: str) -> None:
    """Refuse anything but a scalar or RGB volume with voxels (once per node, where a front-end hands it in)."""
    if node is None:
        raise InputError(f"no {role} volume was given")
    if not node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLVectorVolumeNode"):
        raise InputError(f"{role} {node_name(node)} is a {node.GetClassName()}, not a scalar or RGB volume")
    image = node.GetImageData()
    if image is None or min(image.GetDimensions()) < 1:
        raise InputError(f"{role} volume {node_name(node)} has no voxels")


def check_segmentation_node(node, role: str) -> None:
    if node is None:
        raise InputError(f"no {role} segmentation was given")
    if not node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"{role} {node_name(node)} is a {node.GetClassName()}, not a segmentation")


def check_in_scene(node, scene, role: str) -> None:
    """Refuse a node that is not (or no longer) in ``scene`` (None: in any scene), or a scene that is being
    closed or loaded: nothing may be written there."""
    if node.GetScene() is None or (node.GetID() and node.GetScene().GetNodeByID(node.GetID()) is None):
        raise InputError(f"{role} {node_name(node)} is no longer in the scene; nothing was written")
    if scene is not None and node.GetScene() is not scene:
        raise InputError(f"{role} {node_name(node)} belongs to another scene than the target volume")
    busy = node.GetScene()
    if busy.IsClosing() or busy.IsImporting() or busy.IsRestoring():
        raise InputError(f"the scene is being closed or loaded; {role} {node_name(node)} was not changed")


def transform_between(source_node, target_node):
    """vtkGeneralTransform from ``source_node``'s coordinates to ``target_node``'s (None if identical)."""
    source, target = parent_transform(source_node), parent_transform(target_node)
    if source is target:
        return None
    import vtk

    transform = vtk.vtkGeneralTransform()
    slicer_module().vtkMRMLTransformNode.GetTransformBetweenNodes(source, target, transform)
    return transform


def same_coordinate_frame(node_a, node_b) -> bool:
    """True when both nodes sit under the same parent transform (or none), so their RAS coordinates agree."""
    return transform_between(node_a, node_b) is None


def remove_node(node) -> None:
    """Remove a node with its display and storage nodes from its scene."""
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
