"""Bad input refused by the engine before any compute, with one line naming the file and the problem."""

from __future__ import annotations

import numpy as np
import pytest

from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.infer import SegmentRequest, segment

from test_infer_fakes import ThresholdModel, blob_volume, dice


@pytest.fixture()
def model():
    return ThresholdModel(image_size=32)


@pytest.fixture()
def volume():
    return blob_volume(shape=(8, 24, 28), source="ct.nrrd")


def _refused(request, model, *fragments):
    with pytest.raises(InputError) as info:
        segment(request, model)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert model.encoded_images == 0  # refused before any compute
    return message


def test_nan_intensities(volume, model):
    image, labels = volume
    bad = Image(image.array.astype(np.float32), image.geometry, source="nan.nii.gz")
    bad.array[3, 5, 5] = np.nan
    _refused(SegmentRequest(bad, bad, labels), model, "nan.nii.gz", "NaN")


def test_2d_target_with_3d_reference(volume, model):
    image, labels = volume
    flat = Image(image.array[:1], Geometry(ndim=2), source="photo.png")
    _refused(SegmentRequest(flat, image, labels), model, "photo.png", "2D", "3D")


def test_unknown_segment_and_label_value(volume, model):
    image, labels = volume
    _refused(SegmentRequest(image, image, labels, segments=[Segment("liver", 7)]), model,
             "blob0.seg.nrrd", "'liver'", "bright=1")


def test_empty_reference_mask(volume, model):
    image, labels = volume
    declared = Labels(labels.layers, labels.geometry, labels.segments + [Segment("ghost", 9)], source="ref.seg.nrrd")
    _refused(SegmentRequest(image, image, declared, segments=[Segment("ghost", 9)]), model, "ref.seg.nrrd",
             "'ghost'", "empty")


def test_empty_on_the_chosen_reference_slice(volume, model):
    image, labels = volume
    _refused(SegmentRequest(image, image, labels, reference_slices=[0]), model, "empty", "slice(s) 0")


def test_reference_slice_outside_the_volume(volume, model):
    image, labels = volume
    _refused(SegmentRequest(image, image, labels, reference_slices=[40]), model, "ct.nrrd", "slice 40")


def test_slice_range_outside_the_volume(volume, model):
    image, labels = volume
    _refused(SegmentRequest(image, image, labels, slice_range=(2, 30)), model, "ct.nrrd", "2..30")


def test_labels_that_do_not_overlap_the_reference(volume, model):
    image, labels = volume
    far = Geometry(spacing=labels.geometry.spacing, origin=(5000.0, 0.0, 0.0))
    moved = Labels(labels.layers, far, labels.segments, source="elsewhere.seg.nrrd")
    _refused(SegmentRequest(image, image, moved), model, "elsewhere.seg.nrrd", "overlap")


def test_labels_on_another_overlapping_grid_are_resampled(volume, model):
    """Labels drawn on a finer grid covering the same space are resampled (nearest) as Slicer does."""
    image, labels = volume
    geo = image.geometry
    fine_spacing = (geo.spacing[0] / 2, geo.spacing[1] / 2, geo.spacing[2])
    fine_origin = tuple(o - s / 4 for o, s in zip(geo.origin[:2], geo.spacing[:2])) + (geo.origin[2],)
    fine = np.repeat(np.repeat(labels.layers, 2, axis=2), 2, axis=3)
    fine_labels = Labels(fine, Geometry(fine_spacing, fine_origin, geo.direction), labels.segments, source="fine.seg.nrrd")
    result = segment(SegmentRequest(image, image, fine_labels, reference_slices=[4]), model)
    assert dice(result.labels.mask("bright"), labels.mask("bright")) > 0.9


def test_unknown_axis_mode_device_and_batch(volume, model):
    image, labels = volume
    _refused(SegmentRequest(image, image, labels, axis="oblique"), model, "axis")
    _refused(SegmentRequest(image, image, labels, mode="magic"), model, "mode")
    _refused(SegmentRequest(image, image, labels, device="tpu"), model, "device")
    _refused(SegmentRequest(image, image, labels, batch_size=0), model, "batch size")


def test_2d_image_only_has_an_axial_plane(model):
    rgb = Image(np.zeros((1, 16, 16, 3), np.uint8), Geometry(ndim=2), source="eye.png")
    labels = Labels(np.ones((1, 1, 16, 16), np.uint8), Geometry(ndim=2), [Segment("disc", 1)])
    _refused(SegmentRequest(rgb, rgb, labels, axis="coronal"), model, "eye.png", "2D")


def test_wrong_types_are_refused(volume, model):
    image, labels = volume
    _refused(SegmentRequest(image.array, image, labels), model, "Image")


def test_every_mode_a_front_end_offers_has_a_runner():
    """choices.MODES (what the CLI and Slicer offer) and modes.RUNNERS (what the engine runs) agree."""
    from KnowledgeSAMLib import choices
    from KnowledgeSAMLib.infer.modes import RUNNERS

    assert choices.MODES[0] == choices.DEFAULT_MODE == "auto"  # auto picks one of the runners
    assert list(choices.MODES[1:]) == list(RUNNERS)
