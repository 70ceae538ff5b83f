"""Evaluated pairs kept on disk, so a long accuracy run can stop and go on later without scoring a pair twice.

Why: the full accuracy benchmark needs about three and a half hours on two CPU cores (training ≈ 108 min, the
evaluation of eight datasets as long again). Its trained models were already kept in ``--work-dir``; the records of
each evaluated pair now are too, beside them. A pair's records are reused only when everything they depend on is
the same (:func:`fingerprint`): the library's and the benchmark's source code, the default model's weights, the
trained models (named by their measured training times, which differ on every retraining) and the options that
change what is evaluated. Anything else evaluates the pair again.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable

from .report import Record

__all__ = ["code_fingerprint", "fingerprint", "load_pair", "save_pair", "pair_path"]

# the options of bench/accuracy.py that change what a pair's records hold
EVALUATION_OPTIONS = ("steps", "papila_steps", "seeds", "batch_size", "lr", "model", "sam_checkpoint", "train_config",
                      "no_litemedsam", "no_unseen", "device", "quick", "data")


def code_fingerprint(roots: Iterable[Path]) -> str:
    """A hash of every Python source under ``roots`` (path and bytes)."""
    digest = hashlib.blake2b(digest_size=12)
    for root in roots:
        for path in sorted(Path(root).rglob("*.py")):
            digest.update(str(path.relative_to(Path(root).parent)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def fingerprint(code: str, default_model: str | None, train_seconds: dict[str, float], options: dict[str, Any]) -> str:
    """What a pair's records depend on, as one hash."""
    payload = {"code": code, "default_model": default_model,
               "trained": {k: round(float(v), 6) for k, v in sorted(train_seconds.items())},
               "options": {k: str(options.get(k)) for k in EVALUATION_OPTIONS}}
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=12).hexdigest()


def pair_path(work_dir: Path, dataset: str, case: str) -> Path:
    """Where one pair's records live: ``<work_dir>/records/<dataset>/<case>.json`` (case made file-safe)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", case).strip("_") or "case"
    return Path(work_dir) / "records" / dataset / f"{safe}.json"


def load_pair(path: Path, key: str) -> tuple[list[Record], list[tuple[str, str, str, str]], float, float | None] | None:
    """``(records, failures, seconds, load)`` stored for this fingerprint (``load``: the machine's mean 1-minute load
    average while the pair ran, None if unknown); None when absent, unreadable or stale."""
    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
        if stored.get("fingerprint") != key:
            return None
        records = [Record(**r) for r in stored["records"]]
        failures = [tuple(f) for f in stored["failures"]]
        return records, failures, float(stored["seconds"]), stored.get("load")  # type: ignore[return-value]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_pair(path: Path, key: str, records: list[Record], failures: list[tuple[str, str, str, str]],
              seconds: float, load: float | None = None) -> None:
    """Store one pair's records atomically (a run stopped while writing leaves no half file to trust)."""
    from KnowledgeSAMLib.data.io import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"fingerprint": key, "records": [r.to_json() for r in records], "failures": [list(f) for f in failures],
               "seconds": seconds, "load": None if load is None or load != load else load}
    with atomic_write(path, overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=1), encoding="utf-8")
