"""SAM / LiteMedSAM prompted with boxes: the peer a MedSAM user gets for drawing a box on each slice.

KSAM replaces boxes by a knowledge prompt; to say what that buys, the benchmarks compare it with the same
pretrained network prompted the way it was trained (LiteMedSAM: one box per object). The parts are the ones
:func:`~KnowledgeSAMLib.model.build.build_model` loads, so the box model and a KSAM built on the same base
share their encoder embeddings.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["BoxPromptedSAM", "build_box_model"]


class BoxPromptedSAM(nn.Module):
    """Image encoder + prompt encoder (boxes) + mask decoder, SAM's single-mask output."""

    def __init__(self, *, image_encoder: nn.Module, prompt_encoder: nn.Module, mask_decoder: nn.Module,
                 image_size: int, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> None:
        """Arguments:
          image_encoder, prompt_encoder, mask_decoder: pretrained SAM parts (``BatchedMaskDecoder``).
          image_size: S, the square input side the parts were built for.
          pixel_mean, pixel_std: 1×3×1×1 normalisation of [0, 1] images (zeros and ones for LiteMedSAM).
        """
        super().__init__()
        self.image_encoder, self.prompt_encoder, self.mask_decoder = image_encoder, prompt_encoder, mask_decoder
        self.image_size = image_size
        self.register_buffer("pixel_mean", pixel_mean.detach().clone(), persistent=False)
        self.register_buffer("pixel_std", pixel_std.detach().clone(), persistent=False)

    @classmethod
    def from_ksam(cls, model) -> "BoxPromptedSAM":
        """The pretrained parts of a KSAM model (shared, not copied)."""
        return cls(image_encoder=model.image_encoder, prompt_encoder=model.prompt_encoder,
                   mask_decoder=model.mask_decoder, image_size=model.config.image_size,
                   pixel_mean=model.pixel_mean, pixel_std=model.pixel_std)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×S×S images in [0, 1] → B×C×G×G embeddings."""
        return self.image_encoder((images - self.pixel_mean) / self.pixel_std)

    def decode(self, embeddings: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings and B×4 boxes (x0, y0, x1, y1 in model pixels) → (B×1×S×S logits, B IoU scores)."""
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes.reshape(-1, 1, 4).to(embeddings.dtype),
                                            masks=None)
        pe = self.prompt_encoder.get_dense_pe().to(embeddings.dtype)
        low_res, iou = self.mask_decoder.predict_batched(embeddings, pe, sparse, dense)
        size = (self.image_size, self.image_size)
        return F.interpolate(low_res, size=size, mode="bilinear", align_corners=False), iou

    def forward(self, images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images), boxes)[0]


def build_box_model(name: str = "lite", sam_checkpoint: str | Path | None = None, *, sam_sha256: str | None = None,
                    pretrained: bool = True) -> BoxPromptedSAM:
    """The box-prompted network of a named config's pretrained base (LiteMedSAM for ``lite``)."""
    from .build import build_model

    model = build_model(name, sam_checkpoint, sam_sha256=sam_sha256, pretrained=pretrained)
    return BoxPromptedSAM.from_ksam(model).eval()
