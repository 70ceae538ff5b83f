"""Fetch the SAM checkpoint into the user cache — only when the user asks for it.

Nothing in KnowledgeSAMLib downloads implicitly: this runs from ``knowledgesam download-sam`` or the Slicer
module's download button. The file is streamed into a temporary file next to its destination, hashed while
it arrives, and renamed into place only when the SHA256 matches, so an interrupted or corrupt download
never leaves a file that looks like a checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from .._files import give_default_permissions
from ..errors import WeightsError
from .sam_checkpoint import SAM_VIT_B, CheckpointInfo, ProgressFn, remember_sha256, verify_checkpoint
from .user_cache import CACHE_ENV, default_cache_dir

logger = logging.getLogger(__name__)

Progress = Union[bool, ProgressFn, None]


@dataclass(frozen=True)
class DownloadOptions:
    """Transfer settings (rarely changed; a dataclass so tests and mirrors can tune them)."""

    chunk_bytes: int = 1 << 20
    timeout_s: float = 60.0
    user_agent: str = "knowledgesam-download"


def _progress_callback(progress: Progress, info: CheckpointInfo, total: int | None) -> tuple[ProgressFn | None, Any]:
    """Turn ``progress`` into a callback: True → a tqdm bar on stderr, a callable → itself, else none."""
    if callable(progress):
        return progress, None
    if not progress:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=info.name, file=sys.stderr)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return update, bar


def download_checkpoint(
    info: CheckpointInfo = SAM_VIT_B,
    cache_dir: str | os.PathLike | None = None,
    progress: Progress = True,
    force: bool = False,
    cancel: Any = None,
    options: DownloadOptions = DownloadOptions(),
) -> Path:
    """Return the path of a verified copy of ``info`` in ``cache_dir``, downloading it if needed.

    ``progress``: True for a tqdm bar, a ``(done, total)`` callable, or False. ``cancel``: any object with
    ``raise_if_cancelled()``. An existing file with a wrong hash is left alone (WeightsError) unless
    ``force``, which replaces it once a good copy has arrived. Works with ``file://`` URLs (mirrors, tests).
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    dest = folder / info.name
    if dest.exists() and not force:
        try:
            verify_checkpoint(dest, info, cancel=cancel)
        except WeightsError as error:
            raise WeightsError(f"{error}; the existing file was left untouched (re-download with --force)") from None
        logger.info("SAM checkpoint already present: %s", dest)
        return dest
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WeightsError(f"cannot create the download folder {folder}: {error.strerror or error}") from error
    if info.size_bytes:
        free = shutil.disk_usage(folder).free
        if free < info.size_bytes:
            raise WeightsError(
                f"not enough disk space in {folder} for {info.name}: {info.size_bytes:,} bytes needed, {free:,} free"
            )
    sha256, size, tmp = _stream_to_temp(info, folder, progress, cancel, options)
    try:
        if sha256 != info.sha256.lower():
            expected_size = f"{info.size_bytes:,}" if info.size_bytes else "unknown"
            raise WeightsError(
                f"download of {info.url} is corrupt: SHA256 expected {info.sha256}, found {sha256} "
                f"({size:,} bytes received, expected {expected_size}); nothing was saved"
            )
        give_default_permissions(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    remember_sha256(dest, sha256)
    logger.info("SAM checkpoint saved to %s", dest)
    return dest


def _stream_to_temp(
    info: CheckpointInfo, folder: Path, progress: Progress, cancel: Any, options: DownloadOptions
) -> tuple[str, int, Path]:
    """Copy ``info.url`` into a hidden temp file in ``folder``; return (sha256, bytes, temp path).

    Any failure or interruption (Ctrl-C, cancel) deletes the temp file before propagating.
    """
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{info.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    done = 0
    bar = None
    try:
        request = urllib.request.Request(info.url, headers={"User-Agent": options.user_agent})
        try:
            response = urllib.request.urlopen(request, timeout=options.timeout_s)
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise WeightsError(
                f"cannot download {info.url}: {reason}; download it with a browser and pass the file's path"
            ) from error
        with response, os.fdopen(fd, "wb") as out:
            fd = -1
            length = response.headers.get("Content-Length") if response.headers else None
            total = int(length) if length and length.isdigit() else (info.size_bytes or 0)
            callback, bar = _progress_callback(progress, info, total or None)
            while True:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                try:
                    chunk = response.read(options.chunk_bytes)
                except OSError as error:
                    raise WeightsError(f"download of {info.url} failed after {done:,} bytes: {error}") from error
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if callback is not None:
                    callback(done, total)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        if bar is not None:
            bar.close()
    return digest.hexdigest(), done, tmp


__all__ = ["default_cache_dir", "download_checkpoint", "DownloadOptions", "CACHE_ENV"]
