"""Axis views: exact slice extraction/insertion, the physical plane for any direction matrix, and
geometry round trips through the engine for all three axes (fake model, CPU, fast)."""

from __future__ import annotations

import numpy as np
import pytest

from KnowledgeSAMLib.data.volume import Geometry
from KnowledgeSAMLib.infer import SegmentRequest, segment
from KnowledgeSAMLib.infer.slicing import axis_view

from test_infer_fakes import ThresholdModel, blob_volume, dice

AXES = ("axial", "coronal", "sagittal")


def _rotation(a: float) -> np.ndarray:
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


DIRECTIONS = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, -1.0, 1.0]),  # e.g. a RAS-stored file read into LPS
    "sagittal-acquired": np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], dtype=float),  # index z runs left-right
    "oblique": _rotation(0.35) @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=float),
}


def geometry(name: str) -> Geometry:
    return Geometry(spacing=(0.9, 0.8, 2.0), origin=(12.0, -30.0, 7.5), direction=DIRECTIONS[name].ravel())


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_get_and_put_are_exact_inverses(axis, direction):
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 1000, size=(5, 6, 7)).astype(np.int16)
    view = axis_view(volume.shape, geometry(direction), axis)
    rebuilt = np.zeros_like(volume)
    for k in range(view.n):
        plane = view.get(volume, k)
        assert plane.shape == view.slice_shape
        view.put(rebuilt, k, plane)
    np.testing.assert_array_equal(rebuilt, volume)
    rgb = rng.integers(0, 255, size=(5, 6, 7, 3)).astype(np.uint8)
    assert view.get(rgb, 0).shape == view.slice_shape + (3,)


def test_axial_means_the_physical_axial_plane():
    geo = geometry("sagittal-acquired")  # physical S-I is along index y (numpy axis 1)
    assert axis_view((5, 6, 7), geo, "axial").slice_axis == 1
    assert axis_view((5, 6, 7), geo, "sagittal").slice_axis == 0  # index z runs left-right
    assert axis_view((5, 6, 7), geo, "coronal").slice_axis == 2
    view = axis_view((5, 6, 7), geometry("identity"), "coronal")
    assert view.slice_axis == 1 and view.spacing_hw == (2.0, 0.9)


def _restored(volume: np.ndarray, geo: Geometry, flip_x: bool, swap_xy: bool):
    """The same physical content stored differently: flipped along x and/or with x and y swapped."""
    array, direction = volume, geo.direction_matrix.copy()
    origin = np.asarray(geo.origin, dtype=float)
    spacing = list(geo.spacing)
    if flip_x:
        origin = origin + direction[:, 0] * spacing[0] * (array.shape[2] - 1)
        array, direction[:, 0] = array[:, :, ::-1], -direction[:, 0]
    if swap_xy:
        array = array.transpose(0, 2, 1)
        direction = direction[:, [1, 0, 2]]
        spacing = [spacing[1], spacing[0], spacing[2]]
    return np.ascontiguousarray(array), Geometry(spacing, origin, direction.ravel())


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("flip_x,swap_xy", [(True, False), (False, True), (True, True)])
def test_canonical_slices_do_not_depend_on_storage(axis, flip_x, swap_xy):
    """A reference and a target stored with different direction matrices show the model the same picture."""
    volume = np.random.default_rng(1).integers(0, 1000, size=(4, 5, 6)).astype(np.int16)
    geo = geometry("identity")
    other, other_geo = _restored(volume, geo, flip_x, swap_xy)
    a, b = axis_view(volume.shape, geo, axis), axis_view(other.shape, other_geo, axis)
    assert a.n == b.n and a.slice_shape == b.slice_shape and a.spacing_hw == b.spacing_hw
    for k in range(a.n):
        k_other = int(b.ordered(int(a.ordered(k))))  # same physical position
        np.testing.assert_array_equal(a.get(volume, k), b.get(other, k_other))


@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("direction", ["identity", "sagittal-acquired", "oblique"])
def test_engine_output_is_in_exactly_the_target_geometry(axis, direction):
    geo = geometry(direction)
    image, labels = blob_volume(shape=(12, 28, 32), geometry=geo)
    view = axis_view(image.shape, geo, axis)
    truth = labels.mask("bright")
    has = view.slice_has(truth)
    middle = int(np.flatnonzero(has)[len(np.flatnonzero(has)) // 2])
    request = SegmentRequest(image, image, labels, segments=[labels.find("bright")], mode="anchor", axis=axis,
                             reference_slices=[middle], batch_size=4)
    result = segment(request, ThresholdModel(image_size=48))
    out = result.labels
    assert out.shape == image.shape and out.geometry == image.geometry
    assert result.confidence["bright"].shape == (view.n,)
    assert dice(out.mask("bright"), truth) > 0.9  # a transposition or flip would give a far lower overlap
