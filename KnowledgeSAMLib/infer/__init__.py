"""The slice-wise inference engine: ``segment(SegmentRequest(...), model, progress, cancel)``.

See :mod:`.engine` for the loop, :mod:`.modes` for anchor / propagate / volume, :mod:`.output` for
labels and provenance files. ``segment`` is imported lazily so that importing the request types does
not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .cancel import CancelToken
from .request import EngineOptions, SegmentationResult, SegmentRequest

__all__ = ["segment", "SegmentRequest", "SegmentationResult", "EngineOptions", "CancelToken", "write_result",
           "ReferenceCache", "model_fingerprint", "relabel"]

_LAZY = {"segment": ".engine", "relabel": ".engine", "model_fingerprint": ".engine", "write_result": ".output",
         "ReferenceCache": ".reference"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
