"""The per-user cache folder (downloaded checkpoints, remembered file hashes, exported engines).

Its own module because both the checkpoint verifier and the downloader need it, and the downloader
imports the verifier: a shared leaf keeps the import graph free of cycles.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["CACHE_ENV", "APP_DIR", "default_cache_dir"]

CACHE_ENV = "KNOWLEDGESAM_CACHE"
APP_DIR = "knowledgesam"


def default_cache_dir() -> Path:
    """``$KNOWLEDGESAM_CACHE`` or the platform's user cache folder (``~/.cache/knowledgesam`` on Linux)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else Path.home() / "AppData" / "Local") / APP_DIR
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / APP_DIR
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / APP_DIR
