"""SAM's ViT attention on SDPA computes what segment-anything's manual attention computes, LoRA included."""

from __future__ import annotations

import pytest
import torch

from KnowledgeSAMLib.model.build import build_model
from KnowledgeSAMLib.model.sdpa_attention import SdpaAttention, use_sdpa_attention


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_sdpa_attention_matches_the_manual_attention(name):
    torch.manual_seed(0)
    model = build_model(name, pretrained=False).eval()
    encoder = model.image_encoder
    attention = [m for m in encoder.modules() if isinstance(m, SdpaAttention)]
    assert attention, "the ViT's attention blocks are built on SDPA"
    with torch.no_grad():
        for block in attention:  # relative positions start at zero: give them values, or the bias is untested
            block.rel_pos_h.normal_(0, 0.5)
            block.rel_pos_w.normal_(0, 0.5)
    keys = list(encoder.state_dict())
    images = torch.rand(2, 3, model.config.image_size, model.config.image_size)
    with torch.no_grad():
        fused = encoder(images)
        manual = use_sdpa_attention(encoder, enabled=False)(images)
        assert not any(isinstance(m, SdpaAttention) for m in encoder.modules())
    assert float((fused - manual).abs().max()) < 1e-4 * float(manual.abs().max())
    assert list(encoder.state_dict()) == keys  # same parameter names: checkpoints and saved models load as before


def test_lora_gradients_flow_through_sdpa_attention():
    torch.manual_seed(0)
    model = build_model("tiny", pretrained=False)  # LoRA on qkv, through peft
    images = torch.rand(1, 3, 64, 64)
    model.encode(images).square().mean().backward()
    grads = [p.grad for n, p in model.image_encoder.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
