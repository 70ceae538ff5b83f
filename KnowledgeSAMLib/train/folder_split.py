"""Splitting a user's cases into training, validation and test by patient, never by slice or by scan.

Why by patient: two scans (or two eyes) of one person look alike; one in training and the other in the test
would make the test score a memory test. Why hash-ordered: each patient's place in the draw is
``blake2b(seed, patient)``, so the same seed gives the same split whatever the file order or machine, and
adding a patient moves no other patient between splits unless the split sizes change.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from .folder_scan import FolderCase

__all__ = ["PatientSplit", "assign_patients", "split_patients", "read_split_file", "default_split_sizes"]

SPLITS = ("train", "val", "test")


@dataclass
class PatientSplit:
    """Patient IDs per split (``train``, ``val``, ``test``), plus the patients left out (over ``train_cases``)."""

    train: list[str]
    val: list[str]
    test: list[str]
    unused: list[str] = field(default_factory=list)
    seed: int = 0
    source: str = "drawn"  # "drawn" (by seed) or the split file it was read from

    def of(self, patient: str) -> str | None:
        for name in SPLITS:
            if patient in getattr(self, name):
                return name
        return None


def assign_patients(cases: list[FolderCase], pattern: str | None) -> list[str]:
    """Give each case its patient ID (``pattern``: a regular expression over the case name; its first group
    or whole match). Returns one line per case the pattern does not match (it is then its own patient)."""
    if not pattern:
        return []
    regex = re.compile(pattern)
    unmatched = []
    for case in cases:
        found = regex.search(case.name)
        if found is None:
            unmatched.append(f"{case.name}: the patients pattern {pattern!r} does not match; the case is its own "
                             f"patient")
            case.patient = case.name
        else:
            case.patient = found.group(1) if regex.groups else found.group(0)
    return unmatched


def default_split_sizes(patients: int) -> tuple[int, int]:
    """(validation, test) patient counts for a run that did not say: about 10 % and 20 %, at least one each
    when there are five patients or more; fewer patients give no test split and at most one validation."""
    if patients >= 5:
        return max(1, round(0.1 * patients)), max(1, round(0.2 * patients))
    return (1 if patients >= 3 else 0), 0


def _order(patients: list[str], seed: int) -> list[str]:
    def key(patient: str) -> str:
        return hashlib.blake2b(f"{seed}:{patient}".encode(), digest_size=16).hexdigest()

    return sorted(patients, key=key)


def split_patients(patients: list[str], n_val: int, n_test: int, seed: int, max_train: int = 0) -> PatientSplit:
    """Draw the split: the first ``n_test`` patients in hash order are the test set, the next ``n_val`` the
    validation set, the rest training (at most ``max_train``, 0 = all)."""
    unique = sorted(set(patients))
    if n_val + n_test >= len(unique):
        raise InputError(f"{len(unique)} patients cannot give {n_test} test and {n_val} validation patients and "
                         f"still leave one to train on (lower test_cases / val_cases)")
    ordered = _order(unique, seed)
    test, val, train = ordered[:n_test], ordered[n_test:n_test + n_val], ordered[n_test + n_val:]
    unused = train[max_train:] if max_train else []
    train = train[:max_train] if max_train else train
    return PatientSplit(sorted(train), sorted(val), sorted(test), sorted(unused), seed)


def read_split_file(path: str | Path, root: Path) -> PatientSplit:
    """Patient lists from a run's ``split.json`` (the entry whose folder is ``root``, or its only entry) or from
    a plain ``{train: [...], val: [...], test: [...]}`` file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable split file ({error})") from None
    if isinstance(data, dict) and not set(data) & set(SPLITS):
        entries = [e for e in data.values() if isinstance(e, dict) and "patients" in e]
        matching = [e for e in entries if Path(str(e.get("root", ""))).name == root.name] or entries
        distinct = {json.dumps(e["patients"], sort_keys=True): e for e in matching}  # views of one folder agree
        matching = list(distinct.values())
        if len(matching) != 1:
            raise InputError(f"{path}: holds {len(entries)} splits; none (or several) for the folder {root.name}")
        data = matching[0]["patients"]
    if not isinstance(data, dict) or not all(isinstance(data.get(k, []), list) for k in SPLITS):
        raise InputError(f"{path}: a split file lists patients as {{train: [...], val: [...], test: [...]}}")
    lists = {k: [str(p) for p in data.get(k, [])] for k in SPLITS}
    seen: dict[str, str] = {}
    for name, members in lists.items():
        for patient in members:
            if patient in seen:
                raise InputError(f"{path}: patient {patient} is in both {seen[patient]} and {name}")
            seen[patient] = name
    if not lists["train"]:
        raise InputError(f"{path}: lists no training patient")
    return PatientSplit(lists["train"], lists["val"], lists["test"], source=str(path))
