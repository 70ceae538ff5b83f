"""SAM's ViT attention on PyTorch's fused ``scaled_dot_product_attention`` (SDPA).

Why: segment-anything's ``Attention`` writes the attention matrix out (``q @ kᵀ``, add the decomposed relative
positions, softmax, ``@ v``): three full B·heads×N×N tensors per block, which on a GPU is memory traffic rather
than compute. SDPA computes the same softmax(q·kᵀ·scale + bias)·v in fused kernels (on CUDA the
memory-efficient kernel takes the additive relative-position bias). The weights and their names are untouched, so
checkpoints, LoRA (peft wraps ``qkv``) and saved models are the same; only ``forward`` changes. TinyViT uses SDPA
already.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ._sam_import import sam_modeling

__all__ = ["SdpaAttention", "use_sdpa_attention", "relative_position_bias"]

_Attention = sam_modeling.image_encoder.Attention
_get_rel_pos = sam_modeling.image_encoder.get_rel_pos


def relative_position_bias(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                           size: tuple[int, int]) -> torch.Tensor:
    """SAM's decomposed relative positions as an additive (B·heads)×N×N bias (``add_decomposed_rel_pos`` with a
    zero attention map); ``q`` is the unscaled query, (B·heads)×N×C, on an ``h×w`` grid."""
    h, w = size
    rh, rw = _get_rel_pos(h, h, rel_pos_h), _get_rel_pos(w, w, rel_pos_w)
    b, _, dim = q.shape
    r_q = q.reshape(b, h, w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    return (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(b, h * w, h * w)


class SdpaAttention(_Attention):
    """segment-anything's ``Attention`` (same parameters) computed with SDPA."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        bias = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w)) if self.use_rel_pos else None
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


def use_sdpa_attention(encoder: nn.Module, enabled: bool = True) -> nn.Module:
    """Switch every SAM attention block of ``encoder`` to SDPA (or back, ``enabled=False``), in place."""
    for module in encoder.modules():
        if isinstance(module, _Attention):
            module.__class__ = SdpaAttention if enabled else _Attention
    return encoder
