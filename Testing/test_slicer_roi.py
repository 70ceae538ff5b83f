"""The ROI selector's conversion (issue 17, Slicer part) on slicer-core's MRML, which ships
``vtkMRMLMarkupsROINode``: an ROI markup's world box -> two RAS points in the target's coordinates ->
``SegmentRequest.roi``; transformed ROIs and transformed targets; an ROI that misses is refused before any
compute and leaves the scene as it was; a real run (fake model) only labels inside the ROI."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
import vtk  # noqa: E402

from KnowledgeSAMLib import mrml  # noqa: E402
from KnowledgeSAMLib.errors import InputError  # noqa: E402
from KnowledgeSAMLib.infer.roi import RoiBox  # noqa: E402

from test_infer_fakes import ThresholdModel  # noqa: E402
from test_infer_roi import small_structure  # noqa: E402
from test_slicer_mrml import add_segment, add_volume, new_segmentation, segment_state  # noqa: E402

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def roi_node(scene, centre, radius, name="ROI"):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    node.SetXYZ(*centre)
    node.SetRadiusXYZ(*radius)
    return node


def translation(scene, offset, name="shift"):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    matrix = vtk.vtkMatrix4x4()
    for axis, value in enumerate(offset):
        matrix.SetElement(axis, 3, value)
    node.SetMatrixTransformToParent(matrix)
    return node


def phantom_nodes(scene):
    """A body-sized field of view with a bright structure at (row 70, col 30), labelled on every slice."""
    image, labels = small_structure()
    volume = add_volume(scene, image.array, RAS_TO_LPS @ image.geometry.index_to_physical(), "body")
    reference = new_segmentation(scene, volume, "reference")
    add_segment(reference, labels.layers[0], volume, "blob", (0.9, 0.2, 0.2))
    return volume, reference, image


def voxel_centre_ras(image, i, j, k):
    return (RAS_TO_LPS @ image.geometry.index_to_physical() @ np.array([i, j, k, 1.0]))[:3]


def test_points_from_bounds_and_refusal_of_an_empty_roi():
    assert mrml.roi_points_from_bounds([1, 5, -2, 2, 0, 10]) == ((1.0, -2.0, 0.0), (5.0, 2.0, 10.0))
    shifted = mrml.roi_points_from_bounds([1, 5, -2, 2, 0, 10], lambda p: (p[0] - 10, p[1], p[2]))
    assert shifted == ((-9.0, -2.0, 0.0), (-5.0, 2.0, 10.0))
    with pytest.raises(InputError, match="has no extent yet"):
        mrml.roi_points_from_bounds([0, -1, 0, -1, 0, -1])  # what GetRASBounds gives for an unplaced ROI


def test_no_roi_is_the_engines_auto_and_a_wrong_node_is_refused():
    scene = mrml.headless_scene()
    volume, _, _ = phantom_nodes(scene)
    assert mrml.roi_from_node(None, volume) == "auto"
    with pytest.raises(InputError, match="not an ROI"):
        mrml.roi_from_node(scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "points"), volume)


def test_a_transformed_roi_gives_its_world_box_in_the_targets_coordinates():
    scene = mrml.headless_scene()
    volume, _, _ = phantom_nodes(scene)
    roi = roi_node(scene, (10, 20, 5), (4, 5, 6))
    assert mrml.roi_from_node(roi, volume) == ((6.0, 15.0, -1.0), (14.0, 25.0, 11.0))
    roi.SetAndObserveTransformNodeID(translation(scene, (100, 0, 0), "roi moved").GetID())
    assert mrml.roi_from_node(roi, volume) == ((106.0, 15.0, -1.0), (114.0, 25.0, 11.0))  # where it is shown
    volume.SetAndObserveTransformNodeID(translation(scene, (100, 0, 0), "volume moved").GetID())
    assert mrml.roi_from_node(roi, volume) == ((6.0, 15.0, -1.0), (14.0, 25.0, 11.0))  # both moved alike


def test_a_rotated_target_gets_a_box_that_contains_the_roi():
    scene = mrml.headless_scene()
    volume, _, _ = phantom_nodes(scene)
    rotation = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "rotation")
    transform = vtk.vtkTransform()
    transform.RotateZ(30)
    rotation.SetMatrixTransformToParent(transform.GetMatrix())
    volume.SetAndObserveTransformNodeID(rotation.GetID())
    roi = roi_node(scene, (0, 0, 0), (10, 10, 10))
    lower, upper = np.array(mrml.roi_from_node(roi, volume))
    half = 10 * (np.cos(np.radians(30)) + np.sin(np.radians(30)))  # the rotated square's half width
    np.testing.assert_allclose(lower, [-half, -half, -10], atol=1e-6)
    np.testing.assert_allclose(upper, [half, half, 10], atol=1e-6)


def test_an_roi_that_misses_the_target_is_refused_before_compute_and_changes_nothing():
    scene = mrml.headless_scene()
    volume, reference, _ = phantom_nodes(scene)
    far = roi_node(scene, (5000, 5000, 5000), (10, 10, 10), "far away")
    nodes = scene.GetNumberOfNodes()
    before = segment_state(reference)
    calls = []

    def engine(request, model, progress, cancel):
        calls.append(request)

    with pytest.raises(InputError, match="ROI 'far away' lies outside target volume 'body'"):
        mrml.segment_volume_nodes(volume, None, reference, [], mode="anchor", engine=engine, roiNode=far)
    assert not calls, "refused before the engine ran"
    assert scene.GetNumberOfNodes() == nodes and segment_state(reference) == before


def test_an_roi_outside_the_slice_range_is_refused():
    scene = mrml.headless_scene()
    volume, reference, image = phantom_nodes(scene)
    lower, upper = voxel_centre_ras(image, 10, 50, 0), voxel_centre_ras(image, 60, 90, 2)
    roi = roi_node(scene, (lower + upper) / 2, np.abs(upper - lower) / 2, "low slices")
    with pytest.raises(InputError, match="ROI 'low slices' covers axial slices 0-2 .* none of the slice range 5-8"):
        mrml.prepare_inputs(volume, None, reference, [], roi_node=roi, mode="anchor", slice_range=(5, 9))


def test_a_run_with_an_roi_labels_only_inside_it():
    scene = mrml.headless_scene()
    volume, reference, image = phantom_nodes(scene)
    box = RoiBox((10, 50, 0), (60, 90, 9))  # around the structure, as in test_infer_roi
    lower, upper = voxel_centre_ras(image, *box.lower), voxel_centre_ras(image, *box.upper)
    roi = roi_node(scene, (lower + upper) / 2, np.abs(upper - lower) / 2)
    prepared = mrml.prepare_inputs(volume, None, reference, [], roi_node=roi, mode="anchor")
    assert RoiBox.from_ras(*prepared.request.roi, image.geometry) == box
    output = mrml.segment_volume_nodes(volume, None, reference, [], mode="anchor", model=ThresholdModel(image_size=32),
                                       roiNode=roi)
    labels = mrml.labels_from_segmentation_node(output, None, volume)
    predicted = labels.layers[0] != 0
    inside = np.zeros(image.shape, dtype=bool)
    inside[box.as_mask_bounds()] = True
    assert predicted.any() and not (predicted & ~inside).any()
    provenance = mrml.segment_tag(output.GetSegmentation().GetNthSegment(0), "KnowledgeSAM.Provenance")
    assert '"box"' in provenance, "the ROI used is recorded with the result"
