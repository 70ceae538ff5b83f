"""Phantoms: anatomy as designed (nested/adjacent), deterministic per seed, varied across seeds (their speed:
bench/data_speed.py)."""

from __future__ import annotations

import numpy as np
import pytest

from KnowledgeSAMLib.data.phantoms import make_fundus_phantom, make_kidney_phantom
from KnowledgeSAMLib.data.phantoms.kidney import kidney_phantom_case

ARTERY, MEDULLA, CORTEX = 1, 2, 3
KIDNEY_SEEDS = range(6)


@pytest.fixture(scope="module")
def kidney_cases():
    return {seed: kidney_phantom_case(seed) for seed in KIDNEY_SEEDS}


def neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels with at least one 6-neighbour in ``mask`` (excluding the mask itself)."""
    out = np.zeros_like(mask)
    for axis in range(3):
        for shift in (1, -1):
            out |= np.roll(mask, shift, axis=axis)
    return out & ~mask


def interior(mask: np.ndarray) -> np.ndarray:
    """Voxels whose in-plane 4-neighbours are all in the mask (away from partial-volume edges)."""
    out = mask.copy()
    for axis in (1, 2):
        for shift in (1, -1):
            out &= np.roll(mask, shift, axis=axis)
    return out


# ------------------------------------------------------------------------------------------ kidney

def test_kidney_phantom_format(kidney_cases):
    image, labels = kidney_cases[0].image, kidney_cases[0].labels
    assert image.array.shape == (40, 128, 128) and image.array.dtype == np.int16
    assert image.geometry.spacing == (1.5, 1.5, 3.0) and image.geometry.ndim == 3
    assert labels.layers.shape == (1, 40, 128, 128) and labels.geometry == image.geometry
    assert [(s.name, s.label_value, s.layer) for s in labels.segments] == \
        [("artery", 1, 0), ("medulla", 2, 0), ("cortex", 3, 0)]
    assert all(s.color is not None for s in labels.segments)
    assert -1024 <= image.array.min() and image.array.max() <= 3071


def test_kidney_phantom_is_deterministic_and_varies_with_seed(kidney_cases):
    again_image, again_labels = make_kidney_phantom(3)
    np.testing.assert_array_equal(again_image.array, kidney_cases[3].image.array)
    np.testing.assert_array_equal(again_labels.layers, kidney_cases[3].labels.layers)
    volumes = [c.labels.layers[0] for c in kidney_cases.values()]
    for i in range(len(volumes)):
        for j in range(i + 1, len(volumes)):
            overlap = np.logical_and(volumes[i] > 0, volumes[j] > 0).sum()
            union = np.logical_or(volumes[i] > 0, volumes[j] > 0).sum()
            assert overlap / union < 0.8  # different pose/size, not the same kidney again
    artery_hu = [c.tissue_hu["artery"] for c in kidney_cases.values()]
    assert np.ptp(artery_hu) > 20  # the contrast phase varies


@pytest.mark.parametrize("seed", KIDNEY_SEEDS)
def test_kidney_structures_present_and_intensities_ordered(kidney_cases, seed):
    case = kidney_cases[seed]
    hu, labels = case.image.array.astype(float), case.labels.layers[0]
    means = {}
    for name, value in (("artery", ARTERY), ("medulla", MEDULLA), ("cortex", CORTEX)):
        core = interior(labels == value)
        assert core.sum() > 5, f"seed {seed}: {name} has no interior voxels"
        means[name] = hu[core].mean()
    assert means["artery"] > means["cortex"] + 40 > means["medulla"] + 40, (seed, means)
    t = case.tissue_hu
    assert t["artery"] > t["cortex"] > t["medulla"] + 40


@pytest.mark.parametrize("seed", KIDNEY_SEEDS)
def test_kidney_cortex_wraps_medulla_and_artery_enters_the_kidney(kidney_cases, seed):
    labels = kidney_cases[seed].labels.layers[0]
    medulla, cortex, artery = labels == MEDULLA, labels == CORTEX, labels == ARTERY
    # Medulla and cortex are adjacent: most of the medulla's surface touches cortex.
    medulla_surface = medulla & neighbours(~medulla)
    touching_cortex = medulla_surface & neighbours(cortex)
    assert touching_cortex.sum() > 0.5 * medulla_surface.sum()
    # Cortex is the outer shell: the lateral edge of each kidney, row by row, is cortex, not medulla.
    kidney = medulla | cortex
    edge_labels = []
    for z, y in zip(*np.nonzero(kidney.any(axis=2))):
        xs = np.nonzero(kidney[z, y])[0]
        left, right = xs[xs < 64], xs[xs >= 64]
        if left.size:
            edge_labels.append(labels[z, y, left.min()])
        if right.size:
            edge_labels.append(labels[z, y, right.max()])
    edge_labels = np.array(edge_labels)
    assert (edge_labels == CORTEX).mean() > 0.9
    # The renal artery reaches the kidney (it runs into the sinus and the columns).
    assert (artery & neighbours(kidney)).sum() > 0
    # Both kidneys are labelled.
    assert kidney[:, :, :64].sum() > 200 and kidney[:, :, 64:].sum() > 200


def test_some_kidney_phantoms_are_damaged():
    damages = [kidney_phantom_case(seed, shape=(12, 48, 48)).damage for seed in range(12, 30)]
    assert any(d is not None for d in damages) and any(d is None for d in damages)


def test_kidney_phantom_other_shapes():
    image, labels = make_kidney_phantom(1, shape=(24, 96, 80), spacing=(2.0, 2.0, 4.0))
    assert image.array.shape == (24, 96, 80) and labels.shape == (24, 96, 80)
    assert {1, 2, 3} <= set(np.unique(labels.layers).tolist())
    with pytest.raises(ValueError):
        make_kidney_phantom(0, shape=(10, 8, 8))


# ------------------------------------------------------------------------------------------ fundus

FUNDUS_SEEDS = range(8)


@pytest.fixture(scope="module")
def fundus_cases():
    return {seed: make_fundus_phantom(seed) for seed in FUNDUS_SEEDS}


def test_fundus_format(fundus_cases):
    image, labels = fundus_cases[0]
    assert image.array.shape == (1, 256, 256, 3) and image.array.dtype == np.uint8 and image.is_rgb
    assert image.geometry.ndim == 2 and labels.geometry.ndim == 2
    assert labels.layers.shape == (2, 1, 256, 256)
    assert [(s.name, s.label_value, s.layer) for s in labels.segments] == [("disc", 1, 0), ("cup", 2, 1)]
    assert make_fundus_phantom(0, size=96)[0].array.shape == (1, 96, 96, 3)


@pytest.mark.parametrize("seed", FUNDUS_SEEDS)
def test_fundus_disc_contains_cup_with_plausible_ratio(fundus_cases, seed):
    image, labels = fundus_cases[seed]
    disc, cup = labels.mask("disc")[0], labels.mask("cup")[0]
    assert cup.any() and not (cup & ~disc).any()
    rows = np.nonzero(disc)[0]
    cup_rows = np.nonzero(cup)[0]
    ratio = np.ptp(cup_rows) / np.ptp(rows)
    assert 0.25 < ratio < 0.85
    centre = np.array([rows.mean(), np.nonzero(disc)[1].mean()]) / 256
    assert np.all(np.abs(centre - 0.5) < 0.17)
    # Appearance: disc brighter than the background, cup paler (more green/blue) than the rim.
    rgb = image.array[0].astype(float)
    assert rgb[disc].mean() > rgb[~disc].mean() + 20
    rim = disc & ~cup
    assert rgb[cup][:, 1:].mean() > rgb[rim][:, 1:].mean()


def test_fundus_deterministic_and_varied(fundus_cases):
    again = make_fundus_phantom(5)
    np.testing.assert_array_equal(again[0].array, fundus_cases[5][0].array)
    np.testing.assert_array_equal(again[1].layers, fundus_cases[5][1].layers)
    discs = [c[1].mask("disc")[0] for c in fundus_cases.values()]
    areas = [d.sum() for d in discs]
    assert np.ptp(areas) > 0.3 * np.mean(areas)
    assert not np.array_equal(fundus_cases[0][0].array, fundus_cases[1][0].array)


# ------------------------------------------------------------------------------------- kidney anatomy, phases

ORGANS = ("kidney_right", "kidney_left", "liver", "spleen", "aorta", "inferior_vena_cava", "vertebra", "bowel")


@pytest.fixture(scope="module")
def anatomy_case():
    return make_kidney_phantom(11, shape=(24, 96, 96), anatomy=True)


def test_anatomy_labels_leave_the_default_phantom_unchanged(anatomy_case):
    """The organ layer is opt-in and draws no random numbers: image and kidney labels are those of the plain
    phantom (every cache and number built on the default phantoms stays valid)."""
    image, labels = anatomy_case
    plain_image, plain_labels = make_kidney_phantom(11, shape=(24, 96, 96))
    assert np.array_equal(image.array, plain_image.array)
    assert np.array_equal(labels.layers[0], plain_labels.layers[0])
    assert [s.name for s in labels.segments] == ["artery", "medulla", "cortex", *ORGANS]
    assert all(s.layer == 1 for s in labels.segments[3:])
    again_image, again_labels = make_kidney_phantom(11, shape=(24, 96, 96), anatomy=True)
    assert np.array_equal(again_labels.layers, labels.layers)


def test_anatomy_organs_sit_where_they_belong(anatomy_case):
    image, labels = anatomy_case
    x = image.geometry.index_to_physical()  # LPS: +x = patient left, +y = posterior
    zz, yy, xx = np.indices(image.shape)

    def centre(name: str) -> np.ndarray:
        idx = np.flatnonzero(labels.mask(name))
        points = np.stack([xx.ravel()[idx], yy.ravel()[idx], zz.ravel()[idx], np.ones(idx.size)])
        return (x @ points)[:3].mean(axis=1)

    for name in ORGANS:
        assert labels.mask(name).sum() > 50, f"{name} is drawn"
    assert centre("kidney_right")[0] < 0 < centre("kidney_left")[0]
    assert centre("liver")[0] < 0 < centre("spleen")[0]
    assert abs(centre("vertebra")[0]) < 15 and centre("vertebra")[1] > centre("aorta")[1]
    kidney = labels.mask("kidney_right") | labels.mask("kidney_left")
    inner = labels.mask("medulla") | labels.mask("cortex")
    assert (inner & kidney).sum() / inner.sum() > 0.99, "cortex and medulla lie inside the whole-kidney labels"
    assert not (labels.mask("kidney_right") & labels.mask("kidney_left")).any()
    hu = image.array
    assert np.median(hu[labels.mask("vertebra")]) > np.median(hu[labels.mask("liver")])


@pytest.mark.parametrize("phase", ["non-contrast", "portal"])
def test_other_phases_drop_the_kidney_insides(phase):
    """Outside the corticomedullary phase cortex and medulla look alike, so only the organs are labelled. The
    phase draws from its own random stream: the anatomy is the corticomedullary case's, voxel for voxel."""
    image, labels = make_kidney_phantom(12, shape=(24, 96, 96), anatomy=True, phase=phase)
    assert [s.name for s in labels.segments] == list(ORGANS)
    assert not labels.layers[0].any()
    cm_image, cm_labels = make_kidney_phantom(12, shape=(24, 96, 96), anatomy=True)
    assert np.array_equal(labels.layers[1], cm_labels.layers[1])
    cortex, medulla = interior(cm_labels.mask("cortex")), interior(cm_labels.mask("medulla"))

    def gap(hu: np.ndarray) -> float:
        return float(np.median(hu[cortex]) - np.median(hu[medulla]))

    assert gap(cm_image.array) > 40 and abs(gap(image.array)) < 20


def test_random_phase_is_fixed_per_seed_and_varies():
    from KnowledgeSAMLib.data.phantoms.kidney_anatomy import phase_of

    phases = [phase_of(seed, "random") for seed in range(30)]
    assert phases == [phase_of(seed, "random") for seed in range(30)]
    assert set(phases) == {"corticomedullary", "non-contrast", "portal"}
    with pytest.raises(ValueError, match="phase must be one of"):
        make_kidney_phantom(0, shape=(8, 32, 32), phase="venous")
    for phase in ("portal", "random"):  # nothing would be labelled (in some "random" cases): refused, not empty
        with pytest.raises(ValueError, match="needs anatomy=True"):
            make_kidney_phantom(0, shape=(8, 32, 32), phase=phase)
