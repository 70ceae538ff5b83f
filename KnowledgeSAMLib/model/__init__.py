"""The KSAM model: tensors in, tensors out (knows nothing of files, volumes or Slicer)."""

from .build import build_model
from .config import KSAMConfig, get_config
from .ksam import KSAM, ReferencePrompt
from .weights import load_model, model_hash, save_model

__all__ = ["KSAM", "KSAMConfig", "ReferencePrompt", "build_model", "get_config", "load_model",
           "model_hash", "save_model"]
