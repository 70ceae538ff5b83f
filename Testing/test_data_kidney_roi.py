"""Kidney ROI phantom: a crop of the full phantom that keeps physical positions exact."""

import numpy as np

from KnowledgeSAMLib.data.phantoms import make_kidney_roi_phantom
from KnowledgeSAMLib.data.phantoms.kidney import kidney_phantom_case
from KnowledgeSAMLib.data.phantoms.kidney_roi import KidneyROIConfig, crop_volume

SMALL = KidneyROIConfig(render_shape=(12, 128, 128), render_spacing=(1.5, 1.5, 3.0), crop_xy=48, jitter_px=4)


def test_roi_contains_all_three_structures_and_is_deterministic():
    image, labels = make_kidney_roi_phantom(3, config=SMALL)
    again, _ = make_kidney_roi_phantom(3, config=SMALL)
    assert image.shape == (12, 48, 48)
    assert np.array_equal(image.array, again.array)
    present = {s.name for s in labels.segments if labels.mask(s).any()}
    assert {"medulla", "cortex"} <= present
    left, _ = make_kidney_roi_phantom(3, side=1, config=SMALL)
    right, _ = make_kidney_roi_phantom(3, side=-1, config=SMALL)
    assert left.geometry.origin[0] > right.geometry.origin[0]  # LPS +x = patient left


def test_crop_keeps_physical_positions():
    case = kidney_phantom_case(5, (8, 64, 64), (2.0, 2.0, 3.0))
    roi_image, roi_labels = crop_volume(case.image, case.labels, (2, 10, 20), (4, 30, 30))
    k, j, i = 1, 5, 7  # a voxel of the crop ...
    point = roi_image.geometry.index_to_physical() @ np.array([i, j, k, 1.0])
    original = case.image.geometry.index_to_physical() @ np.array([i + 20, j + 10, k + 2, 1.0])
    np.testing.assert_allclose(point, original)  # ... is where it was
    assert roi_image.array[k, j, i] == case.image.array[k + 2, j + 10, i + 20]
    assert roi_labels.layers[0, k, j, i] == case.labels.layers[0, k + 2, j + 10, i + 20]
