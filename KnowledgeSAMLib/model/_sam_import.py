"""Import ``segment_anything.modeling`` without torchvision.

``segment_anything/__init__.py`` imports the predictor and mask generator, which import torchvision;
torchvision is not a declared dependency of segment-anything and is often absent or mismatched
(e.g. a CPU torch build without a matching torchvision). The modelling code itself needs only torch.
When the package has not been imported yet, we register a bare package module whose ``__path__`` is the
installed folder (found without executing ``__init__``), then import ``segment_anything.modeling``.
If ``segment_anything`` is already imported (torchvision present), it is used as is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from ..errors import KnowledgeSAMError


def import_sam_modeling() -> types.ModuleType:
    """Return ``segment_anything.modeling`` whether or not torchvision is installed."""
    if "segment_anything" not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or not spec.submodule_search_locations:
            raise KnowledgeSAMError(
                "segment-anything is not installed; run `pip install segment-anything`"
            )
        package = types.ModuleType("segment_anything")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__file__ = spec.origin
        sys.modules["segment_anything"] = package
    return importlib.import_module("segment_anything.modeling")


sam_modeling = import_sam_modeling()
ImageEncoderViT = sam_modeling.ImageEncoderViT
PromptEncoder = sam_modeling.PromptEncoder
MaskDecoder = sam_modeling.MaskDecoder
TwoWayTransformer = sam_modeling.TwoWayTransformer

__all__ = ["import_sam_modeling", "ImageEncoderViT", "PromptEncoder", "MaskDecoder", "TwoWayTransformer"]
