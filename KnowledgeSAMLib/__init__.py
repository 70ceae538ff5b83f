"""KnowledgeSAMLib: knowledge-prompted segmentation (KSAM) on SAM ViT-B + LoRA.

Public API::

    from KnowledgeSAMLib import build_model, save_model, load_model, KSAMConfig
"""

from __future__ import annotations

__version__ = "0.1.0"

from .model.config import KSAMConfig  # noqa: E402
from .model.build import build_model  # noqa: E402
from .model.weights import load_model, save_model  # noqa: E402

__all__ = ["KSAMConfig", "build_model", "save_model", "load_model", "__version__"]
