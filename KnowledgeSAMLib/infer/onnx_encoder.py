"""The first version's entry points (``OnnxEncoder``, ``accelerate``), kept for their callers.

``accelerate(model, device)`` now picks the fastest CPU runtime installed (:mod:`.cpu_runtime`: OpenVINO, else
ONNX Runtime); the ONNX Runtime encoder itself lives in :mod:`.onnxruntime_backend`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .cpu_runtime import accelerate as _accelerate
from .onnx_export import onnx_cache_dir
from .onnxruntime_backend import OnnxEncoder, runtime_available

__all__ = ["OnnxEncoder", "accelerate", "onnx_cache_dir", "runtime_available"]


def accelerate(model: Any, device: torch.device | str = "cpu", *, threads: int | None = None,
               cache_dir: str | Path | None = None, quiet: bool = False) -> bool:
    """Run ``model``'s image encoder on the fastest CPU runtime installed; True when it now does (see
    :func:`.cpu_runtime.accelerate`, ``runtime="auto"``). Nothing changes on other devices."""
    return _accelerate(model, device, "auto", threads=threads, cache_dir=cache_dir, quiet=quiet) != "torch"
