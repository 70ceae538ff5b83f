"""Knowledge Merge (KM): fuses the reference knowledge into the target embedding (mergedE).

The paper: VNet-like conv blocks with two branches; each block concatenates its two inputs on
channels, applies conv + nonlinearity, and splits the result back into two features; image features
are fused with the prompt features in depth and compressed into reduced dimensions.

Here: a 3-level two-branch U-net (grid G, G/2, G/4) of :class:`CrossBlock` s with skips. The output is a
zero-initialised residual on IE, so at initialisation ``mergedE == IE`` exactly and a pretrained SAM
decoder starts from its native input distribution.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossBlock(nn.Module):
    """concat(a, b) → Conv3×3 → GroupNorm → PReLU → split into (a', b') of ``out_channels`` each."""

    def __init__(self, in_a: int, in_b: int, out_channels: int, norm_groups: int = 1) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv = nn.Conv2d(in_a + in_b, 2 * out_channels, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(norm_groups, 2 * out_channels)
        self.act = nn.PReLU(2 * out_channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.act(self.norm(self.conv(torch.cat([a, b], dim=1))))
        return y[:, : self.out_channels], y[:, self.out_channels :]


class _BranchPair(nn.Module):
    """The same layer shape applied separately to the target and knowledge branches."""

    def __init__(self, make: type[nn.Module], *args: int, **kwargs: int) -> None:
        super().__init__()
        self.target = make(*args, **kwargs)
        self.knowledge = make(*args, **kwargs)

    def forward(self, t: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.target(t), self.knowledge(k)


class KnowledgeMerge(nn.Module):
    def __init__(self, dim: int, widths: tuple[int, int, int] = (128, 128, 128), norm_groups: int = 1) -> None:
        super().__init__()
        w0, w1, w2 = widths
        self.enc0 = CrossBlock(dim, dim, w0, norm_groups)
        self.down1 = _BranchPair(nn.Conv2d, w0, w0, kernel_size=2, stride=2)
        self.enc1 = CrossBlock(w0, w0, w1, norm_groups)
        self.down2 = _BranchPair(nn.Conv2d, w1, w1, kernel_size=2, stride=2)
        self.bottleneck = CrossBlock(w1, w1, w2, norm_groups)
        self.up1 = _BranchPair(nn.ConvTranspose2d, w2, w1, kernel_size=2, stride=2)
        self.dec1 = CrossBlock(2 * w1, 2 * w1, w1, norm_groups)
        self.up0 = _BranchPair(nn.ConvTranspose2d, w1, w0, kernel_size=2, stride=2)
        self.dec0 = CrossBlock(2 * w0, 2 * w0, w0, norm_groups)
        self.out = nn.Conv2d(2 * w0, dim, kernel_size=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, target_embedding: torch.Tensor, knowledge: torch.Tensor) -> torch.Tensor:
        """IE (B×C×G×G) and K0 = SE + DE_0 + DE_1 (B×C×G×G) → mergedE (B×C×G×G)."""
        t0, k0 = self.enc0(target_embedding, knowledge)
        t1, k1 = self.enc1(*self.down1(t0, k0))
        t2, k2 = self.bottleneck(*self.down2(t1, k1))
        u1t, u1k = self.up1(t2, k2)
        t1, k1 = self.dec1(torch.cat([u1t, t1], dim=1), torch.cat([u1k, k1], dim=1))
        u0t, u0k = self.up0(t1, k1)
        t0, k0 = self.dec0(torch.cat([u0t, t0], dim=1), torch.cat([u0k, k0], dim=1))
        return target_embedding + self.out(torch.cat([t0, k0], dim=1))
