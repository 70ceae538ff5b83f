"""Prompt Merge (PM): four two-branch attention blocks that turn the knowledge prompt into promptE.

Each block takes the four features (target image X, reference image R, DE_0, DE_1):

1. prompt branch — OnePrompt's Prompt Parser replaces cross-attention: ``R ← LN(R + Parser(X, R, P0, P1))``;
2. image branch — masked cross-attention (Eq. 3, H-SAM style): ``X ← LN(X + Attn(X+PE, R+PE, R, gate))``
   where the post-softmax probabilities are multiplied by a per-key gate, without renormalisation, so
   background keys keep a small weight: σ(Linear(DE_1)) (``mask_attention="key_gate"``, ours: learnable) or
   σ(mean over channels of DE_1) (``"de1"``, the paper's σ(DE_1) of Eq. 3);
3. a shared MLP (one module for both streams, as OnePrompt's code reuses one MLP).

The head sums a shared output MLP of both streams, average-pools the token grid to K tokens and
projects them: promptE (B×K×C), the prompt tokens of SAM's mask decoder. With ``grid`` set, the four
inputs are average-pooled to ``grid × grid`` first: attention over LiteMedSAM's 64² = 4096 tokens would
cost more than its encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .prompt_parser import PromptParser


class GatedAttention(nn.Module):
    """SAM-style attention (q/k/v/out projections, optional internal downsampling) with a key gate."""

    def __init__(self, *, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        """Arguments:
          dim: token width.
          num_heads: attention heads (must divide dim / downsample_rate).
          downsample_rate: q/k/v are projected to dim / downsample_rate channels (SAM's decoder does the same).
        """
        super().__init__()
        self.internal_dim = dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide dim / downsample_rate")
        self.q_proj = nn.Linear(dim, self.internal_dim)
        self.k_proj = nn.Linear(dim, self.internal_dim)
        self.v_proj = nn.Linear(dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_gate: torch.Tensor | None = None) -> torch.Tensor:
        """``key_gate`` (B×Nk, values in (0, 1)) multiplies the attention probabilities of each key."""
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1]), dim=-1)
        if key_gate is not None:
            attn = attn * key_gate[:, None, None, :].to(attn.dtype)
        out = (attn @ v).transpose(1, 2).flatten(2)
        return self.out_proj(out)


class FeedForward(nn.Module):
    """Linear → GELU → Linear."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        """Arguments:
          dim: token width (input and output).
          hidden: width of the hidden layer.
        """
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PromptMergeBlock(nn.Module):
    """One two-branch block: parser on the prompt stream, gated cross-attention on the image stream, a shared MLP."""

    def __init__(self, *, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int = 2,
                 mask_attention: str = "key_gate", parser_normalise: bool = True, mix_hidden: int = 12) -> None:
        """Arguments:
          dim: token width (C).
          num_heads, downsample_rate: of the cross-attention (see :class:`GatedAttention`).
          mlp_dim: hidden width of the shared MLP.
          mask_attention: "key_gate" (σ(Linear(DE_1))), "de1" (σ(mean_c DE_1), the paper) or "none".
          parser_normalise, mix_hidden: of the :class:`PromptParser`.
        """
        super().__init__()
        if mask_attention not in ("key_gate", "de1", "none"):
            raise ValueError(f"mask_attention must be key_gate, de1 or none, not {mask_attention!r}")
        self.mask_attention = mask_attention
        self.parser = PromptParser(dim=dim, mix_hidden=mix_hidden, normalise=parser_normalise)
        self.norm_prompt = nn.LayerNorm(dim)
        self.cross_attn = GatedAttention(dim=dim, num_heads=num_heads, downsample_rate=downsample_rate)
        self.gate = nn.Linear(dim, 1) if mask_attention == "key_gate" else None
        self.norm_image = nn.LayerNorm(dim)
        self.shared_mlp = FeedForward(dim=dim, hidden=mlp_dim)
        self.norm_image_mlp = nn.LayerNorm(dim)
        self.norm_prompt_mlp = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, r: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor,
                pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.norm_prompt(r + self.parser(x, r, p0, p1))
        if self.gate is not None:
            gate = torch.sigmoid(self.gate(p1)).squeeze(-1)
        elif self.mask_attention == "de1":
            gate = torch.sigmoid(p1.mean(dim=-1))
        else:
            gate = None
        x = self.norm_image(x + self.cross_attn(x + pe, r + pe, r, key_gate=gate))
        x = self.norm_image_mlp(x + self.shared_mlp(x))
        r = self.norm_prompt_mlp(r + self.shared_mlp(r))
        return x, r


class PromptMerge(nn.Module):
    """Four-input, two-branch attention blocks → K prompt tokens for SAM's mask decoder."""

    def __init__(self, *, dim: int, depth: int = 4, num_heads: int = 8, mlp_dim: int = 1024,
                 downsample_rate: int = 2, num_tokens: int = 16, grid: int = 0, mask_attention: str = "key_gate",
                 parser_normalise: bool = True, mix_hidden: int = 12) -> None:
        """Arguments:
          dim: token width (C).
          depth: number of :class:`PromptMergeBlock` s (the paper: four).
          num_heads, mlp_dim, downsample_rate, mask_attention, parser_normalise, mix_hidden: of each block.
          num_tokens: prompt tokens returned (a square number): the fused grid is average-pooled to them.
          grid: side of the token grid the blocks attend over (inputs average-pooled to it); 0 = as given.
        """
        super().__init__()
        self.blocks = nn.ModuleList(
            PromptMergeBlock(dim=dim, num_heads=num_heads, mlp_dim=mlp_dim, downsample_rate=downsample_rate,
                             mask_attention=mask_attention, parser_normalise=parser_normalise, mix_hidden=mix_hidden)
            for _ in range(depth)
        )
        self.output_mlp = FeedForward(dim=dim, hidden=mlp_dim)  # shared by both streams
        self.tokens_side = round(num_tokens**0.5)
        self.grid = grid
        self.token_proj = nn.Linear(dim, dim)

    @staticmethod
    def _tokens(grid: torch.Tensor) -> torch.Tensor:
        return grid.flatten(2).transpose(1, 2)  # B×C×G×G → B×G²×C

    def forward(self, image: torch.Tensor, reference: torch.Tensor, de0: torch.Tensor, de1: torch.Tensor,
                dense_pe: torch.Tensor) -> torch.Tensor:
        """Grids B×C×G×G (IE or mergedE, SE, DE_0, DE_1) and PE 1×C×G×G → promptE B×K×C."""
        if self.grid and image.shape[-1] != self.grid:
            image, reference, de0, de1, dense_pe = (F.adaptive_avg_pool2d(t, self.grid)
                                                    for t in (image, reference, de0, de1, dense_pe))
        b, c, g, _ = image.shape
        x, r = self._tokens(image), self._tokens(reference)
        p0, p1 = self._tokens(de0), self._tokens(de1)
        pe = self._tokens(dense_pe)
        for block in self.blocks:
            x, r = block(x, r, p0, p1, pe)
        fused = self.output_mlp(x) + self.output_mlp(r)  # B×N×C
        grid = fused.transpose(1, 2).reshape(b, c, g, g)
        pooled = F.adaptive_avg_pool2d(grid, self.tokens_side)
        return self.token_proj(self._tokens(pooled))
