"""Pairing prediction and truth structures by name or value, errors, and grid alignment."""

from __future__ import annotations

import math

import numpy as np
import pytest

from KnowledgeSAMLib.data.volume import Geometry, Labels, Segment
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.evaluation import evaluate_labels, format_table, match_structures
from KnowledgeSAMLib.evaluation.matching import align_to_truth, has_real_names

SHAPE = (6, 16, 16)
GEOMETRY = Geometry(spacing=(1.0, 1.0, 2.0))


def two_boxes() -> np.ndarray:
    labelmap = np.zeros(SHAPE, np.uint8)
    labelmap[1:5, 2:7, 2:7] = 1
    labelmap[1:5, 9:14, 9:14] = 2
    return labelmap


def named(labelmap: np.ndarray, names: dict[int, str], source: str, geometry: Geometry = GEOMETRY) -> Labels:
    segments = [Segment(name=n, label_value=v) for v, n in names.items()]
    return Labels(layers=labelmap[None].copy(), geometry=geometry, segments=segments, source=source)


def test_default_pairs_by_name_when_both_have_names():
    truth = named(two_boxes(), {1: "head", 2: "body"}, "truth.seg.nrrd")
    swapped = two_boxes()
    swapped[two_boxes() == 1], swapped[two_boxes() == 2] = 2, 1  # same regions, other values
    prediction = named(swapped, {2: "Head", 1: "BODY"}, "pred.seg.nrrd")  # case-insensitive names
    report = evaluate_labels(prediction, truth)
    assert report.matched_by == "name"
    assert [s.name for s in report.structures] == ["head", "body"]
    assert [s.dice for s in report.structures] == [1.0, 1.0]
    assert report.pairs[0] == {"truth_label": 1, "prediction_label": 2, "prediction_segment": "Head"}
    # Forcing values pairs 1 with 1: the regions differ, so the scores collapse.
    by_value = evaluate_labels(prediction, truth, labels=[1, 2])
    assert by_value.matched_by == "value"
    assert [s.dice for s in by_value.structures] == [0.0, 0.0]


def test_default_pairs_by_value_when_a_file_has_generic_names():
    truth = named(two_boxes(), {1: "head", 2: "body"}, "truth.seg.nrrd")
    prediction = Labels.from_labelmap(two_boxes(), GEOMETRY, source="pred.nii.gz")  # "Label 1", "Label 2"
    assert has_real_names(truth) and not has_real_names(prediction)
    assert not has_real_names(named(two_boxes(), {1: "Segment_1", 2: "2"}, "x"))
    report = evaluate_labels(prediction, truth)
    assert report.matched_by == "value"
    assert [s.name for s in report.structures] == ["head", "body"]
    assert report.mean["dice"] == 1.0 and report.mean["hd95_mm"] == 0.0
    # The other way round the structures still get the names the prediction gives them.
    assert [s.name for s in evaluate_labels(truth, prediction).structures] == ["head", "body"]


def test_selecting_a_subset_by_value_and_by_name():
    truth = named(two_boxes(), {1: "head", 2: "body"}, "truth.seg.nrrd")
    prediction = named(two_boxes(), {1: "head", 2: "body"}, "pred.seg.nrrd")
    assert [m.name for m in match_structures(prediction, truth, labels=[2])] == ["body"]
    assert [m.name for m in match_structures(prediction, truth, segments=["body", "head"])] == ["body", "head"]


def test_missing_structures_are_clear_errors_naming_the_file():
    truth = named(two_boxes(), {1: "head", 2: "body"}, "truth.seg.nrrd")
    only_head = np.where(two_boxes() == 1, 1, 0).astype(np.uint8)
    prediction = Labels.from_labelmap(only_head, GEOMETRY, source="pred.nii.gz")
    with pytest.raises(InputError, match=r"truth\.seg\.nrrd.*no label value 3.*head=1, body=2"):
        match_structures(prediction, truth, labels=[3])
    with pytest.raises(InputError, match=r"pred\.nii\.gz.*no label value 2"):
        match_structures(prediction, truth, labels=[1, 2])
    with pytest.raises(InputError, match=r"truth\.seg\.nrrd.*no segment 'tail'"):
        match_structures(prediction, truth, segments=["tail"])
    with pytest.raises(InputError, match="not both"):
        match_structures(prediction, truth, labels=[1], segments=["head"])
    with pytest.raises(InputError, match="no labelled structures"):
        match_structures(prediction, Labels.from_labelmap(np.zeros(SHAPE, np.uint8), GEOMETRY, source="t"))


def test_missing_as_empty_scores_an_absent_prediction():
    truth = named(two_boxes(), {1: "head", 2: "body"}, "truth.seg.nrrd")
    only_head = np.where(two_boxes() == 1, 1, 0).astype(np.uint8)
    prediction = Labels.from_labelmap(only_head, GEOMETRY, source="pred.nii.gz")
    report = evaluate_labels(prediction, truth, labels=[1, 2], missing_as_empty=True)
    head, body = report.structures
    assert head.dice == 1.0 and body.dice == 0.0 and math.isinf(body.hd95_mm)
    assert report.to_json()["structures"][1]["hd95_mm"] is None
    assert report.to_json()["mean"]["hd95_mm"] is None
    assert "n/a" in format_table(report)


def test_prediction_on_another_grid_is_resampled_onto_the_truth():
    truth = named(two_boxes(), {1: "head", 2: "body"}, "truth.seg.nrrd")
    # The same boxes on a grid with half the in-plane spacing (twice as many voxels), same origin.
    fine = np.repeat(np.repeat(two_boxes(), 2, axis=1), 2, axis=2)
    fine_geometry = Geometry(spacing=(0.5, 0.5, 2.0), origin=(-0.25, -0.25, 0.0))
    prediction = named(fine, {1: "head", 2: "body"}, "fine.seg.nrrd", fine_geometry)
    aligned, resampled = align_to_truth(prediction, truth)
    assert resampled and aligned.shape == truth.shape
    report = evaluate_labels(prediction, truth)
    assert report.resampled
    assert [s.dice for s in report.structures] == [1.0, 1.0]
    assert "resampled" in format_table(report)


def test_grids_that_do_not_overlap_are_an_error():
    truth = named(two_boxes(), {1: "head", 2: "body"}, "truth.seg.nrrd")
    far = Geometry(spacing=(1.0, 1.0, 2.0), origin=(500.0, 0.0, 0.0))
    prediction = named(two_boxes(), {1: "head", 2: "body"}, "far.seg.nrrd", far)
    with pytest.raises(InputError, match="far.seg.nrrd.*overlap"):
        evaluate_labels(prediction, truth)
