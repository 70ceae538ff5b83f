"""One writer per output file: a second run that would write the same output refuses at once.

Why: two runs with ``--overwrite`` on one output used to both compute and then interleave their writes;
two runs without it found the clash only after all their compute. Each output gets an exclusive,
non-blocking lock on a hidden file beside it (``.pred.seg.nrrd.ksam-lock``) before any compute; the
operating system drops the lock when the process ends, even by ``kill -9``, so a dead run never blocks
the next one. The lock file is removed when the lock is released (checked by inode, so a removal never
races with a new holder).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import InputError

__all__ = ["OutputLock", "lock_path", "LOCK_SUFFIX"]

LOCK_SUFFIX = ".ksam-lock"


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent / f".{path.name}{LOCK_SUFFIX}"


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class OutputLock:
    """An exclusive lock on one output path, held from :meth:`acquire` to :meth:`release` (or process end)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.file = lock_path(self.path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "OutputLock":
        """Take the lock now or raise InputError naming the output (never waits)."""
        while self._fd is None:
            try:
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                raise InputError(f"{self.path}: cannot write in {self.path.parent} "
                                 f"({error.strerror or error})") from None
            if not _try_lock(fd):
                os.close(fd)
                raise InputError(f"{self.path}: another KnowledgeSAM run is writing this output now; wait for it "
                                 "to finish or choose another --output")
            if not self._still_current(fd):  # the previous holder removed the file meanwhile: retry
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
        return self

    def _still_current(self, fd: int) -> bool:
        try:
            mine, current = os.fstat(fd), os.stat(self.file)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (current.st_dev, current.st_ino)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if sys.platform != "win32":
                os.unlink(self.file)  # while still holding it: a waiting run then retries on a fresh file
        except OSError:
            pass
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
