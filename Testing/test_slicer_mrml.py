"""KnowledgeSAMLib.mrml on real MRML (PyPI slicer-core, no Qt): conversions, write-back, rollback.

The engine is replaced by a small stand-in (``engine=`` seam) that copies the reference mask onto the
target grid, so these tests check the Slicer bridge alone; the end-to-end test with the real engine and
the tiny model lives in test_slicer_e2e.py.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
vtk = pytest.importorskip("vtk")
from vtk.util import numpy_support  # noqa: E402

from KnowledgeSAMLib import mrml  # noqa: E402
from KnowledgeSAMLib.mrml import scene as mrml_scene  # noqa: E402
from KnowledgeSAMLib.mrml.scene import ijk_to_ras  # noqa: E402
from KnowledgeSAMLib.data.io import read_image, resample_labels_to  # noqa: E402
from KnowledgeSAMLib.data.volume import Labels  # noqa: E402
from KnowledgeSAMLib.errors import CancelledError, InputError, KnowledgeSAMError  # noqa: E402
from KnowledgeSAMLib.infer.cancel import CancelToken  # noqa: E402
from KnowledgeSAMLib.infer.request import SegmentationResult  # noqa: E402

TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical Structure"
               "~SCT^64033007^Kidney~^^~Anatomic codes - DICOM master list~^^~^^")

# --------------------------------------------------------------------------------------------- helpers


def add_volume(scene, array: np.ndarray, ijk_to_ras: np.ndarray | None = None, name: str = "volume"):
    """A scalar volume node holding ``array`` (z, y, x) with the given IJK->RAS matrix."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    image = vtk.vtkImageData()
    nz, ny, nx = array.shape[:3]
    image.SetDimensions(nx, ny, nz)
    components = 3 if array.ndim == 4 else 1
    vtk_type = numpy_support.get_vtk_array_type(array.dtype)
    image.AllocateScalars(vtk_type, components)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.reshape(-1, components).squeeze()
    node.SetAndObserveImageData(image)
    matrix = vtk.vtkMatrix4x4()
    m = np.eye(4) if ijk_to_ras is None else ijk_to_ras
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(m[r, c]))
    node.SetIJKToRASMatrix(matrix)
    return node


def oblique_matrix() -> np.ndarray:
    """IJK->RAS with anisotropic spacing, axis flips and a rotation (an LPS-stored, tilted scan)."""
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    directions = rotation @ np.diag([-1.0, -1.0, 1.0])  # LPS-like storage
    matrix = np.eye(4)
    matrix[:3, :3] = directions @ np.diag([0.8, 0.6, 2.5])
    matrix[:3, 3] = [10.0, 8.0, 44.0]
    return matrix


def add_segment(segmentation_node, mask: np.ndarray, volume_node, name: str, color=(1.0, 0.0, 0.0),
                terminology: str | None = None) -> str:
    """Add a segment whose voxels are ``mask`` on ``volume_node``'s grid; return its ID."""
    segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", name, list(color))
    labelmap = mrml.oriented_image_from_mask(mask, volume_node)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    assert logic.SetBinaryLabelmapToSegment(labelmap, segmentation_node, segment_id, logic.MODE_REPLACE)
    if terminology:
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        segment.SetTag(segment.GetTerminologyEntryTagName(), terminology)
    return segment_id


def new_segmentation(scene, volume_node, name: str = "segmentation"):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return node


def segment_array(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """Slicer's own export of one segment onto a volume grid (what arrayFromSegmentBinaryLabelmap does)."""
    labelmap_node = segmentation_node.GetScene().AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__export__")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation_node, ids, labelmap_node, volume_node)
        image = labelmap_node.GetImageData()
        nx, ny, nz = image.GetDimensions()
        return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(nz, ny, nx).copy()
    finally:
        display = labelmap_node.GetDisplayNode()
        segmentation_node.GetScene().RemoveNode(labelmap_node)
        if display is not None:
            segmentation_node.GetScene().RemoveNode(display)


def raw_labelmap(segmentation_node, segment_id: str) -> tuple[tuple, np.ndarray, np.ndarray]:
    """A segment's own binary labelmap: extent, IJK->RAS and voxels (bit-exact comparisons)."""
    image = slicer.vtkOrientedImageData()
    assert segmentation_node.GetBinaryLabelmapRepresentation(segment_id, image)
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    scalars = image.GetPointData().GetScalars()
    voxels = numpy_support.vtk_to_numpy(scalars).copy() if scalars is not None else np.zeros(0)
    return image.GetExtent(), np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]), voxels


def segment_state(segmentation_node) -> dict:
    """Every segment's ID, name, colour, tags and voxels: the snapshot 'unchanged' is checked against."""
    segmentation = segmentation_node.GetSegmentation()
    state = {}
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        tags = {}
        for tag in ("TerminologyEntry", "KnowledgeSAM.Model", "KnowledgeSAM.Provenance", "Segmentation.Status"):
            value = mrml.segment_tag(segment, tag)
            if value is not None:
                tags[tag] = value
        extent, matrix, voxels = raw_labelmap(segmentation_node, segment_id)
        state[segment_id] = (index, segment.GetName(), tuple(segment.GetColor()), tags, extent,
                             matrix.round(9).tolist(), voxels.tobytes())
    return state


def scene_node_ids(scene) -> list[str]:
    return sorted(scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes()))


def copy_engine(request, model, progress, cancel) -> SegmentationResult:
    """Stand-in engine: the reference labels, resampled onto the target grid (no model involved).

    It honours the contract the real engine keeps: labels in exactly the target geometry, segments copying
    name/colour/value/terminology/id, progress calls, the cancel token checked between 'batches'."""
    labels = request.reference_labels
    wanted = request.segments or labels.segments
    on_target = resample_labels_to(labels, request.target.geometry, request.target.shape)
    layers = np.zeros_like(on_target.layers)
    for index, segment in enumerate(wanted):
        if cancel is not None:
            cancel.raise_if_cancelled()
        layers[segment.layer][on_target.mask(segment)] = segment.label_value
        if progress is not None:
            progress(index + 1, len(wanted))
    result_labels = Labels(layers=layers, geometry=request.target.geometry, segments=list(wanted))
    return SegmentationResult(labels=result_labels, confidence={},
                              provenance={"model_hash": "stand-in-0000", "mode": request.mode, "device": "cpu"})


@pytest.fixture()
def scene():
    return mrml.headless_scene()


@pytest.fixture()
def kidney_scene(scene):
    """Target and reference volumes (different, tilted grids) and a reference segmentation with two
    segments plus an unrelated third one."""
    rng = np.random.default_rng(0)
    target_array = rng.normal(0, 10, (12, 20, 24)).astype(np.int16)
    target = add_volume(scene, target_array, oblique_matrix(), "target")
    reference_matrix = np.diag([1.0, 1.0, 2.0, 1.0])
    reference_matrix[:3, 3] = [-8.0, -10.0, 40.0]
    reference = add_volume(scene, rng.normal(0, 10, (14, 22, 18)).astype(np.int16), reference_matrix, "reference")
    segmentation = new_segmentation(scene, reference, "reference segmentation")
    zz, yy, xx = np.mgrid[:14, :22, :18]
    kidney = ((zz - 7) ** 2 / 16 + (yy - 11) ** 2 / 36 + (xx - 9) ** 2 / 25) <= 1
    artery = (np.abs(yy - 11) <= 1) & (np.abs(xx - 9) <= 1) & (zz >= 2) & (zz <= 11)
    other = (zz < 3) & (yy < 4)
    ids = {
        "kidney": add_segment(segmentation, kidney.astype(np.uint8), reference, "kidney", (0.8, 0.2, 0.1), TERMINOLOGY),
        "artery": add_segment(segmentation, artery.astype(np.uint8), reference, "artery", (0.9, 0.1, 0.9)),
        "other": add_segment(segmentation, other.astype(np.uint8), reference, "other", (0.1, 0.9, 0.1)),
    }
    return scene, target, reference, segmentation, ids

# --------------------------------------------------------------------------------------------- volumes


def test_image_geometry_matches_what_itk_reads_from_slicers_own_file(scene, tmp_path):
    """The node -> Image conversion must agree with SimpleITK reading the NRRD Slicer itself writes."""
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    node = add_volume(scene, array, oblique_matrix(), "tilted")
    path = tmp_path / "tilted.nrrd"
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(node)

    image = mrml.image_from_volume_node(node)
    from_file = read_image(path)
    assert image.array.shape == (5, 6, 7)
    np.testing.assert_array_equal(image.array, from_file.array)
    np.testing.assert_allclose(image.geometry.spacing, from_file.geometry.spacing, atol=1e-6)
    np.testing.assert_allclose(image.geometry.origin, from_file.geometry.origin, atol=1e-6)
    np.testing.assert_allclose(image.geometry.direction, from_file.geometry.direction, atol=1e-6)
    # and it is a copy, not a view of VTK's memory
    image.array[0, 0, 0] = 999
    assert mrml.image_from_volume_node(node).array[0, 0, 0] == 0


def test_rgb_volume_and_bad_volumes(scene):
    rgb = np.zeros((1, 4, 5, 3), dtype=np.uint8)
    rgb[0, 1, 2] = (10, 20, 30)
    node = scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "photo")
    image = vtk.vtkImageData()
    image.SetDimensions(5, 4, 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = rgb.reshape(-1, 3)
    node.SetAndObserveImageData(image)
    converted = mrml.image_from_volume_node(node)
    assert converted.is_rgb and converted.array.shape == (1, 4, 5, 3)
    assert tuple(converted.array[0, 1, 2]) == (10, 20, 30)

    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="'empty' has no voxels"):
        mrml.image_from_volume_node(empty)


def test_slice_index_at_ras_follows_the_engines_axis(scene):
    matrix = np.diag([0.5, 0.5, 3.0, 1.0])
    matrix[:3, 3] = [0.0, 0.0, -30.0]
    node = add_volume(scene, np.zeros((10, 8, 6), dtype=np.int16), matrix, "axial stack")
    # RAS z = -30 + 3 k  ->  k = 4 for z = -18; numpy axis 0 is the axial slice axis
    assert mrml.slice_index_at_ras(node, (1.0, 1.0, -18.2), "axial") == 4
    assert mrml.slice_index_at_ras(node, (1.0, 1.2, -18.0), "coronal") == 2  # j = 1.2 / 0.5
    with pytest.raises(InputError, match="outside volume"):
        mrml.slice_index_at_ras(node, (0.0, 0.0, 100.0), "axial")

# --------------------------------------------------------------------------------------------- labels


def test_labels_resampled_like_slicers_export(kidney_scene):
    scene, target, reference, segmentation, ids = kidney_scene
    before = scene_node_ids(scene)
    labels = mrml.labels_from_segmentation_node(segmentation, [ids["kidney"], "artery"], target)
    assert scene_node_ids(scene) == before  # reading changes nothing
    assert labels.shape == (12, 20, 24)
    assert labels.geometry.same_grid(mrml.image_from_volume_node(target).geometry)
    assert [s.name for s in labels.segments] == ["kidney", "artery"]
    assert [s.id for s in labels.segments] == [ids["kidney"], ids["artery"]]
    assert labels.segments[0].terminology == TERMINOLOGY
    np.testing.assert_allclose(labels.segments[1].color, (0.9, 0.1, 0.9))
    for segment in labels.segments:
        expected = segment_array(segmentation, segment.id, target) != 0
        assert expected.sum() > 0
        np.testing.assert_array_equal(labels.mask(segment), expected)


def test_overlapping_segments_get_separate_layers(scene):
    volume = add_volume(scene, np.zeros((4, 6, 6), dtype=np.int16), name="v")
    segmentation = new_segmentation(scene, volume)
    a = np.zeros((4, 6, 6), np.uint8)
    a[1:3, 1:4, 1:4] = 1
    b = np.zeros_like(a)
    b[1:3, 2:5, 2:5] = 1  # overlaps a: Slicer keeps b on another layer
    ida = add_segment(segmentation, a, volume, "a")
    idb = add_segment(segmentation, b, volume, "b")
    labels = mrml.labels_from_segmentation_node(segmentation, None, volume)
    assert labels.layers.shape[0] == 2
    np.testing.assert_array_equal(labels.mask(labels.find(ida)), a != 0)
    np.testing.assert_array_equal(labels.mask(labels.find(idb)), b != 0)


def test_unknown_segment_is_a_clear_error(kidney_scene):
    scene, target, reference, segmentation, ids = kidney_scene
    with pytest.raises(InputError, match=r"segment 'liver' is not in segmentation 'reference segmentation' "
                                         r"\(segments: kidney"):
        mrml.labels_from_segmentation_node(segmentation, ["liver"], reference)

# --------------------------------------------------------------------------------------------- write-back


def run(kidney_scene, **kwargs):
    scene, target, reference, segmentation, ids = kidney_scene
    arguments = dict(targetVolumeNode=target, referenceVolumeNode=reference, referenceSegmentationNode=segmentation,
                     segmentIds=[ids["kidney"], ids["artery"]], mode="volume", engine=copy_engine)
    arguments.update(kwargs)
    return mrml.segment_volume_nodes(**arguments)


def test_new_output_has_target_geometry_names_colours_and_provenance(kidney_scene):
    scene, target, reference, segmentation, ids = kidney_scene
    calls = []
    output = run(kidney_scene, progressCallback=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]
    assert output.GetName() == "target KnowledgeSAM"
    assert output.GetScene() is scene
    # output geometry is the target's: reference geometry string and the segments' labelmap grids
    geometry = vtk.vtkMatrix4x4()
    target.GetIJKToRASMatrix(geometry)
    out_segmentation = output.GetSegmentation()
    assert out_segmentation.GetNumberOfSegments() == 2
    expected_on_target = mrml.labels_from_segmentation_node(segmentation, [ids["kidney"], ids["artery"]], target)
    for index, name in enumerate(["kidney", "artery"]):
        segment_id = out_segmentation.GetSegmentIdBySegmentName(name)
        segment = out_segmentation.GetSegment(segment_id)
        reference_segment = segmentation.GetSegmentation().GetSegment(ids[name])
        assert segment.GetName() == name
        np.testing.assert_allclose(segment.GetColor(), reference_segment.GetColor())
        extent, matrix, _ = raw_labelmap(output, segment_id)
        np.testing.assert_allclose(matrix, ijk_to_ras(target), atol=1e-9)
        np.testing.assert_array_equal(segment_array(output, segment_id, target) != 0,
                                      expected_on_target.mask(expected_on_target.segments[index]))
        assert mrml.segment_tag(segment, "KnowledgeSAM.Model") == "stand-in-0000"
        assert mrml.segment_tag(segment, "KnowledgeSAM.Mode") == "volume"
        assert "reference segmentation" in mrml.segment_tag(segment, "KnowledgeSAM.Reference")
        assert slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentStatus(segment) == \
            slicer.vtkSlicerSegmentationsModuleLogic.InProgress
    kidney = out_segmentation.GetSegment(out_segmentation.GetSegmentIdBySegmentName("kidney"))
    assert mrml.segment_tag(kidney, kidney.GetTerminologyEntryTagName()) == TERMINOLOGY


def test_existing_output_only_its_segments_change(kidney_scene):
    scene, target, reference, segmentation, ids = kidney_scene
    output = new_segmentation(scene, target, "my work")
    nz, ny, nx = 12, 20, 24
    keep = np.zeros((nz, ny, nx), np.uint8)
    keep[2:9, 5:15, 6:18] = 1  # overlaps where the new kidney goes
    kept_id = add_segment(output, keep, target, "liver", (0.5, 0.5, 0.0))
    shared = np.zeros_like(keep)
    shared[0, 0:3, 0:3] = 1
    shared_id = add_segment(output, shared, target, "marker", (0.0, 0.0, 1.0))  # shares a layer with liver
    old_kidney = np.zeros_like(keep)
    old_kidney[10:12, 0:2, 0:2] = 1
    old_kidney_id = add_segment(output, old_kidney, target, "kidney", (0.0, 1.0, 1.0))
    assert output.GetSegmentation().GetNumberOfLayers() == 1
    before = segment_state(output)

    result = run(kidney_scene, outputSegmentationNode=output)
    assert result is output
    after = segment_state(output)
    for untouched in (kept_id, shared_id):
        assert after[untouched] == before[untouched], "a segment that is not an output was modified"
    # the old 'kidney' was replaced in place (same ID), the artery was added
    names = [output.GetSegmentation().GetNthSegment(i).GetName() for i in range(output.GetSegmentation().GetNumberOfSegments())]
    assert names == ["liver", "marker", "kidney", "artery"]
    assert output.GetSegmentation().GetSegmentIdBySegmentName("kidney") == old_kidney_id
    assert not np.array_equal(segment_array(output, old_kidney_id, target), old_kidney)


def test_writeback_undo_restores_the_previous_state(kidney_scene):
    scene, target, reference, segmentation, ids = kidney_scene
    output = new_segmentation(scene, target, "my work")
    add_segment(output, np.ones((12, 20, 24), np.uint8), target, "kidney", (0.0, 1.0, 1.0))
    before = segment_state(output)
    prepared = mrml.prepare_inputs(target, reference, segmentation, [ids["kidney"], ids["artery"]], output, mode="volume")
    result = mrml.run_engine(prepared, mrml.Segmenter(engine=copy_engine))
    undo_calls = []
    write = mrml.write_outputs(prepared, result, save_state_for_undo=lambda: undo_calls.append(1))
    assert undo_calls == [1]
    assert segment_state(output) != before
    write.undo()
    assert segment_state(output) == before

    nodes = scene_node_ids(scene)
    prepared_new = mrml.prepare_inputs(target, reference, segmentation, [ids["kidney"]], None, mode="volume")
    write_new = mrml.write_outputs(prepared_new, mrml.run_engine(prepared_new, mrml.Segmenter(engine=copy_engine)))
    assert write_new.created_node and len(scene_node_ids(scene)) > len(nodes)
    write_new.undo()
    assert scene_node_ids(scene) == nodes

# --------------------------------------------------------------------------------------------- failures


@pytest.fixture()
def existing_output(kidney_scene):
    scene, target, reference, segmentation, ids = kidney_scene
    output = new_segmentation(scene, target, "my work")
    add_segment(output, np.ones((12, 20, 24), np.uint8), target, "kidney", (0.0, 1.0, 1.0))
    add_segment(output, np.eye(24, dtype=np.uint8)[None, :20].repeat(12, 0), target, "liver", (0.5, 0.5, 0.0))
    return output


def _snapshot(scene, *segmentation_nodes):
    return scene_node_ids(scene), [segment_state(node) for node in segmentation_nodes]


@pytest.mark.parametrize("output_kind", ["new", "existing"])
@pytest.mark.parametrize("failure", ["bad segment id", "empty mask", "slice without mask", "cancel", "engine error",
                                     "write error"])
def test_failing_run_leaves_the_scene_unchanged(kidney_scene, existing_output, monkeypatch, failure, output_kind):
    scene, target, reference, segmentation, ids = kidney_scene
    output = existing_output if output_kind == "existing" else None
    before = _snapshot(scene, segmentation, existing_output)
    kwargs: dict = {"outputSegmentationNode": output}
    expected: type[Exception] = InputError
    if failure == "bad segment id":
        kwargs["segmentIds"] = [ids["kidney"], "Segment_does_not_exist"]
    elif failure == "empty mask":
        empty = add_segment(segmentation, np.zeros((14, 22, 18), np.uint8), reference, "empty")
        before = _snapshot(scene, segmentation, existing_output)
        kwargs["segmentIds"] = [empty]
    elif failure == "slice without mask":
        kwargs.update(referenceVolumeNode=reference, referenceSliceIndex=0, mode="anchor")
    elif failure == "cancel":
        token = CancelToken()

        def cancelling_progress(done, total):
            token.cancel()  # the user presses Cancel after the first structure

        kwargs.update(cancel=token, progressCallback=cancelling_progress)
        expected = CancelledError
    elif failure == "engine error":
        def broken_engine(request, model, progress, cancel):
            raise KnowledgeSAMError("model weights do not fit")

        kwargs["engine"] = broken_engine
        expected = KnowledgeSAMError
    elif failure == "write error":
        real = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment
        calls = []

        def fails_on_second_segment(*args, **kw):
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("simulated failure half-way through the write-back")
            return real(*args, **kw)

        monkeypatch.setattr(mrml_scene, "segmentations_logic", lambda: type(
            "Logic", (), {"SetBinaryLabelmapToSegment": staticmethod(fails_on_second_segment),
                          "MODE_REPLACE": slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE,
                          "SetSegmentStatus": staticmethod(slicer.vtkSlicerSegmentationsModuleLogic.SetSegmentStatus),
                          "InProgress": slicer.vtkSlicerSegmentationsModuleLogic.InProgress}))
        expected = RuntimeError
    with pytest.raises(expected):
        run(kidney_scene, **kwargs)
    assert _snapshot(scene, segmentation, existing_output) == before


def test_output_under_another_transform_is_refused(kidney_scene, existing_output):
    scene, target, reference, segmentation, ids = kidney_scene
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    existing_output.SetAndObserveTransformNodeID(transform.GetID())
    before = segment_state(existing_output)
    with pytest.raises(InputError, match="under a different transform"):
        run(kidney_scene, outputSegmentationNode=existing_output)
    assert segment_state(existing_output) == before

# --------------------------------------------------------------------------------------------- files


def test_written_seg_nrrd_reads_back_with_slicerio(kidney_scene, tmp_path):
    slicerio = pytest.importorskip("slicerio")
    scene, target, reference, segmentation, ids = kidney_scene
    output = run(kidney_scene)
    path = mrml.write_segmentation_node(output, tmp_path / "out.seg.nrrd")
    with pytest.raises(InputError, match="exists"):
        mrml.write_segmentation_node(output, path)  # never overwrites unless asked

    data = slicerio.read_segmentation(str(path))
    assert slicerio.segment_names(data) == ["kidney", "artery"]
    # slicerio gives (i, j, k) arrays in LPS: the file's grid must be exactly the target's
    geometry = mrml.geometry_from_volume_node(target)
    np.testing.assert_allclose(np.asarray(data["ijkToLPS"]), geometry.index_to_physical(), atol=1e-6)
    expected = mrml.labels_from_segmentation_node(output, None, target)
    for name in ("kidney", "artery"):
        mask_zyx = slicerio.segment_mask(data, name).transpose(2, 1, 0)
        ours = expected.mask(expected.find(name))
        assert ours.sum() > 0
        np.testing.assert_array_equal(mask_zyx, ours)
        segment = slicerio.segment_from_name(data, name)
        reference_color = segmentation.GetSegmentation().GetSegment(ids[name]).GetColor()
        np.testing.assert_allclose(segment["color"], reference_color, atol=1e-3)


def test_labels_follow_a_transformed_segmentation(kidney_scene):
    """A segmentation under a linear transform is resampled where it is shown, as Slicer's export does."""
    scene, target, reference, segmentation, ids = kidney_scene
    untransformed = mrml.labels_from_segmentation_node(segmentation, [ids["kidney"]], target)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 3.0)
    matrix.SetElement(2, 3, -2.5)
    transform.SetMatrixTransformToParent(matrix)
    segmentation.SetAndObserveTransformNodeID(transform.GetID())
    moved = mrml.labels_from_segmentation_node(segmentation, [ids["kidney"]], target)
    expected = segment_array(segmentation, ids["kidney"], target) != 0
    assert expected.sum() > 0
    np.testing.assert_array_equal(moved.mask(moved.segments[0]), expected)
    assert not np.array_equal(moved.mask(moved.segments[0]), untransformed.mask(untransformed.segments[0]))


def test_duplicate_segment_names_are_refused(kidney_scene):
    scene, target, reference, segmentation, ids = kidney_scene
    twin = add_segment(segmentation, np.ones((14, 22, 18), np.uint8), reference, "kidney")
    before = scene_node_ids(scene)
    with pytest.raises(InputError, match="several segments named 'kidney'"):
        run(kidney_scene, segmentIds=[ids["kidney"], twin])
    assert scene_node_ids(scene) == before


def test_writeback_knows_when_the_output_was_edited_afterwards(kidney_scene):
    scene, target, reference, segmentation, ids = kidney_scene
    prepared = mrml.prepare_inputs(target, reference, segmentation, [ids["kidney"]], None, mode="volume")
    write = mrml.write_outputs(prepared, mrml.run_engine(prepared, mrml.Segmenter(engine=copy_engine)))
    assert not write.edited_since()
    add_segment(write.segmentation_node, np.ones((12, 20, 24), np.uint8), target, "later edit")
    assert write.edited_since()


def test_masks_go_back_onto_the_grid_of_an_image_read_from_a_node(kidney_scene):
    """The effect keeps the Image's geometry instead of a second temporary volume node: same labelmap."""
    scene, target, reference, segmentation, ids = kidney_scene
    mask = np.zeros((12, 20, 24), np.uint8)
    mask[3:6, 4:9, 5:7] = 1
    from_node = mrml.oriented_image_from_mask(mask, target)
    from_geometry = mrml.oriented_image_from_mask(mask, mrml.image_from_volume_node(target).geometry)
    matrices = []
    for image in (from_node, from_geometry):
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        matrices.append(np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)]))
        assert image.GetDimensions() == (24, 20, 12)
    np.testing.assert_allclose(matrices[0], matrices[1], atol=1e-9)


def test_replace_slices_keeps_the_original_outside_the_range(kidney_scene):
    from KnowledgeSAMLib.infer.slicing import axis_view

    scene, target, reference, segmentation, ids = kidney_scene
    geometry = mrml.image_from_volume_node(target).geometry
    rng = np.random.default_rng(3)
    original, new = (rng.random((2, 12, 20, 24)) > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(mrml.replace_slices(original, new, geometry, "axial", None), new)
    combined = mrml.replace_slices(original, new, geometry, "axial", (2, 5))
    view = axis_view(combined.shape, geometry, "axial")
    for k in range(view.n):  # slices counted as the engine counts them along the axis
        expected = new if 2 <= k < 5 else original
        np.testing.assert_array_equal(view.get(combined, k), view.get(expected, k))
