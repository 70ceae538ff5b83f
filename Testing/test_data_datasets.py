"""Real-data loaders (MSD hippocampus, PAPILA): skipped cleanly when ../shared/data is absent."""

from __future__ import annotations

import numpy as np
import pytest

from KnowledgeSAMLib.data import datasets
from KnowledgeSAMLib.errors import InputError

ROOT = datasets.shared_data_root()
needs_hippocampus = pytest.mark.skipif(not (ROOT / "msd-hippocampus" / "images").is_dir(),
                                       reason=f"MSD hippocampus data not at {ROOT}")
needs_papila = pytest.mark.skipif(not (ROOT / "papila" / "images").is_dir(), reason=f"PAPILA data not at {ROOT}")


def test_missing_data_folder_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="msd-hippocampus dataset was not found"):
        datasets.hippocampus_cases(tmp_path)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "elsewhere"))
    assert datasets.shared_data_root() == tmp_path / "elsewhere"
    with pytest.raises(InputError, match="papila dataset was not found"):
        datasets.load_papila(None, "RET087OS")


def test_hippocampus_split_and_pairs_are_fixed():
    ids = [f"hippocampus_{i:03d}" for i in range(40, 0, -1)]  # any order in, sorted out
    split = datasets.hippocampus_split(ids)
    ordered = sorted(ids)
    assert split.test == ordered[3::4] and len(split.test) == 10 and len(split.train) == 30
    assert set(split.train).isdisjoint(split.test) and set(split.train) | set(split.test) == set(ids)
    pairs = datasets.hippocampus_eval_pairs(ids)
    assert pairs == list(zip(split.test, split.train)) and pairs == datasets.hippocampus_eval_pairs(ordered)
    assert all(target != reference for target, reference in pairs)


def test_papila_split():
    split = datasets.papila_split()
    assert split.test == ["RET087OS"] and split.train == ["RET028OS", "RET065OD", "RET210OS"]
    assert datasets.papila_eval_pairs() == [("RET087OS", "RET065OD")]


def test_disc_centred_box_is_deterministic_and_jitter_moves_it():
    disc = np.zeros((100, 120), bool)
    disc[40:60, 50:70] = True  # diameter 20
    assert datasets.disc_centred_box(disc) == (20, 30, 60)
    moved = datasets.disc_centred_box(disc, jitter=0.1, rng=np.random.default_rng(0))
    assert moved != (20, 30, 60)
    with pytest.raises(InputError, match="no optic disc"):
        datasets.disc_centred_box(np.zeros((5, 5), bool))


@needs_hippocampus
def test_hippocampus_cases_load_with_head_and_body():
    ids = datasets.hippocampus_cases()
    assert len(ids) == 40 and ids == sorted(ids)
    for case in ("hippocampus_001", "hippocampus_044"):  # uint8 and a float with a huge range
        image, labels = datasets.load_hippocampus(None, case)
        assert image.array.dtype == np.float32 and image.shape == labels.shape
        assert image.geometry.same_grid(labels.geometry)
        assert [(s.name, s.label_value) for s in labels.segments] == [("head", 1), ("body", 2)]
        assert labels.mask("head").sum() > 50 and labels.mask("body").sum() > 50
    # The data folder itself is accepted too.
    assert datasets.hippocampus_cases(ROOT / "msd-hippocampus") == ids


@needs_papila
def test_papila_disc_centred_crop():
    image, labels = datasets.load_papila(None, "RET087OS", expert=1)
    side = image.shape[1]
    assert image.is_rgb and image.shape == (1, side, side) and labels.shape == (1, side, side)
    disc, cup = labels.mask("disc")[0], labels.mask("cup")[0]
    assert cup.any() and not (cup & ~disc).any()
    rows, cols = np.nonzero(disc)
    diameter = max(np.ptp(rows), np.ptp(cols)) + 1
    assert abs(side / diameter - 3.0) < 0.05
    assert abs((rows.min() + rows.max()) / 2 - side / 2) < 2 and abs((cols.min() + cols.max()) / 2 - side / 2) < 2
    # Geometry keeps the photo's pixel coordinates; the crop is deterministic without jitter.
    again, _ = datasets.load_papila(None, "RET087OS", expert=1)
    assert again.geometry == image.geometry and image.geometry.origin[0] > 0
    np.testing.assert_array_equal(again.array, image.array)
    jittered, _ = datasets.load_papila(None, "RET087OS", jitter=0.1, rng=np.random.default_rng(1))
    assert jittered.geometry.origin != image.geometry.origin
    full, full_labels = datasets.load_papila(None, "RET087OS", expert=2, crop=False)
    assert full.array.shape == (1, 1934, 2576, 3) and full_labels.layers.shape == (2, 1, 1934, 2576)
    assert datasets.papila_eyes() == ["RET028OS", "RET065OD", "RET087OS", "RET210OS"]
