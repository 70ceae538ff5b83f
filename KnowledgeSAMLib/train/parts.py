"""Which parts of a model learn in a run (``model.trainable``): as its config says, only the heads, or only LoRA.

Why a training-time choice and not a model-config change: fine-tuning a saved model on a few cases is safer
when fewer weights move (LoRA only: the heads that work elsewhere stay; heads only: the encoder, and so any
cached embedding of it, stays), yet the saved model must still load as the model it is. So the choice is
applied to ``requires_grad`` after the model is built, and :func:`restore_trainable` puts the model's own
flags back before it is saved (a LoRA model fine-tuned heads-only still stores its LoRA weights).
"""

from __future__ import annotations

from torch import nn

from ..errors import InputError

__all__ = ["select_trainable", "restore_trainable", "HEAD_PARTS"]

HEAD_PARTS = ("adaptor", "knowledge_merge", "prompt_merge", "prompt_encoder", "mask_decoder")


def select_trainable(model: nn.Module, which: str) -> dict[str, bool]:
    """Set ``requires_grad`` for ``which`` (``model``, ``heads`` or ``lora``); returns the flags it replaced."""
    before = {name: p.requires_grad for name, p in model.named_parameters()}
    if which == "model":
        return before
    if which not in ("heads", "lora"):
        raise InputError(f"model.trainable must be model, heads or lora, got {which!r}")
    lora = [p for name, p in model.named_parameters() if "lora_" in name]
    if which == "lora" and not lora:
        encoder_training = getattr(getattr(model, "config", None), "encoder_training", "?")
        raise InputError(f"model.trainable: lora needs a model with LoRA adapters (encoder_training: lora); this "
                         f"model's encoder_training is {encoder_training!r}")
    model.requires_grad_(False)
    if which == "lora":
        for p in lora:
            p.requires_grad_(True)
    else:
        for part in HEAD_PARTS:
            module = getattr(model, part, None)
            if module is not None:
                module.requires_grad_(True)
    return before


def restore_trainable(model: nn.Module, flags: dict[str, bool]) -> None:
    """Put back the flags :func:`select_trainable` returned."""
    for name, p in model.named_parameters():
        if name in flags:
            p.requires_grad_(flags[name])
