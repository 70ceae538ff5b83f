"""bench/table2.py --quick: four ablation variants x two seeds, table with mean ± sd."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _bench():
    spec = importlib.util.spec_from_file_location("table2", REPO / "bench" / "table2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["table2"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_quick_table(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "table2.md"
    assert bench.main(["--quick", "--work-dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if re.match(r"\| [1-4] \|", line)]
    assert [r.split("|")[2].strip() for r in rows] == ["KP only", "+PM", "+KM", "+KM+PM"]
    for row in rows:
        assert len(re.findall(r"\d\.\d{3} ± \d\.\d{3}", row)) == 4  # artery, medulla, cortex, mean
    records = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    assert len(records) == 8 and {r["seed"] for r in records} == {0, 1}
    assert all(r["steps"] == 40 and set(r["dice"]) >= {"kidney_phantom/artery", "mean"} for r in records)
    params = {r["variant"]: r["trainable_parameters"] for r in records}
    assert params["KP only"] < params["+PM"] < params["+KM+PM"] and params["KP only"] < params["+KM"]
    # same budget and seeds: the two seeds differ, a rerun reuses the finished runs
    assert "--quick (smoke settings" in text
    capsys.readouterr()
    assert bench.main(["--quick", "--work-dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8")) == records
    # ... but never a finished run of another budget: one table, one budget
    with pytest.raises(SystemExit, match="another budget.*--work-dir"):
        bench.main(["--quick", "--lr", "1e-4", "--work-dir", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.with_suffix(".json").read_text(encoding="utf-8")) == records
