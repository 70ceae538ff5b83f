"""LoRA on the SAM image encoder through peft (the paper's "LoRA r=4, referenced to MedSA").

peft's ``inject_adapter_in_model`` freezes every non-LoRA parameter of the module it is given and
renames ``qkv.weight`` to ``qkv.base_layer.weight``; so it is injected into the image encoder only, and
after the SAM checkpoint has been loaded.
"""

from __future__ import annotations

from torch import nn

from .config import KSAMConfig


def inject_lora(image_encoder: nn.Module, config: KSAMConfig) -> nn.Module:
    from peft import LoraConfig, inject_adapter_in_model

    lora_config = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        bias="none",
    )
    return inject_adapter_in_model(lora_config, image_encoder)


def lora_parameter_names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_parameters() if "lora_" in name]


def lora_parameter_count(config: KSAMConfig) -> int:
    """LoRA parameters for a config, computed from shapes (no model build; ViT-B r=4 → 516,096)."""
    import re

    d, hidden = config.encoder_embed_dim, int(config.encoder_embed_dim * config.encoder_mlp_ratio)
    shapes = {"attn.qkv": (d, 3 * d), "mlp.lin1": (d, hidden), "mlp.lin2": (hidden, d)}
    pattern = re.compile(config.lora_target_modules)
    total = 0
    for block in range(config.encoder_depth):
        for suffix, (fan_in, fan_out) in shapes.items():
            if pattern.fullmatch(f"blocks.{block}.{suffix}"):
                total += config.lora_rank * (fan_in + fan_out)
    return total
