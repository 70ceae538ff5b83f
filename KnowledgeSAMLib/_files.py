"""File-system details shared by the atomic writers.

``tempfile.mkstemp``/``mkdtemp`` create private (0600/0700) files and folders; renamed into place they
would keep those modes, so a model folder or a downloaded checkpoint would be unreadable to colleagues
sharing it. Writers call :func:`give_default_permissions` before the rename.
"""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def give_default_permissions(path: str | os.PathLike, directory: bool | None = None) -> None:
    """Set the mode a normally created file (0666) or folder (0777) would have under the current umask."""
    path = Path(path)
    is_dir = path.is_dir() if directory is None else directory
    os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())
