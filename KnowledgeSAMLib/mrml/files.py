"""Files into a scene without the Slicer application: a volume and a segmentation, read by Slicer's own storage
nodes (what ``slicer.util.loadVolume``/``loadSegmentation`` use underneath), for slicer-core scripts and tests.

Why: the batch script and plain-Python users (``pip install slicer-core``) need the same nodes a Slicer session
would have, with one clear error naming the file when it cannot be read. Inside Slicer the batch script uses
``slicer.util``'s loaders, which also add display nodes and handle RGB volumes.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..infer.paths import target_name
from .scene import remove_node, slicer_module

__all__ = ["load_volume", "load_segmentation"]


def _read(scene, path, node_class: str, storage_class: str, what: str):
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} file not found")
    slicer = slicer_module()
    node = scene.AddNewNodeByClass(node_class, target_name(path))
    storage = getattr(slicer, storage_class)()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        remove_node(node)
        raise InputError(f"{path}: could not read the {what}")
    return node


def load_volume(scene, path):
    """A scalar volume node in ``scene`` with the voxels and geometry of ``path`` (NRRD, NIfTI, MHA, ...)."""
    node = _read(scene, path, "vtkMRMLScalarVolumeNode", "vtkMRMLVolumeArchetypeStorageNode", "volume")
    if node.GetImageData() is None:
        remove_node(node)
        raise InputError(f"{path}: the volume has no voxels")
    return node


def load_segmentation(scene, path):
    """A segmentation node in ``scene`` from a ``.seg.nrrd`` (names, colours, terminology) or a labelmap file."""
    node = _read(scene, path, "vtkMRMLSegmentationNode", "vtkMRMLSegmentationStorageNode", "segmentation")
    node.CreateDefaultDisplayNodes()
    return node
