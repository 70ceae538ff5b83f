"""bench/evaluate_model.py: the summary keeps per-case Dice and drops task following when it was not run."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.evaluate_model import DatasetResult, markdown  # noqa: E402


def _result(confusion: dict) -> DatasetResult:
    return DatasetResult("kidney", ["artery", "medulla"], {"artery": [0.5, 0.7], "medulla": [0.9, 0.3]},
                         [1.0, 2.0], confusion=confusion, cases=["a<-b", "c<-d"])


def _markdown(summary: dict) -> str:
    return markdown({"hardware": "test", "wall_s": 3.0, "datasets": {"kidney": summary}}, "model")


def test_skipped_task_following_leaves_no_nan_table():
    summary = _result({"artery": {"artery": [], "medulla": []}, "medulla": {"artery": [], "medulla": []}}).summary()
    assert summary["task_following"] == {}
    assert summary["case_dice"] == {"artery": [0.5, 0.7], "medulla": [0.9, 0.3]}
    assert abs(summary["mean_dice"] - 0.6) < 1e-9
    text = _markdown(summary)
    assert "Task following" not in text and "nan" not in text


def test_task_following_is_reported_when_run():
    summary = _result({"artery": {"artery": [0.6], "medulla": [0.1]},
                       "medulla": {"artery": [0.2], "medulla": [0.7]}}).summary()
    assert summary["task_following"]["medulla"] == {"artery": 0.2, "medulla": 0.7}
    assert "| medulla | 0.200 | 0.700 |" in _markdown(summary)
