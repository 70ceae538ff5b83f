"""PrAdaptor: turns the knowledge prompt into inputs for SAM's mask prompt encoder (Eq. 1).

SAM's ``mask_downscaling`` takes a single-channel map at 4× the embedding grid. The reference mask
(KP_task) is area-resized to that size with no parameters, so DE_1 is exactly SAM's mask-prompt
embedding of the reference mask. The reference image (KP_instance, RGB) needs a learned projection to
one channel: a bilinear resize plus two tiny convolutions ("lightweight", ≈0.5 k parameters).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PrAdaptor(nn.Module):
    """Reference image and mask → the two single-channel maps SAM's mask prompt encoder takes."""

    def __init__(self, *, mask_input_size: int, hidden: int = 16, instance_mode: str = "image") -> None:
        """Arguments:
          mask_input_size: side of the maps (4 × the embedding grid, SAM's mask input size).
          hidden: channels of the image projection.
          instance_mode: "image" (RGB only) or "image+mask" (the mask as a fourth input channel).
        """
        super().__init__()
        self.mask_input_size = mask_input_size
        self.instance_mode = instance_mode
        in_channels = 4 if instance_mode == "image+mask" else 3
        self.instance = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(hidden, 1, kernel_size=1),
        )

    def forward(self, ref_image: torch.Tensor, ref_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``ref_image`` B×3×S×S (normalised), ``ref_mask`` B×1×S×S in [0, 1] → two B×1×4G×4G maps."""
        size = (self.mask_input_size, self.mask_input_size)
        mask = F.adaptive_avg_pool2d(ref_mask.to(ref_image.dtype), size)
        image = F.interpolate(ref_image, size=size, mode="bilinear", align_corners=False, antialias=True)
        if self.instance_mode == "image+mask":
            image = torch.cat([image, mask], dim=1)
        return self.instance(image), mask
