"""Image/label I/O: round trips with geometry, Slicer .seg.nrrd layers, atomic writes, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from KnowledgeSAMLib.data import io
from KnowledgeSAMLib.data.io import (atomic_write, read_image, read_labels, resample_labels_to, write_image,
                                     write_labels)
from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment
from KnowledgeSAMLib.errors import InputError

KIDNEY_TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list"
                      "~SCT^123037004^Anatomical Structure~SCT^64033007^Kidney~^^"
                      "~Anatomic codes - DICOM master list~^^~^^")


def oblique_geometry(ndim: int = 3) -> Geometry:
    """Spacing, origin and a rotated, axis-swapping direction: catches every transposition mistake."""
    a = 0.3
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    swap = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])  # index y -> physical -z, index z -> physical y
    direction = rotation @ swap if ndim == 3 else rotation
    return Geometry(spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0), direction=direction.ravel(), ndim=ndim)


def layered_labels(geometry: Geometry, shape=(5, 6, 7)) -> Labels:
    layers = np.zeros((2,) + shape, np.uint8)
    layers[0, 1:4, 2:5, 1:6] = 1  # disc
    layers[1, 2:3, 3:5, 2:5] = 2  # cup, inside the disc: needs its own layer
    layers[0, 0, 0, :2] = 3  # a third segment next to the disc on layer 0
    segments = [Segment("disc", 1, 0, (1.0, 0.0, 0.0), KIDNEY_TERMINOLOGY, id="Segment_1"),
                Segment("cup", 2, 1, (0.0, 1.0, 0.25)),
                Segment("rim marker", 3, 0)]
    return Labels(layers, geometry, segments, source="test")


# ------------------------------------------------------------------------------------- images

@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_image_round_trip_keeps_values_and_oblique_geometry(tmp_path, ext, dtype):
    array = (np.random.default_rng(1).normal(0, 300, (5, 6, 7))).astype(dtype)
    geometry = oblique_geometry()
    path = write_image(Image(array, geometry), tmp_path / f"img{ext}")
    back = read_image(path)
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, array)
    assert back.geometry.same_grid(geometry) and back.geometry.ndim == 3
    assert back.source == str(path)


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".nii.gz"])
def test_rgb_volume_round_trip(tmp_path, ext):
    array = np.random.default_rng(2).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    back = read_image(write_image(Image(array, oblique_geometry()), tmp_path / f"rgb{ext}"))
    assert back.is_rgb
    np.testing.assert_array_equal(back.array, array)
    assert back.geometry.same_grid(oblique_geometry())


def test_png_grey_and_rgb_are_one_slice_2d_images(tmp_path):
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 256, (1, 9, 11), dtype=np.uint8)
    rgb = rng.integers(0, 256, (1, 9, 11, 3), dtype=np.uint8)
    back_grey = read_image(write_image(Image(grey, Geometry(ndim=2)), tmp_path / "g.png"))
    back_rgb = read_image(write_image(Image(rgb, Geometry(ndim=2)), tmp_path / "c.png"))
    assert back_grey.array.shape == (1, 9, 11) and back_grey.geometry.ndim == 2
    assert back_rgb.array.shape == (1, 9, 11, 3) and back_rgb.is_rgb and back_rgb.geometry.ndim == 2
    np.testing.assert_array_equal(back_grey.array, grey)
    np.testing.assert_array_equal(back_rgb.array, rgb)


def test_jpg_reads_as_rgb_2d(tmp_path):
    smooth = np.zeros((1, 32, 40, 3), np.uint8)
    smooth[..., 0], smooth[..., 1], smooth[..., 2] = 200, 90, 40
    back = read_image(write_image(Image(smooth, Geometry(ndim=2)), tmp_path / "f.jpg"))
    assert back.array.shape == (1, 32, 40, 3) and back.geometry.ndim == 2
    assert np.abs(back.array.astype(int) - smooth).max() <= 3  # lossy, but close


def test_2d_image_in_nrrd_stays_2d(tmp_path):
    geometry = Geometry(spacing=(0.5, 0.25, 1.0), origin=(3.0, 4.0, 0.0), ndim=2)
    array = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    back = read_image(write_image(Image(array, geometry), tmp_path / "two_d.nrrd"))
    assert back.geometry.ndim == 2 and back.geometry.same_grid(geometry)
    np.testing.assert_array_equal(back.array, array)


def test_png_write_refuses_non_8bit_values(tmp_path):
    with pytest.raises(InputError, match="8-bit"):
        write_image(Image(np.full((1, 4, 4), 1000.0, np.float32), Geometry(ndim=2)), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_dicom_series_folder(tmp_path):
    geometry = oblique_geometry()
    array = np.random.default_rng(4).integers(-1000, 1000, (4, 6, 7)).astype(np.int16)
    volume = sitk.GetImageFromArray(array)
    volume.SetSpacing(geometry.spacing)
    volume.SetOrigin(geometry.origin)
    volume.SetDirection(geometry.direction)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = geometry.direction_matrix
    orientation = "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))
    for k in range(array.shape[0]):
        image_slice = volume[:, :, k]
        position = volume.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in [("0008|0060", "CT"), ("0020|000d", "1.2.3"), ("0020|000e", "1.2.3.4"),
                           ("0020|0037", orientation), ("0020|0032", "\\".join(f"{v:.10f}" for v in position)),
                           ("0020|0013", str(k + 1)), ("0018|0050", str(geometry.spacing[2]))]:
            image_slice.SetMetaData(tag, value)
        writer.SetFileName(str(tmp_path / f"slice{k:03d}.dcm"))
        writer.Execute(image_slice)
    back = read_image(tmp_path)
    np.testing.assert_array_equal(back.array, array)
    assert back.geometry.same_grid(geometry, atol=1e-3)


# ------------------------------------------------------------------------------------- labels

def test_seg_nrrd_round_trip_keeps_layers_names_colours_terminology_and_geometry(tmp_path):
    labels = layered_labels(oblique_geometry())
    path = write_labels(labels, tmp_path / "labels.seg.nrrd")
    back = read_labels(path)
    np.testing.assert_array_equal(back.layers, labels.layers)
    assert back.geometry.same_grid(labels.geometry)
    assert [(s.name, s.label_value, s.layer) for s in back.segments] == \
        [("disc", 1, 0), ("cup", 2, 1), ("rim marker", 3, 0)]
    assert back.segments[0].color == (1.0, 0.0, 0.0) and back.segments[1].color == (0.0, 1.0, 0.25)
    assert back.segments[2].color is not None  # a default colour was assigned
    assert back.segments[0].terminology == KIDNEY_TERMINOLOGY
    assert back.segments[0].id == "Segment_1"
    np.testing.assert_array_equal(back.mask("cup"), labels.mask("cup"))
    assert (back.mask("cup") <= back.mask("disc")).all()


def test_seg_nrrd_2d_labels_stay_2d(tmp_path):
    layers = np.zeros((2, 1, 8, 9), np.uint8)
    layers[0, 0, 2:6, 2:7] = 1
    layers[1, 0, 3:5, 3:5] = 2
    labels = Labels(layers, Geometry(ndim=2), [Segment("disc", 1, 0), Segment("cup", 2, 1)])
    back = read_labels(write_labels(labels, tmp_path / "f.seg.nrrd"))
    assert back.geometry.ndim == 2
    np.testing.assert_array_equal(back.layers, layers)


def test_reads_segmentation_made_by_slicerio_in_ijk_order(tmp_path):
    """A file we did not write: slicerio's own (i, j, k) arrays with overlapping segments."""
    import slicerio

    geometry = oblique_geometry()
    nz, ny, nx = 5, 6, 7
    segmentation = slicerio.create_segmentation((nx, ny, nz), geometry.index_to_physical())
    ijk_a = np.zeros((nx, ny, nz), bool)
    ijk_a[1:5, 2:4, 1:3] = True
    ijk_b = np.zeros((nx, ny, nz), bool)
    ijk_b[2:3, 3:4, 1:2] = True  # overlaps a: slicerio puts it on layer 1
    slicerio.add_segment(segmentation, ijk_a, {"id": "a", "name": "outer", "color": [0.1, 0.2, 0.3]})
    slicerio.add_segment(segmentation, ijk_b, {"id": "b", "name": "inner"})
    slicerio.write_segmentation(str(tmp_path / "s.seg.nrrd"), segmentation)
    back = read_labels(tmp_path / "s.seg.nrrd")
    assert back.layers.shape == (2, nz, ny, nx)
    np.testing.assert_array_equal(back.mask("outer"), ijk_a.transpose(2, 1, 0))
    np.testing.assert_array_equal(back.mask("inner"), ijk_b.transpose(2, 1, 0))
    assert back.find("inner").layer == 1 and back.find("outer").color == (0.1, 0.2, 0.3)
    assert back.geometry.same_grid(geometry)
    # Physical position of one voxel agrees with slicerio's matrix.
    z, y, x = np.argwhere(back.mask("inner"))[0]
    expected = segmentation["ijkToLPS"] @ np.array([x, y, z, 1.0])
    assert np.allclose(back.geometry.index_to_physical() @ np.array([x, y, z, 1.0]), expected)


def test_slicer_segmentation_saved_as_plain_nrrd_is_recognised(tmp_path):
    labels = layered_labels(oblique_geometry())
    write_labels(labels, tmp_path / "a.seg.nrrd")
    shutil.copy(tmp_path / "a.seg.nrrd", tmp_path / "b.nrrd")
    back = read_labels(tmp_path / "b.nrrd")
    assert [s.name for s in back.segments] == ["disc", "cup", "rim marker"]


def test_seg_nrrd_geometry_matches_real_slicer(tmp_path):
    """Cross-check against Slicer's own reader (slicer-core): same voxels at the same RAS points."""
    slicer = pytest.importorskip("slicer")
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    labels = layered_labels(oblique_geometry())
    path = write_labels(labels, tmp_path / "x.seg.nrrd")
    scene = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLSegmentationNode()
    scene.AddNode(node)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("cup"))
    labelmap = segment.GetRepresentation("Binary labelmap")
    matrix = vtk.vtkMatrix4x4()
    labelmap.GetImageToWorldMatrix(matrix)
    ijk_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    extent = labelmap.GetExtent()
    array = vtk_to_numpy(labelmap.GetPointData().GetScalars()).reshape(labelmap.GetDimensions()[::-1])
    slicer_points = [ijk_to_ras @ np.array([i + extent[0], j + extent[2], k + extent[4], 1.0])
                     for k, j, i in np.argwhere(array == segment.GetLabelValue())]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    our_points = [lps_to_ras @ labels.geometry.index_to_physical() @ np.array([x, y, z, 1.0])
                  for z, y, x in np.argwhere(labels.mask("cup"))]
    assert len(slicer_points) == len(our_points) > 0
    np.testing.assert_allclose(sorted(map(tuple, slicer_points)), sorted(map(tuple, our_points)), atol=1e-4)


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_plain_labelmap_round_trip(tmp_path, ext):
    geometry = oblique_geometry()
    labelmap = np.zeros((5, 6, 7), np.uint8)
    labelmap[1:3, 2:4, 3:6] = 1
    labelmap[3, 1:5, 0:2] = 7
    labels = Labels.from_labelmap(labelmap, geometry)
    back = read_labels(write_labels(labels, tmp_path / f"lab{ext}"))
    np.testing.assert_array_equal(back.layers[0], labelmap)
    assert back.geometry.same_grid(geometry)
    assert [s.label_value for s in back.segments] == [1, 7]


def test_float_labelmap_with_integer_values_is_accepted(tmp_path):
    labelmap = np.zeros((3, 4, 5), np.float32)
    labelmap[1, 1:3, 1:4] = 2.0
    sitk.WriteImage(sitk.GetImageFromArray(labelmap), str(tmp_path / "f.nii.gz"))
    back = read_labels(tmp_path / "f.nii.gz")
    assert np.issubdtype(back.layers.dtype, np.integer) and back.find(2).label_value == 2


def test_png_labels_round_trip(tmp_path):
    labelmap = np.zeros((1, 10, 12), np.uint8)
    labelmap[0, 2:6, 3:9] = 1
    labelmap[0, 3:5, 4:6] = 2
    back = read_labels(write_labels(Labels.from_labelmap(labelmap, Geometry(ndim=2)), tmp_path / "l.png"))
    np.testing.assert_array_equal(back.layers[0], labelmap)
    assert back.geometry.ndim == 2


def test_non_overlapping_layers_collapse_into_one_labelmap(tmp_path):
    layers = np.zeros((2, 3, 4, 5), np.uint8)
    layers[0, 0, 0, 0] = 1
    layers[1, 2, 3, 4] = 2
    labels = Labels(layers, Geometry(), [Segment("a", 1, 0), Segment("b", 2, 1)])
    back = read_labels(write_labels(labels, tmp_path / "c.nii.gz"))
    np.testing.assert_array_equal(back.layers[0], layers.sum(0))


@pytest.mark.parametrize("ext", [".nii.gz", ".png"])
def test_overlapping_layers_into_single_labelmap_format_is_a_clear_error(tmp_path, ext):
    layers = np.zeros((2, 1, 8, 9), np.uint8)
    layers[0, 0, 2:6, 2:7] = 1
    layers[1, 0, 3:5, 3:5] = 2
    labels = Labels(layers, Geometry(ndim=2), [Segment("disc", 1, 0), Segment("cup", 2, 1)])
    with pytest.raises(InputError, match=r"'disc' and 'cup' overlap.*seg\.nrrd"):
        write_labels(labels, tmp_path / f"x{ext}")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ atomic writes / overwrite

def _only_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("interrupt", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_atomic_write_failure_leaves_no_partial_file_and_original_untouched(tmp_path, interrupt):
    target = tmp_path / "result.nii.gz"
    target.write_bytes(b"original")
    with pytest.raises(type(interrupt)):
        with atomic_write(target, overwrite=True) as temporary:
            temporary.write_bytes(b"half of the new fi")
            raise interrupt
    assert target.read_bytes() == b"original"
    assert _only_files(tmp_path) == ["result.nii.gz"]


def test_writer_crash_mid_write_leaves_nothing(tmp_path, monkeypatch):
    def crashing_write(image, name, useCompression=False):
        Path(name).write_bytes(b"partial")
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(sitk, "WriteImage", crashing_write)
    with pytest.raises(RuntimeError, match="simulated"):
        write_image(Image(np.zeros((2, 3, 4), np.int16)), tmp_path / "new.nrrd")
    assert _only_files(tmp_path) == []


def test_atomic_write_success_keeps_extension_for_format_detection(tmp_path):
    with atomic_write(tmp_path / "a.seg.nrrd") as temporary:
        assert temporary.name.endswith(".seg.nrrd") and temporary.parent == tmp_path
        temporary.write_text("x", encoding="utf-8")
    assert _only_files(tmp_path) == ["a.seg.nrrd"]


@pytest.mark.parametrize("kind", ["image", "labels"])
def test_refuses_to_overwrite_without_permission(tmp_path, kind):
    image = Image(np.zeros((2, 3, 4), np.int16))
    labels = Labels.from_labelmap(np.ones((2, 3, 4), np.uint8), Geometry())
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"precious")
    write = (lambda **kw: write_image(image, target, **kw)) if kind == "image" else \
        (lambda **kw: write_labels(labels, target, **kw))
    with pytest.raises(InputError, match=r"out\.nii\.gz.*exists"):
        write()
    assert target.read_bytes() == b"precious"
    write(overwrite=True)
    assert target.read_bytes() != b"precious" and _only_files(tmp_path) == ["out.nii.gz"]


def test_unknown_output_extension(tmp_path):
    with pytest.raises(InputError, match="cannot write"):
        write_image(Image(np.zeros((1, 2, 2), np.uint8)), tmp_path / "x.xyz")


# -------------------------------------------------------------------------------------- errors

def _one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert "\n" not in message and str(path) in message


def test_missing_file(tmp_path):
    for reader in (read_image, read_labels):
        with pytest.raises(InputError, match="not found") as error:
            reader(tmp_path / "nope.nii.gz")
        _one_line_naming(error, tmp_path / "nope.nii.gz")


@pytest.mark.parametrize("name", ["bad.nii.gz", "bad.nrrd", "bad.png", "bad.seg.nrrd", "bad.mha"])
def test_corrupt_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00garbage, not an image" * 10)
    reader = read_labels if name.endswith(".seg.nrrd") else read_image
    with pytest.raises(InputError, match="cannot read") as error:
        reader(path)
    _one_line_naming(error, path)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".mha", ".seg.nrrd"])
def test_truncated_file_is_refused_not_zero_filled(tmp_path, ext):
    """ITK silently zero-fills truncated NIfTI files; an interrupted download must not become data."""
    array = np.random.default_rng(0).integers(1, 5, size=(8, 16, 16)).astype(np.uint8)
    if ext == ".seg.nrrd":
        path, reader = write_labels(Labels.from_labelmap(array, Geometry()), tmp_path / f"t{ext}"), read_labels
    else:
        path, reader = write_image(Image(array), tmp_path / f"t{ext}"), read_image
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match="truncated|cannot read") as error:
        reader(path)
    _one_line_naming(error, path)


def test_multi_member_gzip_nifti_is_still_read(tmp_path):
    """The fast trailer check must not reject valid files written as several gzip members."""
    import gzip

    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    write_image(Image(array), tmp_path / "a.nii")
    raw = (tmp_path / "a.nii").read_bytes()
    (tmp_path / "b.nii.gz").write_bytes(gzip.compress(raw[:300]) + gzip.compress(raw[300:]))
    np.testing.assert_array_equal(read_image(tmp_path / "b.nii.gz").array, array)


def test_4d_image_is_refused(tmp_path):
    path = tmp_path / "four.nii.gz"
    volumes = [sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))] * 2
    sitk.WriteImage(sitk.JoinSeries(volumes), str(path))
    with pytest.raises(InputError, match="4D") as error:
        read_image(path)
    _one_line_naming(error, path)


def test_nan_intensities_are_refused(tmp_path):
    array = np.zeros((3, 4, 5), np.float32)
    array[1, 2, 3] = np.nan
    path = tmp_path / "nan.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(InputError, match="NaN") as error:
        read_image(path)
    _one_line_naming(error, path)


def test_intensity_image_is_not_accepted_as_labels(tmp_path):
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 4, 5), 0.5, np.float32)), str(path))
    with pytest.raises(InputError, match="non-integer"):
        read_labels(path)
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 4, 5), -1000, np.int16)), str(path))
    with pytest.raises(InputError, match="negative"):
        read_labels(path)


def test_other_reading_errors(tmp_path):
    with pytest.raises(InputError, match="no DICOM series"):
        read_image(tmp_path)
    write_labels(Labels.from_labelmap(np.ones((1, 2, 2), np.uint8), Geometry()), tmp_path / "s.seg.nrrd")
    with pytest.raises(InputError, match="read_labels"):
        read_image(tmp_path / "s.seg.nrrd")
    write_image(Image(np.zeros((1, 4, 4, 3), np.uint8), Geometry(ndim=2)), tmp_path / "c.jpg")
    with pytest.raises(InputError, match="lossy"):
        read_labels(tmp_path / "c.jpg")


# ---------------------------------------------------------------------------------- resampling

def test_resample_labels_onto_finer_oblique_grid():
    coarse = oblique_geometry()
    layers = np.random.default_rng(5).integers(0, 3, (2, 3, 4, 5)).astype(np.uint8)
    labels = Labels(layers, coarse, [Segment("a", 1, 0), Segment("b", 2, 1)])
    # Half the spacing, origin shifted by a quarter voxel: every fine voxel has one unambiguous nearest.
    spacing = np.array(coarse.spacing)
    origin = np.array(coarse.origin) - coarse.direction_matrix @ (spacing / 4)
    fine = Geometry(tuple(spacing / 2), tuple(origin), coarse.direction)
    result = resample_labels_to(labels, fine, (6, 8, 10))
    expected = layers.repeat(2, axis=1).repeat(2, axis=2).repeat(2, axis=3)
    np.testing.assert_array_equal(result.layers, expected)
    assert result.geometry == fine and [s.name for s in result.segments] == ["a", "b"]


def test_resample_same_grid_is_identity_copy():
    labels = Labels.from_labelmap(np.eye(4, dtype=np.uint8)[None], Geometry())
    result = resample_labels_to(labels, Geometry(), (1, 4, 4))
    np.testing.assert_array_equal(result.layers, labels.layers)
    assert result.layers is not labels.layers


def test_resample_to_disjoint_grid_is_an_error():
    labels = Labels.from_labelmap(np.ones((3, 4, 5), np.uint8), Geometry(), source="ref.seg.nrrd")
    far = Geometry(origin=(500.0, 0.0, 0.0))
    with pytest.raises(InputError, match=r"ref\.seg\.nrrd.*overlap"):
        resample_labels_to(labels, far, (3, 4, 5))


def test_file_extension_handles_compound_suffixes():
    assert io.file_extension("a/b.SEG.NRRD") == ".seg.nrrd"
    assert io.file_extension("x.nii.gz") == ".nii.gz"
    assert io.file_extension("x.nrrd") == ".nrrd"


def test_reading_dicom_keeps_the_process_locale(tmp_path):
    """GDCM sets the locale to "C"; afterwards text files must still default to the caller's encoding."""
    import locale

    import SimpleITK as sitk

    before = locale.setlocale(locale.LC_ALL)
    image = sitk.GetImageFromArray(np.arange(2 * 4 * 5, dtype=np.int16).reshape(2, 4, 5))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(2):
        slice_image = image[:, :, k]
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0020|0032", f"0\\0\\{k}")
        slice_image.SetMetaData("0020|000e", "1.2.3.4")
        writer.SetFileName(str(tmp_path / f"s{k}.dcm"))
        writer.Execute(slice_image)
    read_image(tmp_path)
    assert locale.setlocale(locale.LC_ALL) == before
