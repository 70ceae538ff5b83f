"""The annotator's loop (fake model, CPU): labelled slices kept exactly, a correction changes only its slab,
"absent" slices stop propagation, both labelled neighbours meet in the middle, the slice with the most voxels likely
wrong is suggested next, and an update keeps the earlier confidence outside its slab."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from KnowledgeSAMLib.data.volume import Labels
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, segment
from KnowledgeSAMLib.infer.interactive import affected_slab, expected_errors, merge_slab, next_slice_to_check
from KnowledgeSAMLib.infer.propagate import territories
from KnowledgeSAMLib.infer.slicing import axis_view

from test_infer_fakes import ThresholdModel, blob_volume, dice


@pytest.fixture(scope="module")
def volume():
    return blob_volume(shape=(16, 40, 48))


def _labels_on(labels: Labels, slices) -> Labels:
    """The annotator labelled only these slices."""
    layers = np.zeros_like(labels.layers)
    for k in slices:
        layers[:, k] = labels.layers[:, k]
    return Labels(layers, labels.geometry, labels.segments, labels.source)


def _run(image, labels, **kw):
    kw.setdefault("mode", "propagate")
    kw.setdefault("batch_size", 4)
    return segment(SegmentRequest(image, image, labels, **kw), ThresholdModel(64))


def test_territories_meet_between_seeds_and_stop_at_absent_slices():
    walks = territories([3, 9], [12], 0, 15)
    assert sorted(walks) == sorted([(3, -1, 0), (3, +1, 8), (9, -1, 4), (9, +1, 11)])
    assert territories([5], [], 5, 5) == []


def test_every_labelled_slice_is_returned_exactly(volume):
    image, labels = volume
    drawn = _labels_on(labels, [5, 10])
    result = _run(image, drawn)
    for k in (5, 10):
        np.testing.assert_array_equal(result.labels.layers[0][k], labels.layers[0][k])
    assert dice(result.labels.mask("bright"), labels.mask("bright")) > 0.9


def test_a_correction_changes_only_its_slab(volume):
    image, labels = volume
    drawn = _labels_on(labels, [3, 8, 12])
    touched = [3, 8, 12]  # the annotator's slices, complete for every structure (the loop passes them)
    before = _run(image, drawn, reference_slices=touched)
    corrected = drawn.layers.copy()
    corrected[0, 8][labels.layers[0, 8] == 3] = 1  # the annotator re-labels the dim structure as bright on slice 8
    after = _run(image, Labels(corrected, drawn.geometry, drawn.segments, drawn.source), reference_slices=touched)
    start, stop = affected_slab([3, 8, 12], 8, 16)
    assert (start, stop) == (4, 12)
    outside = [k for k in range(16) if not start <= k < stop]
    np.testing.assert_array_equal(after.labels.layers[0][outside], before.labels.layers[0][outside])
    assert not np.array_equal(after.labels.layers[0][start:stop], before.labels.layers[0][start:stop])
    # and an update of the slab alone, merged into the earlier result, gives the same labels
    slab_only = _run(image, Labels(corrected, drawn.geometry, drawn.segments, drawn.source), slice_range=(start, stop),
                     reference_slices=touched)
    view = axis_view(image.shape, image.geometry, "axial")
    merged = merge_slab(before.labels, slab_only.labels, view, (start, stop))
    np.testing.assert_array_equal(merged.layers, after.labels.layers)
    assert slab_only.provenance["counts"]["target_slices_encoded"] < before.provenance["counts"]["target_slices_encoded"]


def test_absent_slices_stop_propagation_and_stay_empty(volume):
    image, labels = volume
    truth = labels.mask("bright")
    present = np.flatnonzero(truth.any(axis=(1, 2)))
    seed, stop = int(present[len(present) // 2]), int(present[-1]) - 1
    drawn = _labels_on(labels, [seed])
    free = _run(image, drawn)
    assert free.labels.mask("bright")[stop:].any()
    marked = _run(image, drawn, absent_slices={"bright": [stop]})
    assert not marked.labels.mask("bright")[stop:].any()  # the walk up stops before the absent slice
    assert marked.labels.mask("bright")[seed:stop].any()
    assert marked.labels.mask("dim")[stop:].any() == free.labels.mask("dim")[stop:].any()  # only that structure


def test_absent_slice_refusals(volume):
    image, labels = volume
    drawn = _labels_on(labels, [6])
    with pytest.raises(InputError, match="outside"):
        _run(image, drawn, absent_slices=[99])
    with pytest.raises(InputError, match="both labelled"):
        _run(image, drawn, absent_slices={"bright": [6]})
    with pytest.raises(InputError, match="not among the segments"):
        _run(image, drawn, absent_slices={"liver": [2]})


def test_next_slice_to_check_is_where_the_most_voxels_are_likely_wrong():
    confidence = np.array([np.nan, 0.9, 0.4, 0.95, 0.2, 0.8], dtype=np.float32)
    area = np.array([50, 100, 100, 1000, 5, 0])
    errors = expected_errors(confidence, area)
    np.testing.assert_allclose(errors, [np.nan, 10, 60, 50, 4, 0], atol=1e-4)  # NaN: no confidence there
    assert next_slice_to_check(errors) == 2  # not slice 4, the least confident: 5 voxels
    assert next_slice_to_check(errors, skip=[2]) == 3  # a large, fairly sure slice before a small unsure one
    assert next_slice_to_check(errors, skip=[1, 2, 3, 4]) is None
    assert next_slice_to_check(np.zeros(6)) is None
    assert next_slice_to_check(np.array([0.0, 7.0, 7.0])) == 1  # ties: the lowest slice
    with pytest.raises(InputError, match="confidence for 6 slices but areas for 5"):
        expected_errors(confidence, area[:5])


def test_a_correction_is_worth_the_likely_wrong_voxels_around_it_up_to_the_labelled_slices():
    from KnowledgeSAMLib.infer.interactive import slice_to_check, spread_in_gaps

    errors = np.array([0.0, 60.0, 50.0, 50.0, 0.0, 70.0, 0.0, 0.0])
    spread = spread_in_gaps(errors, bounds=[0, 4], reach=1.0)
    w1, w2 = np.exp(-1.0), np.exp(-2.0)
    np.testing.assert_allclose(spread[:5], [0, 60 + 50 * w1 + 50 * w2, 50 + (60 + 50) * w1, 50 + 50 * w1 + 60 * w2, 0])
    np.testing.assert_allclose(spread[5:], [70, 70 * w1, 70 * w2])  # slice 4 is labelled: nothing crosses it
    assert spread[2] > spread[1] > spread[5]  # three likely-wrong slices side by side before the worst lone one
    confidence = {"s": np.array([np.nan, 0.4, 0.5, 0.5, 1.0, 0.3, 1.0, 1.0])}
    areas = {"s": np.array([0, 100, 100, 100, 90, 100, 0, 0])}
    assert slice_to_check(confidence, areas, {"s": [0, 4]})[1] == 2
    assert slice_to_check(confidence, areas, {"s": [0, 4]}, reach=0)[1] == 5  # its own errors alone: 70
    # a slice with nothing predicted is never suggested, even beside likely-wrong ones
    assert slice_to_check(confidence, areas, {"s": [0, 1, 2, 3, 4, 5]}) is None


def test_update_slab_keeps_the_earlier_confidence_outside_the_slab(volume):
    from KnowledgeSAMLib.infer.interactive import update_slab

    image, labels = volume
    drawn = _labels_on(labels, [3, 8, 12])
    earlier = _run(image, drawn)
    request = SegmentRequest(image, image, earlier.labels, mode="propagate", reference_slices=[3, 8, 12],
                             batch_size=4)
    model = ThresholdModel(64)
    alone = update_slab(lambda r: segment(r, model), request, 8)
    merged = update_slab(lambda r: segment(r, model), request, 8, previous_confidence=earlier.confidence)
    slab = merged.provenance["update"]["slab"]
    name = labels.segments[0].name
    outside = [k for k in range(len(earlier.confidence[name])) if not slab[0] <= k < slab[1]]
    assert np.isnan(alone.confidence[name][outside]).all(), "an update alone computes the slab only"
    np.testing.assert_array_equal(merged.confidence[name][outside], earlier.confidence[name][outside])
    np.testing.assert_array_equal(merged.confidence[name][slab[0]:slab[1]], alone.confidence[name][slab[0]:slab[1]])
    assert np.isfinite(merged.confidence[name][outside]).any()


def test_update_slab_recomputes_only_the_slab_and_keeps_the_earlier_result_elsewhere(volume):
    from KnowledgeSAMLib.infer.interactive import update_slab

    image, labels = volume
    drawn = _labels_on(labels, [3, 8, 12])
    earlier = _run(image, drawn).labels
    # the file the annotator saves: the earlier result with slice 8 corrected
    saved = earlier.layers.copy()
    saved[0, 8] = np.where(labels.layers[0, 8] == 3, 1, labels.layers[0, 8])
    request = SegmentRequest(image, image, Labels(saved, earlier.geometry, earlier.segments), mode="propagate",
                             reference_slices=[3, 8, 12], batch_size=4)
    calls = []
    model = ThresholdModel(64)
    result = update_slab(lambda r: calls.append(r.slice_range) or segment(r, model), request, corrected=8)
    assert calls == [(4, 12)] and result.provenance["update"]["slab"] == [4, 12]
    outside = [k for k in range(16) if not 4 <= k < 12]
    np.testing.assert_array_equal(result.labels.layers[0][outside], saved[0][outside])
    np.testing.assert_array_equal(result.labels.layers[0][8], saved[0][8])  # the correction, as drawn
    with pytest.raises(InputError, match="keep-slices"):
        update_slab(lambda r: segment(r, model), SegmentRequest(image, image, drawn, mode="propagate"), corrected=8)


def test_an_update_through_the_segmenter_reuses_the_volumes_embeddings(volume):
    from KnowledgeSAMLib.infer.interactive import update_slab
    from KnowledgeSAMLib.infer.segmenter import Segmenter

    image, labels = volume
    drawn = _labels_on(labels, [3, 8, 12])
    model = ThresholdModel(64)
    segmenter = Segmenter(model)
    first = segmenter.segment(SegmentRequest(image, image, drawn, mode="propagate", batch_size=4, roi="none"))
    encoded = model.encode_calls
    assert first.provenance["counts"]["target_slices_encoded"] > 8
    request = SegmentRequest(image, image, first.labels, mode="propagate", reference_slices=[3, 8, 12],
                             batch_size=4, roi="none")
    update = update_slab(segmenter.segment, request, corrected=8)
    assert update.provenance["counts"]["target_slices_encoded"] == 0 and model.encode_calls == encoded


def test_update_slab_spans_several_corrections_and_stops_at_slices_absent_for_every_segment(volume):
    from KnowledgeSAMLib.infer.interactive import update_slab

    image, labels = volume
    drawn = _labels_on(labels, [3, 8, 12])
    earlier = _run(image, drawn).labels
    calls = []
    model = ThresholdModel(64)

    def run(r):
        calls.append(r.slice_range)
        return segment(r, model)

    request = SegmentRequest(image, image, earlier, mode="propagate", reference_slices=[3, 8, 12], batch_size=4)
    result = update_slab(run, request, corrected=[8, 12])
    assert calls[-1] == (4, 16) and result.provenance["update"] == {"corrected_slice": [8, 12], "slab": [4, 16]}
    cleared = earlier.layers.copy()
    cleared[:, 14] = 0  # absent for both structures: no walk crosses it
    absent = SegmentRequest(image, image, Labels(cleared, earlier.geometry, earlier.segments), mode="propagate",
                            reference_slices=[3, 8, 12], batch_size=4, absent_slices=[14])
    update_slab(run, absent, corrected=12)
    assert calls[-1] == (9, 14)
    one = SegmentRequest(image, image, Labels(cleared, earlier.geometry, earlier.segments), mode="propagate",
                         reference_slices=[3, 8, 12], batch_size=4, absent_slices={"bright": [14]})
    update_slab(run, one, corrected=12)
    assert calls[-1] == (9, 16)  # the dim structure may still walk past slice 14


def _per_structure(labels: Labels, picks: dict[str, list[int]]) -> Labels:
    """Each structure drawn on its own slices only (an annotator labelling one structure at a time)."""
    layers = np.zeros_like(labels.layers)
    for seg in labels.segments:
        for k in picks[seg.name]:
            layers[seg.layer, k][labels.layers[seg.layer, k] == seg.label_value] = seg.label_value
    return Labels(layers, labels.geometry, labels.segments, labels.source)


def test_a_structure_drawn_on_other_slices_is_not_absent_where_another_was_drawn(volume):
    """Bright drawn on slice 6 only, dim on slice 9 only: dim is still found on slice 6 (nothing was said about
    it there); only when the caller declares slice 6 complete (``reference_slices``) is dim absent there."""
    image, labels = volume
    drawn = _per_structure(labels, {"bright": [6], "dim": [9]})
    truth_dim_6 = labels.mask("dim")[6]
    assert truth_dim_6.any()
    free = _run(image, drawn)
    assert dice(free.labels.mask("dim")[6], truth_dim_6) > 0.8
    complete = _run(image, drawn, reference_slices=[6, 9])
    assert not complete.labels.mask("dim")[6].any()


# ------------------------------------------------------------------------------------------ self-check

class _AlwaysBright(ThresholdModel):
    """Answers "bright" whatever the reference shows: a model that cannot follow the prompt for "dim"."""

    def encode_reference(self, ref_images, ref_masks, embeddings=None):
        prompt = super().encode_reference(ref_images, ref_masks, embeddings)
        # the bright structure's grey (HU 200 in the abdominal window) and nothing darker, anywhere in the slice
        return type(prompt)(torch.full_like(prompt.low, 0.8), torch.full_like(prompt.high, 2.0),
                            torch.ones_like(prompt.region), prompt.embedding)


def test_unreliable_slices_are_decided_per_labelled_slice():
    from KnowledgeSAMLib.infer.self_check import failed_slices, unreliable_slices

    assert unreliable_slices({3: 0.9, 8: 0.9, 12: 0.9}, set(), [], range(16)) == ([], [])
    fill, clear = unreliable_slices({3: 0.9, 8: 0.1, 12: 0.9}, {8}, [14], range(16))
    assert fill == [4, 5, 6, 7, 9, 10, 11] and clear == []  # beyond 3, 12 and the absent 14: untouched
    fill, clear = unreliable_slices({3: 0.1, 8: 0.9}, {3}, [6], range(12))
    assert fill == [] and clear == [0, 1, 2, 4, 5]  # the absent slice 6 cuts the gap: 3's side is its own walk
    big, tiny = np.ones((10, 10), bool), np.zeros((10, 10), bool)
    tiny[0, :2] = True  # a structure's thin end: its Dice is not judged
    assert failed_slices({3: 0.1, 8: 0.1, 12: 0.9}, {3: big, 8: tiny, 12: big}, 0.3) == {3}


def test_a_structure_the_model_cannot_reproduce_is_interpolated_between_its_labelled_slices(volume):
    image, labels = volume
    dim_slices = np.flatnonzero(labels.mask("dim").any(axis=(1, 2)))
    first, last = int(dim_slices[0]) + 1, int(dim_slices[-1]) - 1
    drawn = _labels_on(labels, [first, last])
    model = _AlwaysBright(64)
    result = segment(SegmentRequest(image, image, drawn, mode="propagate", batch_size=4), model)
    checks = result.provenance["self_check"]
    assert all(v < 0.3 for v in checks["dim"].values()) and all(v > 0.8 for v in checks["bright"].values())
    assert len(result.provenance["warnings"]) == 1 and result.provenance["warnings"][0].startswith("dim: ")
    dim, truth = result.labels.mask("dim"), labels.mask("dim")
    assert dice(dim[first:last + 1], truth[first:last + 1]) > 0.8, "the drawn shapes, interpolated"
    assert not dim[:first].any() and not dim[last + 1:].any(), "nothing beyond the labelled slices"
    unchecked = segment(SegmentRequest(image, image, drawn, mode="propagate", batch_size=4,
                                       options=EngineOptions(self_check_min=0.0)), model)
    assert unchecked.provenance["warnings"] == []
    assert dice(unchecked.labels.mask("dim")[first + 1:last], truth[first + 1:last]) < 0.5, "the model's own answer"


def test_a_propagate_result_says_where_to_look_next(volume):
    image, labels = volume
    result = _run(image, _labels_on(labels, [5, 10]), absent_slices={labels.segments[0].name: [13]})
    look = result.provenance["next_slice_to_check"]
    name = look["segment"]
    assert look["slice"] not in (5, 10, 13) and name in [seg.name for seg in labels.segments]
    view = axis_view(image.shape, image.geometry, "axial")
    errors = expected_errors(result.confidence[name], view.slice_sizes(result.labels.mask(name)))
    assert errors[look["slice"]] > 0 and look["confidence"] == pytest.approx(result.confidence[name][look["slice"]],
                                                                            abs=1e-4)
    other = _run(image, _labels_on(labels, [5, 10]), mode="anchor")
    assert "next_slice_to_check" not in other.provenance  # only the annotator's loop (propagate mode) suggests


def test_earlier_confidence_is_read_from_a_sidecar_of_the_same_axis(tmp_path):
    from KnowledgeSAMLib.infer.output import earlier_confidence, sidecar_path

    labels = tmp_path / "work.seg.nrrd"
    assert earlier_confidence(labels, "axial") is None  # no sidecar
    sidecar_path(labels).write_text('{"axis": "axial", "confidence": {"liver": [0.5, null, 0.25]}}', encoding="utf-8")
    np.testing.assert_array_equal(earlier_confidence(labels, "axial")["liver"], [0.5, np.nan, 0.25])
    assert earlier_confidence(labels, "sagittal") is None
    sidecar_path(labels).write_text("{not json", encoding="utf-8")
    assert earlier_confidence(labels, "axial") is None
