"""SAM prompted by a point or a box, built from the same backbone builders and config as KSAM.

Why from our builders: the comparison must isolate the *prompt*. This model has exactly KSAM's image
encoder (same config, same LoRA/full-training rule), SAM's own :class:`PromptEncoder` and the same
:class:`BatchedMaskDecoder`; only the Knowledge Merge / Prompt Merge heads are missing, and the prompt is a
point or a box on the target instead of a reference image + mask. MedSA (point) and MedSAM (box)
fine-tune SAM this way. Trained by :mod:`.train_baseline`; the decoder's first (single-mask) output
is used, as SAM does for unambiguous prompts.

Weights are saved as safetensors + JSON (:func:`save_baseline` / :func:`load_baseline`), never pickles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from KnowledgeSAMLib.model.backbone import build_image_encoder, build_mask_decoder, build_prompt_encoder
from KnowledgeSAMLib.model.config import KSAMConfig, get_config
from KnowledgeSAMLib.model.lora import inject_lora

__all__ = ["SAMBase", "PromptedSAM", "build_prompted_sam", "save_baseline", "load_baseline", "PROMPT_KINDS"]

PROMPT_KINDS = ("point", "box")
_WEIGHTS, _META = "model.safetensors", "baseline.json"


class SAMBase(nn.Module):
    """Image encoder + prompt encoder + batched mask decoder from a :class:`KSAMConfig`, trainable as KSAM's."""

    kind = "sam"

    def __init__(self, config: KSAMConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = build_image_encoder(config)
        self.prompt_encoder = build_prompt_encoder(config)
        self.mask_decoder = build_mask_decoder(config)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1) / 255.0, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1) / 255.0, persistent=False)
        if config.encoder_training == "lora":
            inject_lora(self.image_encoder, config)  # base frozen, LoRA trainable (as KSAM)
        else:
            self.image_encoder.requires_grad_(config.encoder_training == "full")
        self.prompt_encoder.requires_grad_(config.train_prompt_encoder)
        self.mask_decoder.requires_grad_(not config.freeze_decoder)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×S×S images in [0, 1] → B×C×G×G embeddings (SAM's mean/std normalisation, as KSAM)."""
        s = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (s, s):
            raise ValueError(f"images must be B×3×{s}×{s}, got {tuple(images.shape)}")
        mean, std = self.pixel_mean.to(images.dtype), self.pixel_std.to(images.dtype)
        return self.image_encoder((images - mean) / std)

    def _upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        size = (self.config.image_size, self.config.image_size)
        return F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)

    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config.to_dict()}


class PromptedSAM(SAMBase):
    """SAM taking points (``prompt="point"``) or boxes (``prompt="box"``) through its PromptEncoder."""

    def __init__(self, config: KSAMConfig, prompt: str = "point") -> None:
        if prompt not in PROMPT_KINDS:
            raise ValueError(f"prompt must be one of {PROMPT_KINDS}, not {prompt!r}")
        super().__init__(config)
        self.prompt = prompt
        self.kind = prompt

    def decode(self, embeddings: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None = None,
               boxes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads on B×C×G×G embeddings with ``points`` = (B×K×2 (x, y) model pixels, B×K labels: 1 positive,
        0 negative, -1 padding) and/or ``boxes`` B×4 (x0, y0, x1, y1) → (B×1×S×S logits, B IoU scores)."""
        if points is None and boxes is None:
            raise ValueError("a prompted SAM needs points or boxes")
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=None)
        dense = dense.expand(embeddings.shape[0], -1, -1, -1)
        low_res, iou = self.mask_decoder.predict_batched(
            embeddings, self.prompt_encoder.get_dense_pe().to(embeddings.dtype), sparse.to(embeddings.dtype),
            dense.to(embeddings.dtype))
        return self._upscale(low_res), iou

    def forward(self, images: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None = None,
                boxes: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(images), points, boxes)[0]

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "prompt": self.prompt}


def build_prompted_sam(config: str | KSAMConfig = "small", prompt: str = "point") -> PromptedSAM:
    """A randomly initialised point- or box-prompted SAM on a named KSAM config (``tiny``/``small``/...)."""
    return PromptedSAM(get_config(config) if isinstance(config, str) else config, prompt)


def save_baseline(model: SAMBase, directory: str | Path) -> Path:
    """``model.safetensors`` + ``baseline.json`` (kind, config, extra fields) in ``directory``; the
    weights file is written last, through a temporary name, so a half-written folder never loads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / _META).write_text(json.dumps(model.metadata(), indent=1))
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = directory / f".{_WEIGHTS}.tmp"
    save_file(state, str(tmp))
    tmp.replace(directory / _WEIGHTS)
    return directory


def load_baseline(directory: str | Path) -> SAMBase:
    """Rebuild a model saved by :func:`save_baseline` (point, box or prompt-free)."""
    directory = Path(directory)
    if not (directory / _WEIGHTS).is_file():
        raise FileNotFoundError(f"{directory}: no {_WEIGHTS} (not a saved baseline)")
    meta = json.loads((directory / _META).read_text())
    config = KSAMConfig.from_dict(meta["config"])
    if meta["kind"] in PROMPT_KINDS:
        model: SAMBase = PromptedSAM(config, meta["kind"])
    elif meta["kind"] == "prompt_free":
        from .prompt_free import PromptFreeSAM

        model = PromptFreeSAM(config, meta["structures"])
    else:
        raise ValueError(f"{directory}: unknown baseline kind {meta['kind']!r}")
    model.load_state_dict(load_file(str(directory / _WEIGHTS)), strict=True)
    return model
