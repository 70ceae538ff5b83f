"""How large an image may be before we read it: a limit derived from the memory this machine has free.

Why: a file's header says how many voxels follow, and readers allocate that much before they find out
whether the data is there. A 1 KB NRRD declaring 1600³ voxels drove a run to 8 GB before ITK gave up.
:mod:`.header` reads the header first and refuses images whose decoded size is beyond this limit, naming
the file, the size and the limit. The default is a quarter of the memory available now (reading,
converting and segmenting hold about two to three copies of the image); ``--max-image-gb`` or
``$KNOWLEDGESAM_MAX_IMAGE_GB`` set it explicitly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

__all__ = ["ImageSizeLimit", "available_memory", "ENV_MAX_IMAGE_GB", "MEMORY_SHARE", "format_bytes"]

ENV_MAX_IMAGE_GB = "KNOWLEDGESAM_MAX_IMAGE_GB"
MEMORY_SHARE = 4  # one image may take 1/MEMORY_SHARE of the available memory
FALLBACK_AVAILABLE = 8 << 30  # when the platform does not say how much memory is free
_GB = 1 << 30


def format_bytes(count: float) -> str:
    """``4.1 GB``, ``312 MB``, ``12 KB``: sizes as a user reads them (binary units)."""
    for unit, scale in (("GB", _GB), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _windows_available() -> int | None:  # pragma: no cover - exercised on Windows only
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = MemoryStatus()
    status.dwLength = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):
        return None
    return int(status.ullAvailPhys)


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (Linux MemAvailable, else the free pages)."""
    found = _meminfo_available()
    if found is None and sys.platform == "win32":
        found = _windows_available()
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            found = None
    return int(found) if found else FALLBACK_AVAILABLE


@dataclass(frozen=True)
class ImageSizeLimit:
    """The most bytes one decoded image may take in memory, and why (shown when an image is refused)."""

    max_bytes: int
    reason: str

    @classmethod
    def from_gb(cls, gigabytes: float, reason: str | None = None) -> "ImageSizeLimit":
        if not gigabytes > 0:
            raise ValueError(f"an image size limit must be positive, got {gigabytes} GB")
        return cls(int(gigabytes * _GB), reason or f"set to {gigabytes:g} GB")

    @classmethod
    def default(cls) -> "ImageSizeLimit":
        """``$KNOWLEDGESAM_MAX_IMAGE_GB`` when set, else a quarter of the memory available now."""
        text = os.environ.get(ENV_MAX_IMAGE_GB, "").strip()
        if text:
            try:
                return cls.from_gb(float(text), f"set by {ENV_MAX_IMAGE_GB}={text}")
            except ValueError:
                pass  # a nonsense value falls back to the memory-derived limit
        available = available_memory()
        return cls(available // MEMORY_SHARE,
                   f"1/{MEMORY_SHARE} of the {format_bytes(available)} of memory available")

    def describe(self) -> str:
        return f"{format_bytes(self.max_bytes)} ({self.reason})"
