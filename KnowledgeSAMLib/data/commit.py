"""Write several files as one unit: all of them replaced, or none, even when the process is killed.

Why: a result is a label file and its provenance sidecar. Written one after the other, a kill between the
two renames (or a second run on the same output) leaves labels of one run beside the sidecar of another.
Here every file of a unit is first written to a temporary beside its destination; then a small journal
naming the renames is written atomically (the commit point), the renames run with Ctrl+C and SIGTERM
deferred, and the journal is removed. :func:`recover` — called by the next run that takes the output's
lock — finishes the renames of a committed unit and deletes the temporaries of one that never committed.

Names, all hidden beside the destination ``pred.seg.nrrd`` and never mistaken for an input
(:func:`is_hidden` files are skipped when a folder is listed):

* temporaries ``.pred.seg.nrrd.<12 hex>.partial.seg.nrrd`` (the extension stays last, so writers pick
  the format), ``.pred.seg.nrrd.ksam.json.<12 hex>.partial.json``;
* the journal ``.pred.seg.nrrd.ksam-commit``; the lock (:mod:`.locks`) ``.pred.seg.nrrd.ksam-lock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .._test_hooks import pause_point
from ..errors import InputError
from .header import file_extension

__all__ = ["staged_files", "commit_renames", "recover", "temporary_path", "journal_path", "is_hidden",
           "leftovers_of", "PARTIAL", "JOURNAL_SUFFIX"]

PARTIAL = ".partial"
JOURNAL_SUFFIX = ".ksam-commit"


def temporary_path(path: str | os.PathLike) -> Path:
    """A fresh hidden temporary beside ``path`` carrying its full name and its extension."""
    path = Path(path)
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL}{file_extension(path)}"


def journal_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}{JOURNAL_SUFFIX}"


def is_hidden(path: str | os.PathLike) -> bool:
    """Dot files: our temporaries, journals and locks (and other tools' ``._x`` files) are never inputs."""
    return Path(path).name.startswith(".")


def leftovers_of(path: str | os.PathLike) -> list[Path]:
    """Temporaries an interrupted write of exactly ``path`` left behind (not those of ``path``'s siblings)."""
    path = Path(path)
    ext = file_extension(path)
    stem = path.name[: len(path.name) - len(ext)] if ext else path.name
    hexes, partial = r"\.[0-9a-f]{12}", re.escape(PARTIAL)
    patterns = [re.compile(rf"^\.{re.escape(path.name)}{hexes}{partial}(\.[^/]*)?$"),
                re.compile(rf"^\.{re.escape(stem)}{hexes}{partial}{re.escape(ext)}$")]  # the older naming
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.iterdir() if any(pattern.match(p.name) for pattern in patterns))


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path}: file exists; not overwriting it (pass overwrite=True / --overwrite)")


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl+C and SIGTERM wait until the block is done (POSIX main thread; elsewhere nothing to defer)."""
    can_block = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if not can_block:
        yield
        return
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def commit_renames(renames: Sequence[tuple[Path, Path]], overwrite: bool = False,
                   on_commit: Callable[[], None] | None = None) -> None:
    """Rename each written temporary onto its destination, all or nothing (see the module docstring).

    ``on_commit`` runs right after the renames, before a deferred Ctrl+C is delivered: a caller that records
    what it wrote there never misses an output that was in fact written."""
    for _, final in renames:
        _refuse_existing(final, overwrite)  # someone outside our lock may have created it meanwhile
    for temporary, _ in renames:
        _fsync_file(temporary)
    pause_point("staged")
    if len(renames) == 1:  # one file: os.replace alone is atomic
        with _signals_deferred():
            os.replace(*renames[0])
            if on_commit is not None:
                on_commit()
        return
    journal = journal_path(renames[0][1])
    record = {"renames": [[t.name, f.name] for t, f in renames]}
    staged = temporary_path(journal)
    staged.write_text(json.dumps(record) + "\n", encoding="utf-8")
    _fsync_file(staged)
    with _signals_deferred():
        os.replace(staged, journal)  # the commit point: from here on, recovery rolls forward
        pause_point("committing")
        for index, (temporary, final) in enumerate(renames):
            os.replace(temporary, final)
            if index == 0:
                pause_point("between-renames")
        journal.unlink()
        if on_commit is not None:
            on_commit()


@contextlib.contextmanager
def staged_files(destinations: Sequence[str | os.PathLike], overwrite: bool = False,
                 on_commit: Callable[[], None] | None = None) -> Iterator[list[Path]]:
    """Yield one temporary per destination; when the block ends they replace the destinations as one unit.

    On any error (or Ctrl+C) before the commit point the temporaries are deleted and nothing changed (an
    OSError, e.g. a full disk, becomes an InputError saying so); existing destinations are refused unless
    ``overwrite``."""
    finals = [Path(d) for d in destinations]
    for final in finals:
        _refuse_existing(final, overwrite)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"{final}: cannot create the output folder ({error.strerror or error})") from None
    temporaries = [temporary_path(final) for final in finals]
    try:
        yield temporaries
        for temporary, final in zip(temporaries, finals):
            if not temporary.exists():
                raise InputError(f"{final}: the writer produced no file")
        commit_renames(list(zip(temporaries, finals)), overwrite, on_commit)
    except BaseException as error:
        if not any(journal_path(f).exists() for f in finals[:1]):  # never committed: roll back
            for temporary in temporaries:
                with contextlib.suppress(OSError):
                    temporary.unlink()
        if isinstance(error, OSError):  # a full disk, a folder removed meanwhile: one line, not a traceback
            raise InputError(f"{finals[0]}: could not be written ({error.strerror or error}); "
                             "nothing was replaced") from None
        raise


def recover(path: str | os.PathLike, sidecar: str | os.PathLike | None = None) -> list[str]:
    """Finish or undo an interrupted write of ``path`` (and its ``sidecar``); what was done, as sentences.

    Call it only while holding the output's lock (:class:`~.locks.OutputLock`): then no other run is
    writing these temporaries."""
    path = Path(path)
    done: list[str] = []
    journal = journal_path(path)
    if journal.exists():
        try:
            renames = json.loads(journal.read_text(encoding="utf-8"))["renames"]
        except (OSError, ValueError, KeyError, TypeError):
            renames = []
        for temporary_name, final_name in renames:
            temporary = path.parent / Path(temporary_name).name
            if temporary.exists():
                os.replace(temporary, path.parent / Path(final_name).name)
                done.append(f"completed the interrupted write of {path.parent / Path(final_name).name}")
        journal.unlink()
    for item in [path, journal] + ([Path(sidecar)] if sidecar is not None else []):
        for leftover in leftovers_of(item):
            with contextlib.suppress(OSError):
                leftover.unlink()
                done.append(f"removed {leftover.name}, left by an interrupted write")
    return done
