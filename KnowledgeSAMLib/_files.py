"""File-system details shared by the atomic writers and the verifiers.

``tempfile.mkstemp``/``mkdtemp`` create private (0600/0700) files and folders; renamed into place they
would keep those modes, so a model folder or a downloaded checkpoint would be unreadable to colleagues
sharing it. Writers call :func:`give_default_permissions` before the rename. :func:`file_sha256` is the one
way files are hashed (checkpoints, model weights, written labels).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike, progress: Callable[[int, int], None] | None = None,
                cancel: Any = None) -> str:
    """SHA256 of a file, read in 1 MiB chunks (a 375 MB checkpoint never sits in memory).

    ``progress(done_bytes, total_bytes)``; ``cancel`` is any object with ``raise_if_cancelled()``.
    """
    path = Path(path)
    total = path.stat().st_size
    digest = hashlib.sha256()
    done = 0
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if cancel is not None:
                cancel.raise_if_cancelled()
            if progress is not None:
                progress(done, total)
    if progress is not None and total == 0:
        progress(0, 0)
    return digest.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_permissions(path: str | os.PathLike, directory: bool | None = None) -> None:
    """Set the mode a normally created file (0666) or folder (0777) would have under the current umask."""
    path = Path(path)
    is_dir = path.is_dir() if directory is None else directory
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())
