"""Dice and HD95 on masks whose answers can be worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from KnowledgeSAMLib.evaluation.metrics import (
    StructureScore,
    dice,
    hausdorff,
    hd95,
    mean_scores,
    score_structure,
    surface,
    surface_distances,
)


def box(shape, z, y, x) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return mask


SHAPE = (9, 20, 24)


def test_dice_of_overlapping_boxes():
    a = box(SHAPE, (2, 5), (5, 10), (5, 10))  # 75 voxels
    b = box(SHAPE, (2, 5), (5, 10), (8, 13))  # 75 voxels, overlap x in 8..9 -> 3*5*2 = 30
    assert dice(a, b) == pytest.approx(2 * 30 / 150)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0


def test_single_voxels_distance_uses_spacing():
    a = np.zeros(SHAPE, bool)
    b = np.zeros(SHAPE, bool)
    a[4, 10, 3] = True
    b[4, 10, 6] = True  # 3 voxels apart along x
    assert hd95(a, b, (1.0, 1.0, 1.0)) == pytest.approx(3.0)
    assert hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(6.0)
    b2 = np.zeros(SHAPE, bool)
    b2[6, 14, 3] = True  # dz = 2, dy = 4
    assert hd95(a, b2, (0.5, 0.7, 3.0)) == pytest.approx(math.hypot(2 * 3.0, 4 * 0.7))


@pytest.mark.parametrize("spacing, expected", [((1, 1, 1), 3.0), ((2.0, 1, 1), 6.0), ((0.5, 3.0, 4.0), 1.5)])
def test_shifted_boxes_hd95_is_the_shift(spacing, expected):
    # A's face at x=5 lies 3 voxels from B's nearest surface (its face at x=8); those 15 face voxels are
    # 15/66 of A's surface (> 5%), so the 95th percentile is exactly the shift, in millimetres along x.
    a = box(SHAPE, (2, 5), (5, 10), (5, 10))
    b = box(SHAPE, (2, 5), (5, 10), (8, 13))
    assert surface(a).sum() == 75 - 9
    assert hd95(a, b, spacing) == pytest.approx(expected)
    assert hd95(b, a, spacing) == pytest.approx(expected)  # symmetric
    assert hausdorff(a, b, spacing, percentile=100) == pytest.approx(expected)


def test_shift_along_z_uses_z_spacing():
    a = box(SHAPE, (1, 4), (5, 10), (5, 10))
    b = box(SHAPE, (3, 6), (5, 10), (5, 10))
    assert hd95(a, b, (0.8, 0.8, 2.5)) == pytest.approx(2 * 2.5)


def test_percentile_ignores_a_rare_outlier():
    a = box(SHAPE, (1, 8), (2, 18), (2, 18))
    b = a.copy()
    b[4, 10, 22] = True  # one far-away voxel: a tiny fraction of B's surface
    assert hausdorff(a, b, percentile=100) == pytest.approx(5.0)  # x=22 to A's face at x=17
    assert hd95(a, b) == 0.0


def test_directed_distances_and_max_of_directions():
    a = box(SHAPE, (2, 5), (5, 10), (5, 10))
    big = box(SHAPE, (0, 9), (0, 20), (0, 24))  # everything: its surface is the grid border
    distances = surface_distances(a, big)
    assert distances.min() == pytest.approx(2.0)  # a's z=2 face is 2 voxels from the z=0 border
    # From the border back to a, corners are far: the symmetric value is the larger direction.
    assert hd95(a, big) == pytest.approx(max(np.percentile(distances, 95),
                                             np.percentile(surface_distances(big, a), 95)))
    assert hd95(a, big) > np.percentile(distances, 95)


def test_empty_mask_conventions():
    empty = np.zeros(SHAPE, bool)
    a = box(SHAPE, (2, 5), (5, 10), (5, 10))
    assert dice(empty, empty) == 1.0
    assert hd95(empty, empty) == 0.0
    assert dice(a, empty) == 0.0 and dice(empty, a) == 0.0
    assert hd95(a, empty) == math.inf and hd95(empty, a) == math.inf
    score = score_structure("x", empty, a)
    assert score.to_json()["hd95_mm"] is None
    assert mean_scores([score, score_structure("y", a, a)])["hd95_mm"] == math.inf
    assert mean_scores([score, score_structure("y", a, a)])["dice"] == pytest.approx(0.5)


def test_2d_masks_and_single_slice_volumes_are_measured_in_plane():
    square = np.zeros((12, 12), bool)
    square[2:9, 2:9] = True
    ring = surface(square)
    assert ring.sum() == 7 * 4 - 4 and not ring[5, 5]
    # In-plane, the filled square and its outline share one surface: HD95 0 although Dice < 1.
    assert hd95(square, ring) == 0.0
    assert hd95(square[None], ring[None], (1.0, 1.0, 1.0)) == 0.0
    assert dice(square, ring) < 1.0
    shifted = np.roll(square, 2, axis=1)
    assert hd95(square[None], shifted[None], (0.5, 0.25, 9.0)) == pytest.approx(1.0)  # 2 px * 0.5 mm in x


def test_score_structure_volumes_and_shape_errors():
    a = box(SHAPE, (2, 5), (5, 10), (5, 10))
    score = score_structure("head", a, a, (0.5, 1.0, 2.0))
    assert isinstance(score, StructureScore)
    assert (score.dice, score.hd95_mm, score.truth_voxels) == (1.0, 0.0, 75)
    assert score.truth_volume_mm3 == pytest.approx(75.0)
    with pytest.raises(ValueError, match="shape"):
        dice(a, a[:, :, :-1])
    with pytest.raises(ValueError, match="2D"):
        dice(a[None], a[None])


def _brute_force_hd95(a: np.ndarray, b: np.ndarray, spacing_xyz) -> float:
    scale = np.asarray(spacing_xyz, float)[::-1][: a.ndim]
    pa, pb = np.argwhere(surface(a)) * scale, np.argwhere(surface(b)) * scale
    pairwise = np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=-1)
    return float(max(np.percentile(pairwise.min(axis=1), 95), np.percentile(pairwise.min(axis=0), 95)))


@pytest.mark.parametrize("seed", range(4))
def test_hd95_matches_a_brute_force_definition_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    shape = (10, 12, 14)
    a = rng.random(shape) < 0.15
    b = rng.random(shape) < 0.15
    a[:, :, :5] = False  # keep part of the grid empty so the joint-box crop is exercised
    b[:2] = False
    spacing = (0.7, 1.3, 2.4)
    assert hd95(a, b, spacing) == pytest.approx(_brute_force_hd95(a, b, spacing))
