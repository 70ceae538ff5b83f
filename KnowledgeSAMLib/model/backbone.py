"""SAM's three parts, built from a :class:`KSAMConfig` at any input size.

``build_sam_vit_b`` hard-codes 1024 px, so the parts are constructed from the upstream classes
directly (KSAM_SPEC §5.2). The image encoder is SAM's ViT or LiteMedSAM's TinyViT (``config.encoder``).
Parameter names match the checkpoints (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), so an
(adapted) SAM or LiteMedSAM checkpoint loads strictly.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ._sam_import import ImageEncoderViT, PromptEncoder, TwoWayTransformer
from .batched_decoder import BatchedMaskDecoder
from .config import KSAMConfig
from .sdpa_attention import use_sdpa_attention
from .tiny_vit import TinyViT


def build_image_encoder(config: KSAMConfig) -> nn.Module:
    """SAM's ViT (``encoder="vit"``) or LiteMedSAM's TinyViT (``"tiny_vit"``), B×3×S×S → B×C×G×G.

    SAM's attention runs on SDPA (:mod:`.sdpa_attention`; same weights, |Δ| ~2e-6): 17 % faster for ``small`` on
    2 CPU threads, as fast for ``vit_b`` on a CPU, and fused kernels on a GPU."""
    if config.encoder == "tiny_vit":
        return TinyViT(embed_dims=config.tiny_vit_dims, depths=config.tiny_vit_depths, num_heads=config.tiny_vit_heads,
                       windows=config.tiny_vit_windows, merge_strides=config.tiny_vit_merge_strides,
                       mlp_ratio=config.encoder_mlp_ratio, out_chans=config.prompt_dim)
    return use_sdpa_attention(ImageEncoderViT(
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.encoder_embed_dim,
        depth=config.encoder_depth,
        num_heads=config.encoder_num_heads,
        mlp_ratio=config.encoder_mlp_ratio,
        out_chans=config.prompt_dim,
        qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        rel_pos_zero_init=True,
        window_size=config.encoder_window_size,
        global_attn_indexes=config.encoder_global_attn_indexes,
    ))


def build_prompt_encoder(config: KSAMConfig) -> PromptEncoder:
    grid = config.grid_size
    return PromptEncoder(
        embed_dim=config.prompt_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(config.image_size, config.image_size),
        mask_in_chans=config.mask_in_chans,
    )


def build_mask_decoder(config: KSAMConfig) -> BatchedMaskDecoder:
    return BatchedMaskDecoder(
        num_multimask_outputs=config.decoder_multimask_outputs,
        transformer=TwoWayTransformer(
            depth=config.decoder_depth,
            embedding_dim=config.prompt_dim,
            mlp_dim=config.decoder_mlp_dim,
            num_heads=config.decoder_num_heads,
        ),
        transformer_dim=config.prompt_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=config.decoder_iou_hidden,
    )


def sam_state_dict_keys(model: nn.Module) -> dict[str, torch.Tensor]:
    """The part of ``model.state_dict()`` that a SAM checkpoint provides (before LoRA injection)."""
    prefixes = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
    return {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
