"""The slice-wise inference engine: ``segment(SegmentRequest(...), model, progress, cancel)``, and the
front-end-neutral :class:`Segmenter` around it (model cache, reference cache, checks, provenance).

See :mod:`.segmenter` for what front-ends call, :mod:`.engine` for the loop, :mod:`.modes` for anchor /
propagate / volume, :mod:`.output` for labels and provenance files, :mod:`.paths` for target and output
file names. ``segment`` is imported lazily so that importing the request types does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .cancel import CancelToken
from .request import EngineOptions, SegmentationResult, SegmentRequest

__all__ = ["segment", "SegmentRequest", "SegmentationResult", "EngineOptions", "CancelToken", "write_result",
           "ReferenceCache", "model_fingerprint", "relabel", "Segmenter", "Sources"]

_LAZY = {"segment": ".engine", "relabel": ".engine", "model_fingerprint": ".engine", "write_result": ".output",
         "ReferenceCache": ".reference", "Segmenter": ".segmenter", "Sources": ".provenance"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
