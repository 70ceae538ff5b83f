"""Knowledge Merge (KM): fuses the reference knowledge into the target embedding (mergedE).

The paper: VNet-like conv blocks with two branches; each block concatenates its two inputs on
channels, applies conv + nonlinearity, and splits the result back into two features; image features
are fused with the prompt features in depth and compressed into reduced dimensions.

Here: a 3-level two-branch U-net (grid G, G/2, G/4) of :class:`CrossBlock` s with skips. By default the
output is a zero-initialised residual on IE (``output="residual"``), so at initialisation ``mergedE == IE``
exactly and a pretrained SAM decoder starts from its native input distribution; ``output="replace"`` is the
paper's form (mergedE is KM's output). With ``stride`` > 1 the U-net runs on the grid average-pooled by that
factor and a transposed convolution brings its output back to the grid (LiteMedSAM's 64² grid at full width
would cost ~10 GMAC per slice).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F


class CrossBlock(nn.Module):
    """concat(a, b) → Conv3×3 → GroupNorm → PReLU → split into (a', b') of ``out_channels`` each."""

    def __init__(self, *, in_a: int, in_b: int, out_channels: int, norm_groups: int = 1) -> None:
        """Arguments:
          in_a, in_b: channels of the two branches' inputs.
          out_channels: channels of each branch's output.
          norm_groups: GroupNorm groups over the 2·out_channels joint output.
        """
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_a + in_b, 2 * out_channels, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(norm_groups, 2 * out_channels)
        self.act = nn.PReLU(2 * out_channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.act(self.norm(self.conv(torch.cat([a, b], dim=1))))
        return y[:, : self.out_channels], y[:, self.out_channels :]


class BranchPair(nn.Module):
    """The same layer shape applied separately to the target and knowledge branches."""

    def __init__(self, *, target: nn.Module, knowledge: nn.Module) -> None:
        """Arguments:
          target: the layer applied to the target (image embedding) branch.
          knowledge: a layer of the same shape, with its own weights, applied to the knowledge branch.
        """
        super().__init__()
        self.target = target
        self.knowledge = knowledge

    def forward(self, t: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target(t), self.knowledge(k)


def _down(channels: int) -> BranchPair:
    return BranchPair(target=nn.Conv2d(channels, channels, 2, stride=2),
                      knowledge=nn.Conv2d(channels, channels, 2, stride=2))


def _up(in_channels: int, out_channels: int) -> BranchPair:
    return BranchPair(target=nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2),
                      knowledge=nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2))


class KnowledgeMerge(nn.Module):
    def __init__(self, *, dim: int, widths: tuple[int, int, int] = (128, 128, 128), norm_groups: int = 1,
                 stride: int = 1, output: Literal["residual", "replace"] = "residual") -> None:
        """Arguments:
          dim: channels of IE and of the knowledge map (the prompt dimension C).
          widths: channels of each branch at the three levels of the U-net.
          norm_groups: GroupNorm groups in every :class:`CrossBlock`.
          stride: the U-net runs on the grid average-pooled by this factor (1 = the grid itself).
          output: "residual" (mergedE = IE + KM, zero-initialised) or "replace" (mergedE = KM, the paper).
        """
        super().__init__()
        if output not in ("residual", "replace"):
            raise ValueError(f"KnowledgeMerge output must be residual or replace, not {output!r}")
        w0, w1, w2 = widths
        self.stride = stride
        self.output = output
        self.enc0 = CrossBlock(in_a=dim, in_b=dim, out_channels=w0, norm_groups=norm_groups)
        self.down1 = _down(w0)
        self.enc1 = CrossBlock(in_a=w0, in_b=w0, out_channels=w1, norm_groups=norm_groups)
        self.down2 = _down(w1)
        self.bottleneck = CrossBlock(in_a=w1, in_b=w1, out_channels=w2, norm_groups=norm_groups)
        self.up1 = _up(w2, w1)
        self.dec1 = CrossBlock(in_a=2 * w1, in_b=2 * w1, out_channels=w1, norm_groups=norm_groups)
        self.up0 = _up(w1, w0)
        self.dec0 = CrossBlock(in_a=2 * w0, in_b=2 * w0, out_channels=w0, norm_groups=norm_groups)
        if stride == 1:
            self.out = nn.Conv2d(2 * w0, dim, kernel_size=1)
        else:
            self.out = nn.ConvTranspose2d(2 * w0, dim, kernel_size=stride, stride=stride)
        if output == "residual":
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, target_embedding: torch.Tensor, knowledge: torch.Tensor) -> torch.Tensor:
        """IE (B×C×G×G) and K0 = SE + DE_0 + DE_1 (B×C×G×G) → mergedE (B×C×G×G)."""
        t, k = target_embedding, knowledge
        if self.stride > 1:
            t, k = F.avg_pool2d(t, self.stride), F.avg_pool2d(k, self.stride)
        t0, k0 = self.enc0(t, k)
        t1, k1 = self.enc1(*self.down1(t0, k0))
        t2, k2 = self.bottleneck(*self.down2(t1, k1))
        u1t, u1k = self.up1(t2, k2)
        t1, k1 = self.dec1(torch.cat([u1t, t1], dim=1), torch.cat([u1k, k1], dim=1))
        u0t, u0k = self.up0(t1, k1)
        t0, k0 = self.dec0(torch.cat([u0t, t0], dim=1), torch.cat([u0k, k0], dim=1))
        merged = self.out(torch.cat([t0, k0], dim=1))
        return target_embedding + merged if self.output == "residual" else merged
