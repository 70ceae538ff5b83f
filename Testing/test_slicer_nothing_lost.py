"""Nothing lost in the Slicer path (issue 22, Slicer part), on slicer-core's MRML.

Before any compute, an output the run must not write into is refused in one line: the reference
segmentation itself (an input), a node of another scene, an internal node of another tool, a node under
another transform, one that stores closed surfaces. During the run the scene may change: a target or output
removed, or the scene being closed, and the result is then not written. In every case the scene is exactly
as it was (node IDs, segments with their voxels and tags)."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
import vtk  # noqa: E402

from KnowledgeSAMLib import mrml  # noqa: E402
from KnowledgeSAMLib.errors import InputError  # noqa: E402

from test_slicer_mrml import add_segment, add_volume, copy_engine, new_segmentation, segment_state  # noqa: E402


def scene_state(scene) -> dict:
    """Every node by ID with its class and name, and every segmentation's segments: 'exactly as it was'."""
    state = {}
    for index in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(index)
        entry = (node.GetClassName(), node.GetName())
        if node.IsA("vtkMRMLSegmentationNode"):
            labelmaps = node.GetSegmentation().GetSourceRepresentationName() == "Binary labelmap"
            entry += (repr(segment_state(node)) if labelmaps else node.GetSegmentation().GetMTime(),)
        state[node.GetID()] = entry
    return state


@pytest.fixture()
def nodes():
    scene = mrml.headless_scene()
    rng = np.random.default_rng(0)
    volume = add_volume(scene, rng.normal(0, 10, (6, 24, 24)).astype(np.int16), np.diag([0.8, 0.8, 2.0, 1.0]), "ct")
    reference = new_segmentation(scene, volume, "reference")
    mask = np.zeros((6, 24, 24), np.uint8)
    mask[2:4, 8:14, 6:12] = 1
    add_segment(reference, mask, volume, "kidney", (0.8, 0.3, 0.2))
    return scene, volume, reference


def refuses(nodes, output, match, **kwargs):
    scene, volume, reference = nodes
    before = scene_state(scene)
    ran = []

    def engine(request, model, progress, cancel):
        ran.append(True)
        return copy_engine(request, model, progress, cancel)

    with pytest.raises(InputError, match=match):
        mrml.segment_volume_nodes(volume, None, reference, [], output, mode="anchor", engine=engine, **kwargs)
    assert not ran, "refused before compute"
    assert scene_state(scene) == before


def test_the_reference_segmentation_is_never_the_output(nodes):
    refuses(nodes, nodes[2], "is the reference segmentation: the result would replace the segments")


def test_an_output_of_another_scene_is_refused(nodes):
    other = mrml.headless_scene()
    elsewhere = other.AddNewNodeByClass("vtkMRMLSegmentationNode", "elsewhere")
    refuses(nodes, elsewhere, "belongs to another scene")


def test_an_internal_node_of_another_tool_is_refused(nodes):
    scene, volume, _ = nodes
    hidden = new_segmentation(scene, volume, "KnowledgeSAM preview")
    hidden.SetHideFromEditors(True)
    refuses(nodes, hidden, "internal node of another tool")


def test_an_output_under_another_transform_is_refused_before_compute(nodes):
    scene, volume, _ = nodes
    output = new_segmentation(scene, volume, "moved")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    output.SetAndObserveTransformNodeID(transform.GetID())
    refuses(nodes, output, "under a different transform")


def test_an_output_that_stores_surfaces_is_refused_before_compute(nodes):
    scene, volume, _ = nodes
    output = new_segmentation(scene, volume, "surfaces")
    sphere = vtk.vtkSphereSource()
    sphere.Update()
    segment = slicer.vtkSegment()
    segment.SetName("drawn as a surface")
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName(),
                              sphere.GetOutput())
    output.GetSegmentation().SetSourceRepresentationName(
        slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName())
    output.GetSegmentation().AddSegment(segment)
    refuses(nodes, output, "stores Closed surface, not labelmaps")


@pytest.mark.parametrize("during_the_run", ["remove the target", "remove the output", "close the scene"])
def test_a_scene_changed_during_the_run_gets_nothing_written(nodes, during_the_run):
    scene, volume, reference = nodes
    output = new_segmentation(scene, volume, "my work")
    add_segment(output, np.ones((6, 24, 24), np.uint8), volume, "body", (0.1, 0.1, 0.1))
    prepared = mrml.prepare_inputs(volume, None, reference, [], output, mode="anchor")
    result = mrml.run_engine(prepared, mrml.Segmenter(engine=copy_engine))
    if during_the_run == "remove the target":
        scene.RemoveNode(volume)
    elif during_the_run == "remove the output":
        scene.RemoveNode(output)
    before = scene_state(scene)
    output_before = segment_state(output)
    if during_the_run == "close the scene":  # what Slicer's "Close scene" does around its StartCloseEvent
        scene.StartState(scene.CloseState)
        try:
            with pytest.raises(InputError, match="being closed or loaded"):
                mrml.write_outputs(prepared, result)
        finally:
            scene.EndState(scene.CloseState)
        assert scene_state(scene) == before
        return
    with pytest.raises(InputError, match="no longer in the scene; nothing was written"):
        mrml.write_outputs(prepared, result)
    assert scene_state(scene) == before and segment_state(output) == output_before
