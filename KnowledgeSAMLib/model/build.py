"""``build_model``: a KSAM from a config name or object, optionally on the official SAM weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .backbone import build_image_encoder, build_mask_decoder, build_prompt_encoder
from .config import KSAMConfig, get_config
from .ksam import KSAM


def _sam_target_shapes(config: KSAMConfig) -> dict[str, torch.Tensor]:
    """Empty (meta-device) tensors with the shapes a SAM checkpoint must take for ``config``."""
    with torch.device("meta"):
        parts = {
            "image_encoder": build_image_encoder(config),
            "prompt_encoder": build_prompt_encoder(config),
            "mask_decoder": build_mask_decoder(config),
        }
    return {f"{prefix}.{k}": v for prefix, module in parts.items() for k, v in module.state_dict().items()}


def build_model(name_or_config: str | KSAMConfig = "vit_b", sam_checkpoint: str | Path | None = None,
                verify_checkpoint: bool = True, expected_sha256: str | None = None) -> KSAM:
    """Build a KSAM model.

    ``sam_checkpoint`` is a local path to the official ``sam_vit_b_01ec64.pth``: its SHA256 is verified
    (``verify_checkpoint``), ``pos_embed`` and the global ``rel_pos`` tables are resized to the configured
    input size, and the weights load strictly before LoRA is injected. Nothing is ever downloaded here;
    see :func:`KnowledgeSAMLib.model.download.download_checkpoint` / ``knowledgesam download-sam``.
    ``expected_sha256`` overrides the official hash (used when reloading a model trained on another base).
    """
    config = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    sam_state = None
    if sam_checkpoint is not None:
        from .sam_checkpoint import SAM_VIT_B, adapt_sam_state_dict, file_sha256, load_sam_state_dict
        from .sam_checkpoint import verify_checkpoint as verify_sam_file

        path = Path(sam_checkpoint)
        info = SAM_VIT_B
        if expected_sha256 and expected_sha256.lower() != SAM_VIT_B.sha256:
            info = dataclasses.replace(SAM_VIT_B, name=path.name, sha256=expected_sha256.lower(), size_bytes=None)
        # The hash is recorded either way: saved models reference their base weights by it.
        sha256 = verify_sam_file(path, info=info) if verify_checkpoint else file_sha256(path)
        raw = load_sam_state_dict(path, verify=False)
        sam_state, _ = adapt_sam_state_dict(raw, _sam_target_shapes(config))
        config = config.replace(sam_checkpoint_sha256=sha256)
    return KSAM(config, sam_state_dict=sam_state)
