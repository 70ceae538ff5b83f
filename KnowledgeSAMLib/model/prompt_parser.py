"""OnePrompt's Prompt Parser in an exact, memory-efficient form.

OnePrompt (MIT) correlates a learned element-wise mix of template and prompts with the query image,
sums over tokens, smooths the C×C correlation with a learnable 3×3 Gaussian, and returns
``Σ_x max(A[c,x]·q[n,c]·s[n,x], q[n,c]·s[n,x]) · s[n,x]``. Written that way it needs N×C×C activations
per sample (268 MB at N=1024, C=256). Because ``max(a·e, e) = e·max(a, 1)`` for e ≥ 0 and ``e·min(a, 1)``
for e < 0, and the sign of ``e = q_c·s_x`` factorises, the same result needs only four (N×C)@(C×C)
matmuls (KSAM_SPEC §5.5). :meth:`PromptParser.naive` keeps the literal form as a test oracle.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _gaussian_kernel(size: int = 3, sigma: float = 1.0) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    return kernel / kernel.sum()


class PromptParser(nn.Module):
    """OnePrompt's parser: the template re-weighted by its correlation with the query image."""

    def __init__(self, *, dim: int, mix_hidden: int = 12, normalise: bool = True) -> None:
        """Arguments:
          dim: token width C (the correlation is C×C).
          mix_hidden: hidden width of the element-wise mix MLP over (template, prompt 0, prompt 1).
          normalise: divide the output by C and LayerNorm it (ours; the raw output grows with C²).
        """
        super().__init__()
        self.dim = dim
        # Element-wise MLP over the stacked triple (template, prompt 0, prompt 1), per scalar.
        self.mix = nn.Sequential(nn.Linear(3, mix_hidden), nn.GELU(), nn.Linear(mix_hidden, 1))
        self.smooth = nn.Parameter(_gaussian_kernel())
        self.smooth_bias = nn.Parameter(torch.zeros(1))
        self.norm = nn.LayerNorm(dim) if normalise else None

    def correlation(self, q: torch.Tensor, t: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
        """A = G₃ₓ₃ ∗ (mixᵀ q) + bias, B×C×C."""
        m = self.mix(torch.stack([t, p0, p1], dim=-1)).squeeze(-1)  # B×N×C
        corr = m.transpose(1, 2) @ q  # B×C×C, [c, x] = Σ_n m[n,c] q[n,x]
        smoothed = F.conv2d(corr.unsqueeze(1), self.smooth.to(corr.dtype)[None, None], padding=1)
        return smoothed.squeeze(1) + self.smooth_bias.to(corr.dtype)

    def forward(self, q: torch.Tensor, t: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
        """Tokens B×N×C (query image, template, prompt 0, prompt 1) → parsed template B×N×C.

        Under autocast the parser runs in float32 and returns float32: its raw output grows with C² (36.5 k at
        random init for C = 256, against float16's 65.5 k limit), so float16 would overflow once it learns.
        """
        if torch.is_autocast_enabled(q.device.type):
            with torch.autocast(q.device.type, enabled=False):
                return self._forward(*(x.float() for x in (q, t, p0, p1)))
        return self._forward(q, t, p0, p1)

    def _forward(self, q: torch.Tensor, t: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
        out = self.parse(q, t, p0, p1)
        if self.norm is not None:
            out = self.norm(out / self.dim)
        return out

    def parse(self, q: torch.Tensor, t: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
        """The exact OnePrompt result without the stabilising normalisation."""
        s = t + p0 + p1
        a = self.correlation(q, t, p0, p1)
        a_pos, a_neg = a.clamp(min=1.0), a.clamp(max=1.0)
        s_pos, s_neg = F.relu(s).square(), F.relu(-s).square()
        # out[n, c] = Σ_x S[n, x] · f(A[c, x])  →  S @ f(A)ᵀ
        when_q_pos = s_pos @ a_pos.transpose(1, 2) + s_neg @ a_neg.transpose(1, 2)
        when_q_neg = s_pos @ a_neg.transpose(1, 2) + s_neg @ a_pos.transpose(1, 2)
        return q * torch.where(q >= 0, when_q_pos, when_q_neg)

    def naive(self, q: torch.Tensor, t: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor) -> torch.Tensor:
        """Literal OnePrompt form (N×C×C memory): the oracle that :meth:`parse` must equal."""
        s = t + p0 + p1
        m = self.mix(torch.stack([t, p0, p1], dim=-1)).squeeze(-1)
        full = m.unsqueeze(-1) * q.unsqueeze(-2)  # B×N×C×C: [n, c, x] = m[n,c] q[n,x]
        kernel = self.smooth.to(q.dtype)[None, None].expand(1, full.shape[1], 3, 3)
        a = F.conv2d(full, kernel, padding=1).squeeze(1) + self.smooth_bias.to(q.dtype)  # B×C×C
        e = q.unsqueeze(-1) * s.unsqueeze(-2)  # B×N×C×C: q[n,c] s[n,x]
        energy = torch.maximum(a.unsqueeze(1) * e, e)
        return (energy * s.unsqueeze(-2)).sum(-1)


def parser_memory_bytes(tokens: int, dim: int, naive: bool, bytes_per_value: int = 4) -> int:
    """Activation memory of one parser call per sample (for docs and the benchmark)."""
    return bytes_per_value * (tokens * dim * dim if naive else tokens * dim * 4 + dim * dim * 3)

