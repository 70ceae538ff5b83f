"""Claim every output before any compute: lock it, finish or undo an interrupted write, check the disk.

Why: a run that fails after its compute wastes the compute, and a second run writing the same output
interleaves with the first. File-based front-ends (the CLI, Slicer's batch script) plan their outputs with
:func:`~.paths.plan_outputs` and then hold an :class:`OutputClaims` for the whole run:

* each output is locked (:class:`~KnowledgeSAMLib.data.locks.OutputLock`): a second run refuses at once,
  with or without ``--overwrite``;
* an interrupted earlier write of that output is completed or removed (:func:`~KnowledgeSAMLib.data.commit.recover`),
  and what was done is reported (:attr:`OutputClaims.notes`); then (``overwrite=False``) existing outputs
  are refused, so a run after a kill never leaves labels of one run beside the sidecar of another;
* the free disk space must hold every output (the labels' uncompressed size, an upper bound);
* output folders created for the run are removed again if they stay empty.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

from ..data.commit import recover
from ..data.limits import format_bytes
from ..data.locks import OutputLock
from ..errors import InputError
from .output import sidecar_path
from .paths import nearest_existing, refuse_existing_outputs

__all__ = ["OutputClaims", "check_free_space", "SIDECAR_ALLOWANCE"]

SIDECAR_ALLOWANCE = 1 << 20  # bytes reserved per output for its sidecar and file-system slack


def check_free_space(outputs: Sequence[Path], expected_bytes: Sequence[int]) -> None:
    """Refuse (InputError) when a file system lacks room for the outputs planned on it."""
    need: dict[int, list] = {}
    for path, size in zip(outputs, expected_bytes):
        folder = nearest_existing(Path(path).absolute().parent)
        entry = need.setdefault(os.stat(folder).st_dev, [folder, 0])
        entry[1] += int(size) + SIDECAR_ALLOWANCE
    for folder, total in need.values():
        free = shutil.disk_usage(folder).free
        if free < total:
            raise InputError(f"{folder}: not enough free disk space for the outputs: about {format_bytes(total)} "
                             f"needed, {format_bytes(free)} free")


class OutputClaims:
    """Locks on ``outputs`` (with their sidecars when ``sidecars``), held from ``with`` to its end."""

    def __init__(self, outputs: Sequence[str | os.PathLike], expected_bytes: Sequence[int] | None = None,
                 sidecars: bool = True, overwrite: bool | None = None,
                 on_note: Callable[[str], None] | None = None) -> None:
        self.overwrite = overwrite  # None: existing outputs were checked by plan_outputs already
        self.on_note = on_note  # told each recovery step as it happens (also when the claim then fails)
        self.outputs = [Path(o) for o in outputs]
        self.expected_bytes = list(expected_bytes) if expected_bytes is not None else [0] * len(self.outputs)
        self.sidecars = sidecars
        self.notes: list[str] = []
        self._locks: list[OutputLock] = []
        self._created: list[Path] = []

    def _make_folder(self, folder: Path) -> None:
        absolute = folder.absolute()
        depth = len(nearest_existing(absolute).parts)
        missing = [p for p in (absolute, *absolute.parents) if len(p.parts) > depth]  # deepest first
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"{folder}: cannot create the output folder ({error.strerror or error})") from None
        self._created.extend(missing)  # deepest first

    def acquire(self) -> "OutputClaims":
        try:
            for path in self.outputs:
                self._make_folder(path.parent)
                self._locks.append(OutputLock(path).acquire())
                for note in recover(path, sidecar_path(path) if self.sidecars else None):
                    self.notes.append(note)
                    if self.on_note is not None:
                        self.on_note(note)
            if self.overwrite is False:
                refuse_existing_outputs(self.outputs, self.sidecars)
            check_free_space(self.outputs, self.expected_bytes)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for lock in reversed(self._locks):
            lock.release()
        self._locks = []
        for folder in self._created:
            try:
                folder.rmdir()  # only while empty: a folder holding any output stays
            except OSError:
                continue
        self._created = []

    def __enter__(self) -> "OutputClaims":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
