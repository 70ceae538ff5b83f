"""A user's folder of labelled cases as a training source: scan, split by patient, read, and say what was wrong.

Why bad data is named and not fatal by default: a folder of a hundred cases from a hospital export always has
a few odd ones (an image without labels, a segmentation saved on another scan, an empty mask). Stopping at the
first costs a run per problem; ignoring them silently trains on less than the user thinks. So each problem is
one line naming the file or case (collected in :class:`DataReport`, printed and kept in the run's
``data.json``) and the case is left out — or, with ``data.strict``, the run stops at the first one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from ..data.volume import Image, Labels
from ..errors import InputError
from .config import SourceConfig
from .folder_read import CaseProblem, StructureNames, read_folder_case
from .folder_scan import FolderCase, LabelTable, find_label_table, read_label_table, scan_folder
from .folder_split import PatientSplit, assign_patients, read_split_file, split_patients

__all__ = ["DataReport", "FolderSource"]

Volumes = Iterator[tuple[str, Image, Labels]]


class DataReport:
    """Collects one line per data problem; ``strict`` turns the first problem into an error."""

    def __init__(self, strict: bool = False, warn: Callable[[str], None] | None = None) -> None:
        self.strict = strict
        self.warn = warn
        self.lines: list[str] = []

    def problem(self, line: str) -> None:
        """A case or file that is left out: stops a strict run."""
        if self.strict:
            raise InputError(f"{line.removesuffix(' (left out)')} (stopping: data.strict / --strict is set)")
        self.note(line)

    def note(self, line: str) -> None:
        """Something the user should know that never stops a run (a structure missing in some cases, ...)."""
        self.lines.append(line)
        if self.warn is not None:
            self.warn(line)


class FolderSource:
    """Scans ``src.root``, draws (or reads) the patient split, and reads the training and validation cases.

    The test cases are listed but never read: they are for the evaluation after training.
    """

    def __init__(self, src: SourceConfig, report: DataReport) -> None:
        self.src = src
        self.report = report
        self.root = Path(src.root or ".")
        self.scan = scan_folder(self.root)
        for line in self.scan.problems:
            report.problem(line)
        if not self.scan.cases:
            raise InputError(f"{self.root}: found no image with a label file (see docs/training.md, 'Your own data', "
                             f"for the layouts that are recognised)")
        for line in assign_patients(self.scan.cases, src.patients):
            report.note(line)
        self.split = self._split()
        table_path = find_label_table(self.root, src.labels)
        self.table: LabelTable | None = read_label_table(table_path) if table_path else None
        self.names = StructureNames(list(src.tasks))
        self.want_volume = src.kind == "volume_folder"
        self.structures_of: dict[str, set[str]] = {}  # case name -> structures it shows (cases read so far)
        self.left_out: list[str] = []  # one line per case that could not be used

    # ----------------------------------------------------------------------------------------- split
    def _split(self) -> PatientSplit:
        patients = sorted({c.patient for c in self.scan.cases})
        if self.src.split_file:
            split = read_split_file(self.src.split_file, self.root)
            listed = set(split.train) | set(split.val) | set(split.test)
            split.unused = sorted(set(patients) - listed)
            if split.unused:
                self.report.note(f"{self.src.split_file}: {len(split.unused)} patient(s) of {self.root} are not in "
                                 f"the split file and are left out: {', '.join(split.unused[:5])}"
                                 f"{' ...' if len(split.unused) > 5 else ''}")
            return split
        return split_patients(patients, self.src.val_cases, self.src.test_cases, self.src.seed,
                              self.src.n_train)

    def cases(self, split: str) -> list[FolderCase]:
        members = set(getattr(self.split, split))
        return [c for c in self.scan.cases if c.patient in members]

    def held_out(self) -> list[str]:
        return [c.name for c in self.cases("test")]

    # ----------------------------------------------------------------------------------------- reading
    def _read(self, cases: list[FolderCase]) -> Volumes:
        for case in cases:
            try:
                read = read_folder_case(case, self.table, self.names, self.want_volume)
            except CaseProblem as problem:
                self.left_out.append(str(problem))
                self.report.problem(str(problem))
                continue
            for line in read.notes:
                self.report.note(line)
            self.structures_of[case.name] = {s.name for s in read.labels.segments}
            yield case.name, read.image, read.labels

    def volumes(self) -> tuple[Volumes, Volumes, list[str]]:
        """(training volumes, validation volumes, held-out test case names), as the built-in loaders give."""
        return self._read(self.cases("train")), self._read(self.cases("val")), self.held_out()

    def tasks(self) -> list[str]:
        """The configured structures, else every structure seen, in the order first seen."""
        if self.src.tasks:
            return list(self.src.tasks)
        return list(dict.fromkeys(s for structures in self.structures_of.values() for s in sorted(structures)))

    def finish(self) -> None:
        """After reading: one line per structure missing in some cases; an error for one that is in none."""
        read = len(self.structures_of)
        if not read:
            if self.left_out:
                raise InputError(f"{self.root}: none of the {len(self.left_out)} training and validation cases could "
                                 f"be used; the first: {self.left_out[0]}")
            return
        for task in self.tasks():
            missing = sum(task not in s for s in self.structures_of.values())
            if missing == read:
                seen = sorted({s for structures in self.structures_of.values() for s in structures})
                raise InputError(f"{self.root}: structure {task!r} is in none of the {read} cases read "
                                 f"(found: {', '.join(seen) or 'none'})")
            if missing:
                self.report.note(f"structure {task!r}: missing in {missing} of {read} cases (kept; in those cases "
                                 f"it counts as absent)")

    def record(self) -> dict[str, object]:
        """The split as written to ``split.json`` beside the run (reusable as ``split_file``)."""
        return {"root": str(self.root), "kind": self.src.kind, "seed": self.split.seed, "from": self.split.source,
                "patients": {"train": self.split.train, "val": self.split.val, "test": self.split.test,
                             "unused": self.split.unused},
                "cases": {name: [c.record(self.root) for c in self.cases(name)] for name in ("train", "val", "test")}}
