"""bench/tune_engine.py: every round runs, post-processing is re-scored from stored probabilities, and the
best setting is reported (fake model and blob volumes: the rounds' plumbing, not the real numbers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bench.tune_engine as tune_engine  # noqa: E402

from test_infer_fakes import ThresholdModel, blob_volume  # noqa: E402


def _one_blob_pair_and_recorded_requests(monkeypatch) -> list:
    """tune_engine on one blob pair and a threshold model; returns the list the requests it runs are added to."""
    from KnowledgeSAMLib.model import registry

    model = ThresholdModel(image_size=32)
    target, truth = blob_volume(shape=(8, 32, 36))
    reference, labels = blob_volume(shape=(9, 32, 36), seed=1, shift=(1, 1, -1))
    pair = ("kidney", "blob0<-blob1", (target, truth, reference, labels))
    monkeypatch.setattr(tune_engine, "validation_pairs", lambda n, wide=False: [pair])
    monkeypatch.setattr(registry, "resolve_model", lambda name: model)
    requests = []
    real_segment = tune_engine.segment
    monkeypatch.setattr(tune_engine, "segment",
                        lambda request, m, **kw: requests.append(request) or real_segment(request, m, **kw))
    return requests


def test_rounds_run_and_post_processing_needs_no_model_run(tmp_path, monkeypatch):
    requests = _one_blob_pair_and_recorded_requests(monkeypatch)

    assert tune_engine.main(["--model", "fake", "--json", str(tmp_path / "tune.json")]) == 0
    summary = json.loads((tmp_path / "tune.json").read_text(encoding="utf-8"))
    rounds = [row["round"] for row in summary["rows"]]
    assert rounds.count("retrieval") == 7 and rounds.count("post") == 12 and rounds.count("threshold") == 3
    assert rounds[-1] == "flip" and summary["rows"][-1]["options"]["flip_tta"] is True
    # the model runs once per retrieval setting and once for the flips; post-processing re-uses probabilities
    calls = [request.options for request in requests]
    assert len(calls) == 7 + 1 and calls[-1].flip_tta and not any(o.flip_tta for o in calls[:-1])
    best = summary["best"]
    assert best["dice"]["mean"] == max(row["dice"]["mean"] for row in summary["rows"])
    assert 0.5 < best["dice"]["mean"] <= 1.0 and set(best["dice"]) == {"kidney/bright", "kidney/dim", "mean"}


def test_the_roi_round_scores_auto_and_whole_slices_first(monkeypatch, tmp_path):
    requests = _one_blob_pair_and_recorded_requests(monkeypatch)
    assert tune_engine.main(["--model", "fake", "--roi", "--priors", "aligned", "--json",
                             str(tmp_path / "tune.json")]) == 0
    summary = json.loads((tmp_path / "tune.json").read_text(encoding="utf-8"))
    assert [row["options"]["roi"] for row in summary["rows"][:2]] == ["auto", "none"]
    rois = [request.roi for request in requests]
    assert rois[:2] == ["auto", "none"] and set(rois[2:]) == {summary["roi"]}
