"""Stack alignment (where each target slice lies in the reference) and the ``aligned`` position prior."""

from __future__ import annotations

import numpy as np
import pytest

from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, segment
from KnowledgeSAMLib.infer.alignment import align_stacks, centred
from KnowledgeSAMLib.infer.reference import ReferenceCache

from test_infer_fakes import ThresholdModel, blob_volume, dice


def _descriptors(level_mm: np.ndarray, seed: int = 0) -> np.ndarray:
    """Descriptors that depend smoothly on the anatomical level only (random Fourier features)."""
    rng = np.random.default_rng(seed)
    freqs, phases = rng.uniform(0.02, 0.15, 16), rng.uniform(0, 2 * np.pi, 16)
    d = np.concatenate([np.cos(np.outer(level_mm, freqs) + phases), np.sin(np.outer(level_mm, freqs) + phases)], 1)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize("scale, shift", [(1.0, 0.0), (0.8, 12.0), (1.3, -20.0)])
def test_align_stacks_recovers_a_known_scale_and_shift(scale, shift):
    target_mm = np.arange(30) * 3.0
    reference_mm = np.arange(40) * 2.5
    level = 10.0 + 0.9 * reference_mm  # the anatomy in the reference's frame
    target_level = 10.0 + 0.9 * (scale * target_mm + shift)  # the same anatomy, seen through the map
    fit = align_stacks(_descriptors(target_level), target_mm, _descriptors(level), reference_mm)
    assert abs(fit.scale - scale) < 0.08 and abs(fit.apply(target_mm).mean() - (scale * target_mm + shift).mean()) < 3.0
    assert fit.overlap >= 15
    np.testing.assert_allclose(fit.invert(fit.apply(target_mm)), target_mm)


def test_align_stacks_handles_reversed_reference_order_and_single_slices():
    target_mm = np.arange(20) * 2.0
    reference_mm = (np.arange(20) * 2.0)[::-1].copy()  # stored head-to-feet
    fit = align_stacks(_descriptors(target_mm), target_mm, _descriptors(reference_mm), reference_mm)
    assert abs(fit.scale - 1.0) < 0.05 and abs(fit.shift) < 2.0
    one = align_stacks(_descriptors(np.array([14.0])), np.array([0.0]), _descriptors(reference_mm), reference_mm)
    assert abs(one.apply(np.array([0.0]))[0] - 14.0) < 1e-9


def test_centred_descriptors_remove_what_every_slice_shares():
    common = np.ones((5, 4))
    levels = np.eye(5, 4)
    c = centred(common * 10 + levels)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0)
    assert abs(float((c @ c.T)[0, 1])) < 0.5  # raw similarity of these rows is ≈ 1


def test_aligned_prior_segments_another_patient_and_caches_the_reference_scan():
    target, truth = blob_volume(shape=(14, 40, 48))
    reference, labels = blob_volume(shape=(18, 40, 48), seed=1, shift=(3, 2, -1))  # structures 3 slices higher
    model = ThresholdModel(image_size=32)
    cache = ReferenceCache()
    options = EngineOptions(position_prior="aligned")
    first = segment(SegmentRequest(target, reference, labels, batch_size=4, options=options), model,
                    reference_cache=cache)
    for name in ("bright", "dim"):
        assert dice(first.labels.mask(name), truth.mask(name)) > 0.8, name
    assert any("placed the reference's labelled slices" in note for note in first.provenance["notes"])
    # every reference slice was encoded once for the alignment; a second target re-uses them all
    assert first.provenance["counts"]["reference_slices_encoded"] == reference.shape[0]
    second = segment(SegmentRequest(blob_volume(shape=(12, 40, 48), seed=4)[0], reference, labels, batch_size=4,
                                    options=options), model, reference_cache=cache)
    assert second.provenance["counts"]["reference_slices_encoded"] == 0


def test_unknown_position_prior_is_refused():
    with pytest.raises(ValueError, match="aligned"):
        EngineOptions(position_prior="atlas")
