"""Regions of interest: parsing and refusal, exact paste-back into the target geometry, and ``roi="auto"`` finding
an off-centre structure in a large field of view (fake model, CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.infer import SegmentRequest, segment
from KnowledgeSAMLib.infer.roi import RoiBox, parse_roi, region_crops, structure_box
from KnowledgeSAMLib.infer.slicing import axis_view

from test_infer_fakes import ThresholdModel, dice


def small_structure(shape=(10, 96, 120), centre=(70, 30), seed=0, geometry: Geometry | None = None,
                    source: str = "") -> tuple[Image, Labels]:
    """A body-sized field of view with one small bright structure off-centre (``centre`` = (row y, col x))."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    nz, ny, nx = shape
    labels = np.zeros(shape, np.uint8)
    blob = (np.abs(z - nz / 2) < nz * 0.35) & (((y - centre[0]) / 7.0) ** 2 + ((x - centre[1]) / 9.0) ** 2 < 1)
    labels[blob] = 1
    hu = np.full(shape, -900.0)
    body = ((y - ny / 2) / (ny * 0.48)) ** 2 + ((x - nx / 2) / (nx * 0.48)) ** 2 < 1
    hu[body] = -60.0
    hu[labels == 1] = 200.0
    hu += rng.normal(0, 4, shape)
    geometry = geometry or Geometry(spacing=(0.9, 0.8, 2.5), origin=(-40.0, -30.0, 0.0))
    image = Image(hu.astype(np.int16), geometry, source=source or f"fov{seed}.nrrd")
    return image, Labels(labels[None], geometry, [Segment("blob", 1, 0)], source=f"fov{seed}.seg.nrrd")


# ------------------------------------------------------------------------------------------- parsing

def test_parse_roi_forms_and_refusals():
    assert parse_roi(None) == "auto" and parse_roi("auto") == "auto" and parse_roi("none") == "none"
    box = parse_roi("30,5,2,10,40,8")
    assert box == RoiBox((10, 5, 2), (30, 40, 8))  # corners in any order
    a, b = parse_roi("ras:-10,20,30,15.5,40,60")
    assert a == (-10.0, 20.0, 30.0) and b == (15.5, 40.0, 60.0)
    for bad in ("1,2,3", "a,b,c,d,e,f", "1,2,3,4,5,6,7", "1.5,2,3,4,5,6"):
        with pytest.raises(InputError, match="--roi"):
            parse_roi(bad)


def test_a_box_off_the_image_is_refused_and_a_partial_one_clipped():
    with pytest.raises(InputError, match="does not overlap"):
        RoiBox((200, 0, 0), (300, 10, 3)).check((10, 96, 120))
    clipped = RoiBox((-5, 10, 2), (500, 20, 99)).check((10, 96, 120))
    assert clipped == RoiBox((0, 10, 2), (119, 20, 9))


def test_ras_points_become_the_voxel_box_they_span():
    geometry = Geometry(spacing=(0.9, 0.8, 2.5), origin=(-40.0, -30.0, 0.0))
    corner = lambda i, j, k: geometry.index_to_physical() @ np.array([i, j, k, 1.0])  # noqa: E731
    a, b = corner(10, 20, 2), corner(30, 50, 6)
    ras = lambda p: (-p[0], -p[1], p[2])  # noqa: E731
    assert RoiBox.from_ras(ras(a), ras(b), geometry) == RoiBox((10, 20, 2), (30, 50, 6))


def test_region_crops_separate_two_groups_and_grow_each_by_the_margin():
    image, labels = small_structure(centre=(48, 25))
    second = small_structure(centre=(48, 95))[1]
    layers = np.maximum(labels.layers, second.layers)
    view = axis_view(image.shape, image.geometry, "axial")
    plane = view.get(layers[0], 5) > 0
    crops = region_crops(plane, view)
    assert len(crops) == 2
    one = structure_box([labels.layers[0] > 0], view, margin=0.3)
    assert one in crops
    r0, r1, c0, c1 = one
    assert r1 - r0 > 14 and c1 - c0 > 18  # larger than the structure itself


# ------------------------------------------------------------------------------------- paste-back

@pytest.mark.parametrize("direction", [
    (1, 0, 0, 0, 1, 0, 0, 0, 1),
    # oblique: rotated 25 degrees about z, with index axes permuted and flipped
    tuple(np.array([[0.0, np.cos(0.44), -np.sin(0.44)], [0.0, np.sin(0.44), np.cos(0.44)], [-1.0, 0.0, 0.0]]).ravel()),
])
def test_a_box_result_lands_in_exactly_the_target_geometry_and_only_inside_the_box(direction):
    geometry = Geometry(spacing=(0.9, 0.8, 2.5), origin=(-40.0, -30.0, 10.0), direction=direction)
    image, labels = small_structure(geometry=geometry, centre=(70, 30))
    reference, ref_labels = small_structure(seed=1, centre=(60, 40))
    box = RoiBox((10, 50, 0), (60, 90, 9))
    result = segment(SegmentRequest(image, reference, ref_labels, roi=box, mode="volume", batch_size=4),
                     ThresholdModel(image_size=32))
    out = result.labels
    assert out.shape == image.shape and out.geometry == image.geometry
    predicted = out.layers[0] == 1
    inside = np.zeros(image.shape, dtype=bool)
    inside[box.as_mask_bounds()] = True
    assert predicted.any() and not (predicted & ~inside).any()
    truth = labels.layers[0] == 1
    assert dice(predicted, truth & inside) > 0.85
    assert result.provenance["roi"]["mode"] == "box" and result.provenance["roi"]["box"] == "10,50,0,60,90,9"


def test_a_box_outside_the_requested_slices_is_refused():
    image, labels = small_structure()
    reference, ref_labels = small_structure(seed=1)
    with pytest.raises(InputError, match="no slice"):
        segment(SegmentRequest(image, reference, ref_labels, roi=RoiBox((0, 0, 0), (50, 50, 2)), slice_range=(5, 9)),
                ThresholdModel(image_size=32))


def test_a_box_that_misses_is_refused_by_the_check_before_any_compute():
    """Front-ends call ``check`` before the model loads and before a progress bar appears."""
    from KnowledgeSAMLib.infer.segmenter import check

    image, labels = small_structure()
    reference, ref_labels = small_structure(seed=1)
    with pytest.raises(InputError, match="does not overlap"):
        check(SegmentRequest(image, reference, ref_labels, roi=RoiBox((900, 900, 50), (950, 950, 60))))
    with pytest.raises(InputError, match="no slice"):
        check(SegmentRequest(image, reference, ref_labels, roi=RoiBox((0, 0, 0), (50, 50, 2)), slice_range=(5, 9)))
    assert check(SegmentRequest(image, reference, ref_labels, roi=RoiBox((0, 0, 0), (50, 50, 9)))) is not None


# ------------------------------------------------------------------------------------------- auto

def test_auto_finds_an_off_centre_structure_in_another_scan_and_looks_only_there():
    image, labels = small_structure(shape=(18, 96, 120), centre=(72, 28))
    reference, ref_labels = small_structure(shape=(16, 96, 120), seed=1, centre=(30, 90))
    model = ThresholdModel(image_size=32)
    whole = segment(SegmentRequest(image, reference, ref_labels, roi="none", batch_size=4), model)
    focused = segment(SegmentRequest(image, reference, ref_labels, batch_size=4), model)
    truth = labels.layers[0] == 1
    record = focused.provenance["roi"]
    assert record["mode"] == "auto" and len(record["regions"]) == 1
    x0, y0, z0, x1, y1, z1 = record["regions"][0]["target"]
    zs, ys, xs = np.nonzero(truth)
    assert x0 <= xs.min() and xs.max() <= x1 and y0 <= ys.min() and ys.max() <= y1
    assert (x1 - x0) < 60 and (y1 - y0) < 60  # a focus, not the whole 120 x 96 slice
    assert dice(focused.labels.layers[0] == 1, truth) >= dice(whole.labels.layers[0] == 1, truth) - 0.02
    assert dice(focused.labels.layers[0] == 1, truth) > 0.85
    counts = focused.provenance["counts"]
    # coarse pass on every second slice, the scan's windows, then the region
    assert 0 < record["scan_windows"] and counts["target_slices_encoded"] <= 18 // 2 + record["scan_windows"] + 18


def test_a_focused_run_encodes_each_reference_crop_once_and_a_cached_rerun_none():
    """The window scan and the fine pass look at the same reference region: its slices are encoded once in a call
    (a cache bounded by crops, not volumes, had dropped them in between), and a second target with the same
    reference and cache encodes no reference slice at all."""
    from KnowledgeSAMLib.infer.reference import ReferenceCache

    image, _ = small_structure(shape=(18, 96, 120), centre=(72, 28))
    reference, ref_labels = small_structure(shape=(16, 96, 120), seed=1, centre=(30, 90))
    labelled = int((ref_labels.layers[0] == 1).any(axis=(1, 2)).sum())
    model = ThresholdModel(image_size=32)
    cache = ReferenceCache(max_volumes=2)
    first = segment(SegmentRequest(image, reference, ref_labels, batch_size=4), model, reference_cache=cache)
    assert first.provenance["roi"]["mode"] == "auto" and first.provenance["roi"]["scan_windows"] > 0
    # whole reference slices once (stack alignment), the region's labelled slices once (scan and fine pass)
    assert first.provenance["counts"]["reference_slices_encoded"] == reference.shape[0] + labelled
    uncached = segment(SegmentRequest(image, reference, ref_labels, batch_size=4), model)
    assert uncached.provenance["counts"]["reference_slices_encoded"] == reference.shape[0] + labelled
    second_target, _ = small_structure(shape=(18, 96, 120), centre=(70, 32), seed=2)
    second = segment(SegmentRequest(second_target, reference, ref_labels, batch_size=4), model, reference_cache=cache)
    assert second.provenance["roi"]["mode"] == "auto"
    assert second.provenance["counts"]["reference_slices_encoded"] == 0
    np.testing.assert_array_equal(uncached.labels.layers, first.labels.layers)


def test_auto_in_another_volume_takes_the_region_that_looks_like_the_reference_not_a_decoy():
    """The coarse pass finds the structure and a large decoy of the same intensity (as bone taken for kidney);
    windows at the reference's zoom, compared with the reference structure's contrast and area, pick the
    structure, and the fine pass looks only there."""
    image, labels = small_structure(shape=(14, 160, 200), centre=(120, 40))
    image.array[3:11, 20:70, 120:185] = 200  # the decoy: the structure's intensity, several times its area
    reference, ref_labels = small_structure(shape=(14, 160, 200), seed=1, centre=(40, 150))
    model = ThresholdModel(image_size=32)
    truth = labels.layers[0] == 1
    whole = segment(SegmentRequest(image, reference, ref_labels, roi="none", batch_size=4), model)
    focused = segment(SegmentRequest(image, reference, ref_labels, batch_size=4), model)
    record = focused.provenance["roi"]
    assert record["mode"] == "auto" and len(record["regions"]) == 1, record
    x0, y0, _, x1, y1, _ = record["regions"][0]["target"]
    assert x0 <= 31 and 49 <= x1 and y0 <= 113 and 127 <= y1 and x1 < 120  # the structure's window, not the decoy's
    assert dice(whole.labels.layers[0] == 1, truth) < 0.5  # whole slices segment the decoy too
    assert dice(focused.labels.layers[0] == 1, truth) > 0.85


def test_auto_on_the_same_volume_uses_the_labelled_structure_region():
    image, labels = small_structure(shape=(12, 96, 120), centre=(30, 85))
    result = segment(SegmentRequest(image, image, labels, reference_slices=[6], batch_size=4),
                     ThresholdModel(image_size=32))
    record = result.provenance["roi"]
    assert record["mode"] == "auto" and len(record["regions"]) == 1
    truth = labels.layers[0] == 1
    assert dice(result.labels.layers[0] == 1, truth) > 0.85
    np.testing.assert_array_equal(result.labels.layers[0][6] == 1, truth[6])  # the labelled slice kept as drawn


def test_roi_none_keeps_whole_slices():
    image, labels = small_structure()
    reference, ref_labels = small_structure(seed=1, centre=(40, 60))
    result = segment(SegmentRequest(image, reference, ref_labels, roi="none", batch_size=4),
                     ThresholdModel(image_size=32))
    assert result.provenance["roi"]["used"] == "whole slices"


def test_an_oversized_coarse_region_is_narrowed_to_where_every_structure_was_found():
    """The coarse pass's false positives (here a large blob of one structure, as bone labelled cortex) join the
    true structures into one region; the window of the reference's size goes where all structures are."""
    from KnowledgeSAMLib.infer.focus import _best_windows

    votes = np.zeros((3, 200, 200), dtype=np.int32)
    votes[0, 10:120, 10:120] = 5  # one structure only, found often over a large area
    votes[:, 140:170, 140:170] = 2  # every structure, where the kidney is
    windows = _best_windows(votes, (0, 200, 0, 200), (40, 40), count=1)
    assert len(windows) == 1
    r0, r1, c0, c1 = windows[0]
    assert (r1 - r0, c1 - c0) == (40, 40) and r0 <= 140 and r1 >= 170 and c0 <= 140 and c1 >= 170
    assert _best_windows(np.zeros((2, 50, 50), dtype=np.int32), (0, 50, 0, 50), (10, 10), count=2) == []


def test_a_narrowed_window_is_centred_on_what_was_found_in_it():
    """Every window holding a small blob scores the same; the first (top left) one had the blob at its edge, cut
    off for the fine pass (our whole-abdomen validation phantoms 4000-4003 at 384²: mean 0.475 -> 0.591 centred)."""
    from KnowledgeSAMLib.infer.focus import _best_windows

    votes = np.zeros((2, 200, 200), dtype=np.int32)
    votes[:, 100:120, 60:80] = 3  # the structures, 20 px, in a region the window of 60 px could hold anywhere
    votes[0, 20:90, 150:190] = 1  # a false positive of one structure joins them into one large region
    (r0, r1, c0, c1), = _best_windows(votes, (0, 200, 0, 200), (60, 60), count=1)
    assert (r0, r1, c0, c1) == (80, 140, 40, 100)  # the blob's centre (110, 70) is the window's
    edge = np.zeros((1, 100, 100), dtype=np.int32)
    edge[0, 0:10, 90:100] = 1  # at the corner of the slice: the window stays inside it
    assert _best_windows(edge, (0, 100, 0, 100), (30, 30), count=1) == [(0, 30, 70, 100)]


def test_a_crop_is_never_smaller_than_four_centimetres():
    """A tight crop around a small structure shows the model a zoom it never trained at (MSD hippocampus
    volumes fell to < 0.5 Dice in ~30 mm crops): the box around a ~14 mm structure grows to 40 mm."""
    image, labels = small_structure(shape=(10, 96, 120), centre=(40, 60))
    view = axis_view(image.shape, image.geometry, "axial")
    r0, r1, c0, c1 = structure_box([labels.layers[0] == 1], view)
    rows_mm, cols_mm = (r1 - r0) * view.spacing_hw[0], (c1 - c0) * view.spacing_hw[1]
    assert min(rows_mm, cols_mm) >= 40.0 - max(view.spacing_hw), (rows_mm, cols_mm)
