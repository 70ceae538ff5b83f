"""bench/interactive.py, the annotator's-loop benchmark, on a fake model (CPU, seconds): each structure is
labelled on n slices of its own extent (structures that share no slice included), the drawn labels are the
truth there and nothing else, and one case runs end to end (propagate rows, the simulated annotator's
corrections within their slab)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from KnowledgeSAMLib.data.volume import Labels
from KnowledgeSAMLib.infer.segmenter import Segmenter
from KnowledgeSAMLib.infer.slicing import axis_view

from test_infer_fakes import ThresholdModel, blob_volume

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import interactive  # noqa: E402


@pytest.fixture(scope="module")
def disjoint():
    """The blob volume with its two structures on different slices (like hippocampus_045's head and body)."""
    image, labels = blob_volume(shape=(16, 40, 48))
    layer = labels.layers[0].copy()
    layer[:8][layer[:8] == 3] = 0  # dim only on slices 8..
    layer[8:][layer[8:] == 1] = 0  # bright only on slices ..7
    return image, Labels(layer[None], labels.geometry, labels.segments, labels.source)


def _slices_of(labels: Labels, view, name: str) -> list[int]:
    return [int(k) for k in np.flatnonzero(view.slice_has(labels.mask(name)))]


@pytest.mark.parametrize("n", interactive.COUNTS)
def test_each_structure_is_labelled_on_n_slices_of_its_own_extent(disjoint, n):
    image, truth = disjoint
    view = axis_view(image.shape, image.geometry, "axial")
    picks = interactive.chosen_slices(truth, view, n)
    for seg in truth.segments:
        extent = _slices_of(truth, view, seg.name)
        assert len(picks[seg.name]) == min(n, len(extent))
        assert set(picks[seg.name]) <= set(extent), seg.name
    drawn = interactive.only_slices(truth, view, picks)
    for seg in truth.segments:
        assert _slices_of(drawn, view, seg.name) == picks[seg.name]
        for k in picks[seg.name]:
            np.testing.assert_array_equal(view.get(drawn.mask(seg.name), k), view.get(truth.mask(seg.name), k))


def test_one_case_runs_with_structures_that_share_no_slice(disjoint, monkeypatch):
    image, truth = disjoint
    monkeypatch.setattr(interactive, "fill_between", lambda truth, drawn: None)  # ITK is optional
    segmenter = Segmenter(ThresholdModel(64))
    row = interactive.run_case("disjoint", image, truth, segmenter, {"batch_size": 4})
    assert set(row["ksam"]) == set(interactive.COUNTS) == set(row["annotator"])
    assert len(row["update_s"]) == max(interactive.COUNTS) - 1
    for n in interactive.COUNTS:
        assert set(row["ksam"][n]["dice"]) == {"bright", "dim"}
        assert all(0.0 <= d <= 1.0 for d in row["ksam"][n]["dice"].values())
    assert np.mean(list(row["ksam"][8]["dice"].values())) > 0.5
    summary = interactive.summarise([row])
    table = interactive.markdown(summary, "header")
    assert table.count("\n| ") == 4 and "—" in table  # three rows; no Fill row values without ITK


def test_the_effort_is_the_distinct_slices_drawn_not_the_slices_per_structure():
    row = {"ksam": {2: {"slices": {"head": [3, 6], "body": [6, 9]}}},
           "annotator": {2: {"slices": [3, 6, 6]}}}
    assert interactive.slices_drawn(row, "ksam", 2) == 3  # slice 6 holds both structures: drawn once
    assert interactive.slices_drawn(row, "fill", 2) == 3  # Fill interpolates propagate's slices
    assert interactive.slices_drawn(row, "annotator", 2) == 2
