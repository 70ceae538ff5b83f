"""KnowledgeSAMLib: knowledge-prompted segmentation (KSAM) on SAM ViT-B + LoRA.

Public API::

    from KnowledgeSAMLib import build_model, save_model, load_model, KSAMConfig

The names are imported lazily so that ``KnowledgeSAMLib.data`` (and Slicer's module scan) does not pay
for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "KSAMConfig": "KnowledgeSAMLib.model.config",
    "build_model": "KnowledgeSAMLib.model.build",
    "save_model": "KnowledgeSAMLib.model.weights",
    "load_model": "KnowledgeSAMLib.model.weights",
}

__all__ = ["KSAMConfig", "build_model", "save_model", "load_model", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'KnowledgeSAMLib' has no attribute {name!r}")
