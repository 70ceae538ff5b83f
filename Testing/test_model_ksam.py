"""The KSAM model on CPU with the tiny config: shapes, exactness of the re-implemented parts, peft, I/O."""

from __future__ import annotations

import json

import subprocess
import sys

import pytest
import torch

from KnowledgeSAMLib import KSAMConfig, build_model, load_model, save_model
from KnowledgeSAMLib.model._sam_import import MaskDecoder, TwoWayTransformer
from KnowledgeSAMLib.model.batched_decoder import BatchedMaskDecoder
from KnowledgeSAMLib.model.config import get_config
from KnowledgeSAMLib.model.knowledge_merge import KnowledgeMerge
from KnowledgeSAMLib.model.lora import lora_parameter_count
from KnowledgeSAMLib.model.prompt_merge import GatedAttention, PromptMerge
from KnowledgeSAMLib.model.prompt_parser import PromptParser
from KnowledgeSAMLib.model.weights import model_hash


def _inputs(batch: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(batch, 3, size, size, generator=g)
    ref = torch.rand(batch, 3, size, size, generator=g)
    mask = (torch.rand(batch, 1, size, size, generator=g) > 0.5).float()
    return target, ref, mask


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("tiny").eval()
    # Give the zero-initialised parts some weight so outputs depend on every input.
    with torch.no_grad():
        for p in model.knowledge_merge.out.parameters():
            p.normal_(0, 0.1)
    return model


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_of_every_stage(tiny, batch):
    cfg = tiny.config
    s, g, c = cfg.image_size, cfg.grid_size, cfg.prompt_dim
    target, ref, mask = _inputs(batch, s)
    ie = tiny.encode(target)
    assert ie.shape == (batch, c, g, g)
    prompt = tiny.encode_reference(ref, mask)
    for tensor in (prompt.embedding, prompt.de0, prompt.de1):
        assert tensor.shape == (batch, c, g, g)
    inst, m = tiny.adaptor(tiny.normalise(ref), mask)
    assert inst.shape == m.shape == (batch, 1, 4 * g, 4 * g)
    merged = tiny.knowledge_merge(ie, prompt.embedding + prompt.de0 + prompt.de1)
    assert merged.shape == ie.shape
    tokens = tiny.prompt_merge(ie, prompt.embedding, prompt.de0, prompt.de1, tiny.prompt_encoder.get_dense_pe())
    assert tokens.shape == (batch, cfg.pm_tokens, c)
    logits, iou = tiny.decode(ie, prompt)
    assert logits.shape == (batch, 1, s, s) and iou.shape == (batch,)
    assert tiny(target, ref, mask).shape == (batch, 1, s, s)


def test_single_reference_broadcasts_over_a_batch_of_targets(tiny):
    target, ref, mask = _inputs(3, tiny.config.image_size)
    with torch.no_grad():
        prompt = tiny.encode_reference(ref[:1], mask[:1])
        batched, _ = tiny.decode(tiny.encode(target), prompt)
        one_by_one = torch.cat([tiny.decode(tiny.encode(target[i : i + 1]), prompt)[0] for i in range(3)])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-4)


def test_forward_equals_encode_then_decode(tiny):
    target, ref, mask = _inputs(2, tiny.config.image_size)
    with torch.no_grad():
        direct = tiny(target, ref, mask)
        staged, _ = tiny.decode(tiny.encode(target), tiny.encode_reference(ref, mask))
    torch.testing.assert_close(direct, staged, atol=1e-5, rtol=1e-4)


def test_bad_input_shapes_are_refused(tiny):
    with pytest.raises(ValueError, match="B×3×64×64"):
        tiny.encode(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="reference masks"):
        tiny.encode_reference(torch.rand(1, 3, 64, 64), torch.rand(1, 64, 64))


def test_batched_decoder_equals_upstream_for_batch_one():
    torch.manual_seed(1)
    kwargs = dict(transformer_dim=32, transformer=TwoWayTransformer(depth=2, embedding_dim=32, num_heads=2, mlp_dim=64),
                  num_multimask_outputs=3, iou_head_hidden_dim=32)
    upstream = MaskDecoder(**kwargs).eval()
    ours = BatchedMaskDecoder(**kwargs).eval()
    ours.load_state_dict(upstream.state_dict(), strict=True)
    emb, pe = torch.randn(1, 32, 8, 8), torch.randn(1, 32, 8, 8)
    tokens, dense = torch.randn(1, 5, 32), torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        ref_masks, ref_iou = upstream(emb, pe, tokens, dense, multimask_output=False)
        masks, iou = ours.predict_batched(emb, pe, tokens, dense)
    torch.testing.assert_close(masks, ref_masks)
    torch.testing.assert_close(iou, ref_iou[:, 0])


def test_batched_decoder_keeps_samples_independent():
    torch.manual_seed(2)
    dec = BatchedMaskDecoder(transformer_dim=32, transformer=TwoWayTransformer(depth=1, embedding_dim=32, num_heads=2,
                             mlp_dim=64), iou_head_hidden_dim=32).eval()
    emb, pe, tokens, dense = torch.randn(3, 32, 8, 8), torch.randn(1, 32, 8, 8), torch.randn(3, 4, 32), torch.randn(3, 32, 8, 8)
    with torch.no_grad():
        batched, _ = dec.predict_batched(emb, pe, tokens, dense)
        single, _ = dec.predict_batched(emb[1:2], pe, tokens[1:2], dense[1:2])
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=1e-4)


def test_efficient_parser_equals_naive_parser_in_float64():
    torch.manual_seed(3)
    parser = PromptParser(dim=16).double()
    with torch.no_grad():
        parser.smooth_bias.fill_(0.3)  # move A around 1 so both max branches occur
    q, t, p0, p1 = (torch.randn(2, 20, 16, dtype=torch.float64) for _ in range(4))
    with torch.no_grad():
        fast, slow = parser.parse(q, t, p0, p1), parser.naive(q, t, p0, p1)
    assert (parser.correlation(q, t, p0, p1) > 1).any() and (parser.correlation(q, t, p0, p1) < 1).any()
    assert torch.allclose(fast, slow, atol=1e-9, rtol=1e-9)


def test_knowledge_merge_starts_as_identity():
    torch.manual_seed(4)
    km = KnowledgeMerge(dim=32, widths=(16, 16, 16))
    ie, knowledge = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 8, 8)
    assert torch.equal(km(ie, knowledge), ie)


def test_mask_gate_of_ones_is_plain_attention_and_zero_removes_keys():
    torch.manual_seed(5)
    attn = GatedAttention(dim=16, num_heads=2, downsample_rate=2)
    q, k, v = torch.randn(2, 6, 16), torch.randn(2, 10, 16), torch.randn(2, 10, 16)
    plain = attn(q, k, v)
    torch.testing.assert_close(attn(q, k, v, key_gate=torch.ones(2, 10)), plain)
    gate = torch.ones(2, 10)
    gate[:, 3:] = 0
    v_changed = v.clone()
    v_changed[:, 3:] = torch.randn(2, 7, 16) * 100  # gated-out keys' values must not matter
    torch.testing.assert_close(attn(q, k, v, key_gate=gate), attn(q, k, v_changed, key_gate=gate))
    assert not torch.allclose(attn(q, k, v, key_gate=gate), plain)


def test_lora_only_on_encoder_targets_and_heads_stay_trainable():
    model = build_model("tiny")
    lora_names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora_names, "peft injected nothing"
    assert all(n.startswith("image_encoder.blocks.") for n in lora_names)
    adapted = {n.split(".lora_")[0] for n in lora_names}
    expected = {f"image_encoder.blocks.{b}.{m}" for b in range(model.config.encoder_depth)
                for m in ("attn.qkv", "mlp.lin1", "mlp.lin2")}
    assert adapted == expected
    for name, param in model.named_parameters():
        if name.startswith("image_encoder."):
            assert param.requires_grad == ("lora_" in name), name
        else:
            assert param.requires_grad, f"{name} should be trainable"
    for part in ("mask_decoder", "knowledge_merge", "prompt_merge", "adaptor", "prompt_encoder"):
        assert any(p.requires_grad for p in getattr(model, part).parameters())
    counts = model.parameter_counts()
    assert counts["lora"]["total"] == lora_parameter_count(model.config)


def test_vit_b_lora_count_matches_the_spec_without_building_it():
    assert lora_parameter_count(get_config("vit_b")) == 516_096
    qkv_only = get_config("vit_b").replace(lora_target_modules=r"blocks\.\d+\.attn\.qkv")
    assert lora_parameter_count(qkv_only) == 147_456


@pytest.mark.slow
def test_vit_b_at_512_has_the_sam_encoder_size():
    counts = build_model("vit_b").parameter_counts()
    assert counts["image_encoder"]["total"] == 87_278_848
    assert counts["image_encoder"]["trainable"] == 0
    assert counts["lora"]["trainable"] == 516_096


def test_save_then_load_gives_identical_outputs(tiny, tmp_path):
    save_model(tiny, tmp_path / "m")
    loaded = load_model(tmp_path / "m").eval()
    assert loaded.config == tiny.config
    target, ref, mask = _inputs(2, tiny.config.image_size)
    with torch.no_grad():
        assert torch.equal(tiny(target, ref, mask), loaded(target, ref, mask))
    assert len(model_hash(tmp_path / "m")) == 64


def test_save_refuses_to_overwrite_and_load_rejects_broken_folders(tiny, tmp_path):
    from KnowledgeSAMLib.errors import WeightsError

    save_model(tiny, tmp_path / "m")
    with pytest.raises(WeightsError, match="already exists"):
        save_model(tiny, tmp_path / "m")
    save_model(tiny, tmp_path / "m", overwrite=True)
    with pytest.raises(WeightsError, match="config.json"):
        load_model(tmp_path / "nothing-here")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="does not match the .* recorded in config.json"):
        load_model(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    del config["weights_sha256"]  # a folder saved before hashes were recorded: the reader itself must refuse
    (tmp_path / "m" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.warns(UserWarning, match="not verified"), pytest.raises(WeightsError, match="could not be read"):
        load_model(tmp_path / "m")


def test_saved_files_are_not_pickles(tiny, tmp_path):
    save_model(tiny, tmp_path / "m")
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["config.json", "model.safetensors"]


def test_a_different_reference_mask_changes_the_output(tiny):
    target, ref, mask = _inputs(1, tiny.config.image_size)
    other = torch.zeros_like(mask)
    other[..., :20, :20] = 1
    with torch.no_grad():
        a, b = tiny(target, ref, mask), tiny(target, ref, other)
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("use_km,use_pm,dense", [(False, False, "reference"), (False, True, "no_mask"),
                                                 (True, False, "no_mask"), (True, True, "no_mask")])
def test_ablation_variants_of_table_2_run(use_km, use_pm, dense):
    cfg = get_config("tiny").replace(use_km=use_km, use_pm=use_pm, dense_prompt=dense)
    model = build_model(cfg)
    assert (model.knowledge_merge is not None) == use_km and (model.prompt_merge is not None) == use_pm
    target, ref, mask = _inputs(2, cfg.image_size)
    logits = model(target, ref, mask)
    logits.mean().backward()
    assert logits.shape == (2, 1, cfg.image_size, cfg.image_size)


def test_config_round_trip_and_validation():
    cfg = get_config("small")
    assert KSAMConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="Unknown KSAMConfig fields"):
        KSAMConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="divisible by 4"):
        get_config("tiny").replace(image_size=48)
    with pytest.raises(ValueError, match="Unknown model config"):
        build_model("huge")


def test_import_works_without_torchvision():
    code = (
        "import sys; sys.modules['torchvision'] = None\n"  # any `import torchvision` now raises ImportError
        "import torch; torch.set_num_threads(1)\n"
        "from KnowledgeSAMLib import build_model\n"
        "m = build_model('tiny')\n"
        "print(m(torch.rand(1,3,64,64), torch.rand(1,3,64,64), torch.ones(1,1,64,64)).shape)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch.Size([1, 1, 64, 64])" in result.stdout


def _synthetic_sam_checkpoint(tmp_path, config):
    """A SAM-style checkpoint for ``config`` at twice its input size (like 1024 for a 512 model)."""
    from KnowledgeSAMLib.model.backbone import build_image_encoder, build_mask_decoder, build_prompt_encoder

    big = config.replace(image_size=2 * config.image_size)
    torch.manual_seed(7)
    state = {}
    for prefix, module in (("image_encoder", build_image_encoder(big)), ("prompt_encoder", build_prompt_encoder(big)),
                           ("mask_decoder", build_mask_decoder(big))):
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value + 0.01 * torch.randn_like(value) if value.is_floating_point() else value
    path = tmp_path / "sam_synthetic.pth"
    torch.save(state, path)
    return path, state


def test_build_on_a_sam_checkpoint_loads_strictly_and_save_references_it(tmp_path):
    from KnowledgeSAMLib.model.sam_checkpoint import file_sha256

    config = get_config("tiny")
    path, state = _synthetic_sam_checkpoint(tmp_path, config)
    model = build_model(config, sam_checkpoint=path, verify_checkpoint=False)
    assert model.config.sam_checkpoint_sha256 == file_sha256(path)
    # Unresized weights arrive unchanged (LoRA renames qkv.weight to qkv.base_layer.weight).
    loaded = model.state_dict()
    torch.testing.assert_close(loaded["image_encoder.blocks.0.attn.qkv.base_layer.weight"],
                               state["image_encoder.blocks.0.attn.qkv.weight"])
    torch.testing.assert_close(loaded["mask_decoder.iou_token.weight"], state["mask_decoder.iou_token.weight"])
    assert loaded["image_encoder.pos_embed"].shape[1] == config.grid_size
    # Saved weights reference the frozen base by hash instead of copying it.
    save_model(model, tmp_path / "trained")
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "trained" / "model.safetensors"))
    assert "image_encoder.blocks.0.attn.qkv.base_layer.weight" not in saved
    assert any("lora_" in key for key in saved)
    reloaded = load_model(tmp_path / "trained", sam_checkpoint=path)
    target, ref, mask = _inputs(1, config.image_size)
    with torch.no_grad():
        assert torch.equal(model.eval()(target, ref, mask), reloaded.eval()(target, ref, mask))


def test_build_refuses_a_checkpoint_with_the_wrong_hash(tmp_path):
    from KnowledgeSAMLib.errors import WeightsError

    path, _ = _synthetic_sam_checkpoint(tmp_path, get_config("tiny"))
    with pytest.raises(WeightsError) as error:
        build_model("tiny", sam_checkpoint=path)
    assert "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912" in str(error.value)


def test_saved_model_files_are_readable_like_normal_files(tiny, tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        save_model(tiny, tmp_path / "shared")
    finally:
        os.umask(mask)
    for name in ("model.safetensors", "config.json"):
        mode = stat.S_IMODE((tmp_path / "shared" / name).stat().st_mode)
        assert mode == 0o644, f"{name} has mode {oct(mode)}"
