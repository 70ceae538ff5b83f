"""Propagate mode's shape interpolation between two labelled slices (infer/between.py): the interpolated outline
follows a structure that moves, the blend weight falls with the gap, absent slices and a zero weight leave the
model alone."""

from __future__ import annotations

import numpy as np

from KnowledgeSAMLib.data.volume import Geometry
from KnowledgeSAMLib.infer.between import _Outline, blend_between_labelled, interpolated_shape
from KnowledgeSAMLib.infer.slicing import axis_view

SHAPE = (9, 40, 48)


def disc(centre, radius=6.0, shape=SHAPE[1:]):
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def view():
    return axis_view(SHAPE, Geometry(spacing=(1.0, 1.0, 2.0)), "axial")


def test_the_interpolated_outline_moves_with_the_structure_and_keeps_its_size():
    spacing = (1.0, 1.0)
    low, high = _Outline(disc((12, 12)), spacing), _Outline(disc((24, 32)), spacing)
    middle = interpolated_shape(low, high, 0.5) > 0.5
    expected = disc((18, 22))
    assert 2 * (middle & expected).sum() / (middle.sum() + expected.sum()) > 0.95
    same = interpolated_shape(low, low, 0.3) > 0.5
    np.testing.assert_array_equal(same, disc((12, 12)))


def test_blending_fills_what_the_model_missed_between_close_slices_and_less_across_wide_gaps():
    v = view()
    drawn = {0: disc((15, 20)), 8: disc((15, 20))}
    close = {0: drawn[0], 2: disc((15, 20))}
    probs = np.zeros(SHAPE, np.uint8)  # the model found nothing anywhere
    assert blend_between_labelled(probs, close, v, weight=8.0) == 1
    assert abs(int(v.get(probs, 1)[15, 20]) - 255 * 8 / 10) < 2  # share 8 / (8 + 2), deep inside the outline
    assert not v.get(probs, 5).any()  # outside the labelled pair: untouched
    wide = np.zeros(SHAPE, np.uint8)
    assert blend_between_labelled(wide, drawn, v, weight=8.0) == 7
    assert abs(int(v.get(wide, 4)[15, 20]) - 255 * 8 / 16) < 2
    assert not v.get(wide, 4)[0, 0]  # far outside the outline stays 0


def test_a_zero_weight_an_absent_slice_and_slices_not_requested_leave_the_model_alone():
    v = view()
    drawn = {1: disc((15, 20)), 6: disc((16, 22))}
    model = np.random.default_rng(0).integers(0, 256, SHAPE).astype(np.uint8)
    for kwargs in ({"weight": 0.0}, {"weight": 8.0, "absent": [4]}, {"weight": 8.0, "slices": [0, 7, 8]}):
        probs = model.copy()
        assert blend_between_labelled(probs, drawn, v, **kwargs) == 0
        np.testing.assert_array_equal(probs, model)
    probs = model.copy()
    assert blend_between_labelled(probs, drawn, v, weight=8.0, slices=[3]) == 1
    changed = [k for k in range(SHAPE[0]) if not np.array_equal(v.get(probs, k), v.get(model, k))]
    assert changed == [3]


def test_the_engine_blends_only_between_a_structures_labelled_slices_in_propagate_mode():
    from KnowledgeSAMLib.data.volume import Labels
    from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, segment

    from test_infer_fakes import ThresholdModel, blob_volume

    image, labels = blob_volume(shape=(16, 40, 48))
    layers = np.zeros_like(labels.layers)
    layers[:, [4, 10]] = labels.layers[:, [4, 10]]
    drawn = Labels(layers, labels.geometry, labels.segments, labels.source)

    def run(weight):
        request = SegmentRequest(image, image, drawn, mode="propagate", batch_size=4, keep_probabilities=True,
                                 options=EngineOptions(between_weight=weight))
        return segment(request, ThresholdModel(64)).probabilities

    alone, blended = run(0.0), run(4.0)
    for name in ("bright", "dim"):
        changed = [k for k in range(16) if not np.array_equal(alone[name][k], blended[name][k])]
        assert changed and set(changed) <= set(range(5, 10)), (name, changed)
