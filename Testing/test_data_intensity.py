"""Intensity presets: explicit windows, per-volume statistics, identical application, serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from KnowledgeSAMLib.data.intensity import IntensityMapping, IntensityPreset, PRESETS, get_preset
from KnowledgeSAMLib.data.volume import Geometry, Image
from KnowledgeSAMLib.errors import InputError


def test_ct_abdomen_is_the_default_window_w400_l40():
    mapping = get_preset("ct-abdomen").fit(Image(np.zeros((1, 2, 2), np.int16)))
    assert (mapping.kind, mapping.low, mapping.high) == ("ct", -160.0, 240.0)
    assert get_preset("ct") == get_preset("ct-abdomen")
    out = mapping.apply(np.array([[-1000, -160], [40, 3000]], np.int16))
    assert out.dtype == np.float32 and out.shape == (2, 2, 3)
    np.testing.assert_allclose(out[..., 0], [[0.0, 0.0], [0.5, 1.0]])
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


@pytest.mark.parametrize("name", ["ct-soft", "ct-bone", "ct-lung", "ct-brain", "ct-liver", "ct-angio"])
def test_named_ct_presets_are_windows(name):
    preset = get_preset(name)
    mapping = preset.fit(np.zeros((1, 2, 2)))
    assert mapping.kind == "ct" and mapping.high - mapping.low == preset.window
    assert (mapping.low + mapping.high) / 2 == preset.level


def test_custom_windows_and_percentiles_by_name():
    assert get_preset("ct:80/35").fit(np.zeros((1, 1, 1))).low == -5.0
    assert get_preset("mr:1/99").low_percentile == 1.0
    with pytest.raises(InputError, match="unknown intensity preset"):
        get_preset("ct-nope")


def test_same_mapping_for_reference_and_target_slices():
    """The mapping is fitted once; the same HU gives the same value in any slice or volume."""
    volume = np.random.default_rng(0).normal(0, 200, (6, 32, 32))
    mapping = get_preset("mr").fit(Image(volume))
    a = mapping.apply(volume[1])
    b = mapping.apply(volume[4])
    both = mapping.apply(np.stack([volume[1], volume[4]]))  # a stack works too
    np.testing.assert_array_equal(both[0], a)
    np.testing.assert_array_equal(both[1], b)
    value = volume[1, 3, 3]
    assert mapping.apply(np.full((2, 2), value))[0, 0, 0] == a[3, 3, 0]


def test_mr_percentiles_are_per_volume_and_robust_to_outliers():
    rng = np.random.default_rng(1)
    volume = rng.normal(300, 50, (20, 40, 40)).astype(np.float32)
    volume[0, 0, :5] = 3.6e5  # a few hot voxels, as in MSD hippocampus_044
    mapping = get_preset("mr").fit(Image(volume))
    assert 100 < mapping.low < 200 and 400 < mapping.high < 500
    out = mapping.apply(volume[5])
    assert out.min() >= 0 and out.max() <= 1 and 0.4 < out.mean() < 0.6


def test_mr_statistics_read_a_bounded_subsample_of_a_large_volume(monkeypatch):
    """The percentiles of a volume larger than MR_SAMPLE_SIZE are computed on at most MR_SAMPLE_SIZE values
    (what keeps them fast: timings are in bench/data_speed.py), deterministically and still accurately."""
    from KnowledgeSAMLib.data import intensity

    block = np.random.default_rng(2).normal(100, 30, (4, 512, 512)).astype(np.float32)
    volume = np.tile(block, (2, 1, 1))  # 2 M voxels, twice the subsample
    assert volume.size > intensity.MR_SAMPLE_SIZE
    sizes = []
    percentile = np.percentile

    def counting(values, *args, **kwargs):
        sizes.append(np.asarray(values).size)
        return percentile(values, *args, **kwargs)

    monkeypatch.setattr(intensity.np, "percentile", counting)
    first = get_preset("mr").fit(Image(volume))
    assert sizes and max(sizes) <= intensity.MR_SAMPLE_SIZE, sizes
    assert first == get_preset("mr").fit(Image(volume))  # deterministic subsample
    assert abs(first.low - (100 - 2.576 * 30)) < 2 and abs(first.high - (100 + 2.576 * 30)) < 2


def test_rgb_divides_by_255():
    image = Image(np.array([[[[0, 128, 255]]]], np.uint8), Geometry(ndim=2))
    mapping = get_preset("rgb").fit(image)
    assert mapping.rgb_input
    np.testing.assert_allclose(mapping.apply(image.array[0]), [[[0.0, 128 / 255, 1.0]]], rtol=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        mapping.apply(np.zeros((4, 4)))


def test_auto_picks_rgb_ct_or_mr():
    rgb = Image(np.zeros((1, 4, 4, 3), np.uint8), Geometry(ndim=2))
    ct = Image(np.full((2, 4, 4), -1024, np.int16))
    mr = Image(np.random.default_rng(3).uniform(0, 900, (2, 4, 4)))
    assert get_preset("auto").fit(rgb).kind == "rgb"
    ct_mapping = get_preset("auto").fit(ct)
    assert (ct_mapping.kind, ct_mapping.low, ct_mapping.high) == ("ct", -160.0, 240.0)
    assert get_preset("auto").fit(mr).kind == "mr"


def test_constant_image_does_not_divide_by_zero():
    mapping = get_preset("mr").fit(Image(np.full((2, 3, 3), 7.0)))
    assert np.isfinite(mapping.apply(np.full((3, 3), 7.0))).all()


def test_serialisation_round_trip():
    for preset in PRESETS.values():
        again = IntensityPreset.from_dict(preset.to_dict())
        assert again == preset and again.name == preset.name
    mapping = get_preset("ct-bone").fit(np.zeros((1, 2, 2)))
    assert IntensityMapping.from_dict(mapping.to_dict()) == mapping
    assert get_preset(PRESETS["mr"].to_dict()) == PRESETS["mr"]


def test_invalid_presets_are_rejected():
    with pytest.raises(ValueError):
        IntensityPreset("pet")
    with pytest.raises(ValueError):
        IntensityPreset("mr", low_percentile=99, high_percentile=1)
    with pytest.raises(ValueError):
        IntensityPreset("ct", window=0)
