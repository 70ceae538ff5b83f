"""SAM checkpoint handling: hash verification, safe loading, 1024→512 adaptation, explicit download.

No network and no real weights: the checkpoint is played by small synthetic files and encoders, and the
download by ``file://`` URLs.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from torch import nn

from KnowledgeSAMLib.errors import CancelledError, WeightsError
from KnowledgeSAMLib.model import download as dl
from KnowledgeSAMLib.model import sam_checkpoint as sc
from KnowledgeSAMLib.model._sam_import import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from KnowledgeSAMLib.model.download import download_checkpoint
from KnowledgeSAMLib.model.sam_checkpoint import (
    SAM_VIT_B,
    CheckpointInfo,
    ResizePolicy,
    adapt_sam_state_dict,
    file_sha256,
    load_sam_state_dict,
    resize_pos_embed,
    resize_rel_pos,
    verify_checkpoint,
)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Keep the hash cache (and default downloads) out of the real user cache."""
    cache = tmp_path / "user-cache"
    monkeypatch.setenv(dl.CACHE_ENV, str(cache))
    return cache


def _info_for(path: Path, name: str = "model.pth") -> CheckpointInfo:
    data = path.read_bytes()
    return CheckpointInfo(
        name=name,
        url=path.resolve().as_uri(),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        size_bytes=len(data),
    )


def _payload(tmp_path: Path, size: int = 3 * (1 << 20) + 5) -> Path:
    source = tmp_path / "source" / "payload.bin"
    source.parent.mkdir()
    source.write_bytes(torch.randint(0, 256, (size,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
                       .numpy().tobytes())
    return source


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------------ constants


def test_sam_vit_b_constants_are_consistent():
    assert SAM_VIT_B.name == "sam_vit_b_01ec64.pth"
    assert SAM_VIT_B.md5.startswith("01ec64")  # Meta's file names carry the MD5 prefix
    assert SAM_VIT_B.url.endswith("/" + SAM_VIT_B.name)
    assert len(SAM_VIT_B.sha256) == 64 and int(SAM_VIT_B.sha256, 16) >= 0
    assert SAM_VIT_B.size_bytes == 375_042_383


# -------------------------------------------------------------------------------------------- hashing


def test_file_sha256_streams_and_reports_progress(tmp_path):
    source = _payload(tmp_path)
    calls: list[tuple[int, int]] = []
    digest = file_sha256(source, progress=lambda done, total: calls.append((done, total)))
    assert digest == hashlib.sha256(source.read_bytes()).hexdigest()
    size = source.stat().st_size
    assert len(calls) == 4  # 3 MiB + 5 bytes in 1 MiB chunks
    assert calls[-1] == (size, size)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_verify_ok_returns_hash(tmp_path):
    source = _payload(tmp_path, 1000)
    info = _info_for(source)
    assert verify_checkpoint(source, info) == info.sha256


def test_verify_mismatch_names_file_and_both_hashes(tmp_path):
    source = _payload(tmp_path, 1000)
    with pytest.raises(WeightsError) as caught:
        verify_checkpoint(source, SAM_VIT_B)
    message = str(caught.value)
    found = hashlib.sha256(source.read_bytes()).hexdigest()
    assert str(source) in message
    assert SAM_VIT_B.sha256 in message and found in message
    assert "1,000 bytes" in message and "375,042,383" in message and "truncated" in message
    assert "\n" not in message


def test_verify_missing_file_says_how_to_get_it(tmp_path):
    missing = tmp_path / "nowhere" / "sam_vit_b_01ec64.pth"
    with pytest.raises(WeightsError) as caught:
        verify_checkpoint(missing)
    message = str(caught.value)
    assert str(missing) in message and "knowledgesam download-sam" in message and SAM_VIT_B.url in message
    with pytest.raises(WeightsError, match="not a file"):
        verify_checkpoint(tmp_path)


def test_verified_hash_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch, isolated_cache):
    source = _payload(tmp_path, 5000)
    info = _info_for(source)
    real = sc.file_sha256
    hashed: list[Path] = []

    def counting(path, *args, **kwargs):
        hashed.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sc, "file_sha256", counting)
    verify_checkpoint(source, info)
    verify_checkpoint(source, info)
    assert len(hashed) == 1
    assert (isolated_cache / sc.HASH_CACHE_NAME).is_file()

    # Same size, new mtime: re-hashed (still fine).
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    verify_checkpoint(source, info)
    assert len(hashed) == 2

    # Changed content and size: re-hashed and caught.
    with open(source, "ab") as stream:
        stream.write(b"x")
    with pytest.raises(WeightsError, match="SHA256 expected"):
        verify_checkpoint(source, info)
    assert len(hashed) == 3

    # use_cache=False always re-reads; a corrupt cache file is ignored, not fatal.
    (isolated_cache / sc.HASH_CACHE_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(WeightsError):
        verify_checkpoint(source, info, use_cache=False)
    assert len(hashed) == 4


# -------------------------------------------------------------------------------------------- loading


def _small_encoder(img_size: int) -> ImageEncoderViT:
    return ImageEncoderViT(img_size=img_size, patch_size=8, embed_dim=32, depth=4, num_heads=2, window_size=4,
                           global_attn_indexes=(1, 3), use_rel_pos=True, out_chans=32)


def test_load_plain_state_dict_weights_only(tmp_path):
    torch.manual_seed(0)
    state = {f"image_encoder.{k}": v for k, v in _small_encoder(64).state_dict().items()}
    path = tmp_path / "ckpt.pth"
    torch.save(state, path)
    loaded = load_sam_state_dict(path, verify=False)
    assert type(loaded) is dict and loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) and loaded[k].device.type == "cpu" for k in state)
    # With verification against the file's own hash, and refused against the official one.
    assert load_sam_state_dict(path, info=_info_for(path)).keys() == state.keys()
    with pytest.raises(WeightsError, match="SHA256 expected"):
        load_sam_state_dict(path)


class _RunsCodeWhenUnpickled:
    """A pickle that creates a folder when loaded: what weights_only must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_non_state_dict_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "payload": _RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(WeightsError, match="weights_only"):
        load_sam_state_dict(path, verify=False)
    assert not marker.exists()
    # The test can fail: an unsafe load would have run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_other_checkpoint_layouts_are_refused_clearly(tmp_path):
    state = {"image_encoder.pos_embed": torch.zeros(1, 2, 2, 4)}
    nested = tmp_path / "nested.pth"
    torch.save({"model": state, "epoch": 3}, nested)
    with pytest.raises(WeightsError, match="nested under 'model'"):
        load_sam_state_dict(nested, verify=False)
    as_list = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], as_list)
    with pytest.raises(WeightsError, match="holds a list"):
        load_sam_state_dict(as_list, verify=False)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match=str(garbage).replace("\\", "\\\\")):
        load_sam_state_dict(garbage, verify=False)
    truncated = tmp_path / "truncated.pth"
    torch.save(state, truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(WeightsError):
        load_sam_state_dict(truncated, verify=False)
    with pytest.raises(WeightsError, match="download-sam"):
        load_sam_state_dict(tmp_path / "missing.pth", verify=False)


# ----------------------------------------------------------------------------------------- adaptation


def _randomised(module: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict with random position tables (they are zero-initialised upstream, which hides resizing)."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=generator) for k, v in module.state_dict().items()}


def test_checkpoint_adaptation_loads_strictly():
    big = {f"image_encoder.{k}": v for k, v in _randomised(_small_encoder(128)).items()}
    small_model = nn.Module()
    small_model.image_encoder = _small_encoder(64)
    target = small_model.state_dict()

    adapted, resized = adapt_sam_state_dict(big, target)

    expected = ["image_encoder.pos_embed"] + [
        f"image_encoder.blocks.{b}.attn.rel_pos_{axis}" for b in (1, 3) for axis in "hw"
    ]
    assert sorted(resized) == sorted(expected)
    assert big["image_encoder.pos_embed"].shape == (1, 16, 16, 32)
    assert adapted["image_encoder.pos_embed"].shape == (1, 8, 8, 32)
    assert big["image_encoder.blocks.1.attn.rel_pos_h"].shape == (31, 16)
    assert adapted["image_encoder.blocks.1.attn.rel_pos_h"].shape == (15, 16)
    # Window blocks keep their 2·window−1 tables untouched.
    assert adapted["image_encoder.blocks.0.attn.rel_pos_w"] is big["image_encoder.blocks.0.attn.rel_pos_w"]
    assert all(adapted[k] is big[k] for k in big if k not in expected)
    assert big["image_encoder.pos_embed"].shape == (1, 16, 16, 32)  # input not modified

    small_model.load_state_dict(adapted, strict=True)
    for key in expected:
        assert torch.equal(small_model.state_dict()[key], adapted[key])
    with torch.no_grad():
        out = small_model.image_encoder(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, 32, 8, 8) and torch.isfinite(out).all()


def test_adaptation_is_a_no_op_at_the_same_size():
    state = {f"image_encoder.{k}": v for k, v in _randomised(_small_encoder(64)).items()}
    adapted, resized = adapt_sam_state_dict(state, state)
    assert resized == [] and all(adapted[k] is state[k] for k in state)


def test_adaptation_reports_every_other_difference():
    big = {f"image_encoder.{k}": v for k, v in _randomised(_small_encoder(128)).items()}
    target = {f"image_encoder.{k}": v for k, v in _small_encoder(64).state_dict().items()}
    broken = dict(big)
    del broken["image_encoder.neck.0.weight"]
    broken["image_encoder.extra.weight"] = torch.zeros(3)
    broken["image_encoder.blocks.0.norm1.weight"] = torch.zeros(7)
    broken["image_encoder.patch_embed.proj.bias"] = torch.zeros(31)
    with pytest.raises(WeightsError) as caught:
        adapt_sam_state_dict(broken, target)
    message = str(caught.value)
    assert "\n" not in message
    assert "2 shape mismatches" in message
    assert "image_encoder.blocks.0.norm1.weight 7 vs model 32" in message
    assert "image_encoder.patch_embed.proj.bias 31 vs model 32" in message
    assert "missing from the checkpoint: image_encoder.neck.0.weight" in message
    assert "does not have: image_encoder.extra.weight" in message
    # Position tables with an incompatible channel/head size are mismatches too, not resized.
    odd = dict(big)
    odd["image_encoder.pos_embed"] = torch.zeros(1, 16, 16, 30)
    odd["image_encoder.blocks.1.attn.rel_pos_h"] = torch.zeros(31, 8)
    with pytest.raises(WeightsError, match="2 shape mismatches"):
        adapt_sam_state_dict(odd, target)


def _cos_grid(size: int, freqs: list[tuple[int, int]]) -> torch.Tensor:
    """1×size×size×C with channel c = cos(π·kx·u)·cos(π·ky·v) at cell centres u, v = (i+0.5)/size."""
    centres = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    channels = [torch.outer(torch.cos(math.pi * ky * centres), torch.cos(math.pi * kx * centres))
                for kx, ky in freqs]
    return torch.stack(channels, dim=-1).unsqueeze(0).float()


def test_pos_embed_bicubic_matches_the_smooth_function_at_the_new_cell_centres():
    freqs = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1), (2, 2)]
    resized = resize_pos_embed(_cos_grid(64, freqs), (32, 32))
    expected = _cos_grid(32, freqs)
    error = (resized - expected).abs().max().item()
    assert error < 2e-3, error
    assert torch.allclose(resized[..., 0], torch.ones(1, 32, 32))  # a constant stays constant
    # The check discriminates: corner-aligned sampling (the wrong grid convention) is far off.
    wrong = resize_pos_embed(_cos_grid(64, freqs), (32, 32), ResizePolicy(pos_embed_align_corners=True))
    assert (wrong - expected).abs().max().item() > 10 * error


def test_rel_pos_resize_equals_upstream_runtime_interpolation():
    from segment_anything.modeling.image_encoder import get_rel_pos

    table = torch.randn(127, 64, generator=torch.Generator().manual_seed(1))
    resized = resize_rel_pos(table, 63)
    assert resized.shape == (63, 64)
    # Upstream SAM would compute exactly this table for a 32×32 grid if it kept the 127-long one.
    coords = torch.arange(32)[:, None] - torch.arange(32)[None, :] + 31
    assert torch.allclose(get_rel_pos(32, 32, table), resized[coords], atol=1e-6)
    # Offset 0 maps to offset 0, and a table linear in the offset stays linear (scaled by 127/63).
    assert torch.allclose(resized[31], table[63], atol=1e-6)
    offsets_big = torch.arange(127, dtype=torch.float32) - 63
    offsets_small = torch.arange(63, dtype=torch.float32) - 31
    ramp = resize_rel_pos(offsets_big[:, None].repeat(1, 3), 63)
    assert torch.allclose(ramp, (offsets_small * 127 / 63)[:, None].expand(63, 3), atol=1e-4)


def _sam_like(img_size: int) -> nn.Module:
    """SAM ViT-B as ``build_sam_vit_b`` lays it out, but at any input size (KSAM_SPEC §2.6)."""
    grid = img_size // 16
    sam = nn.Module()
    sam.image_encoder = ImageEncoderViT(
        img_size=img_size, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, out_chans=256,
        qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
    )
    sam.prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(grid, grid),
                                       input_image_size=(img_size, img_size), mask_in_chans=16)
    sam.mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
    )
    return sam


def test_vit_b_1024_checkpoint_fits_512_by_resizing_exactly_nine_tensors():
    with torch.device("meta"):  # shapes only: no 90 M parameters allocated
        checkpoint = _sam_like(1024).state_dict()
        target = _sam_like(512).state_dict()
        adapted, resized = adapt_sam_state_dict(checkpoint, target)
    expected = ["image_encoder.pos_embed"] + [
        f"image_encoder.blocks.{b}.attn.rel_pos_{axis}" for b in (2, 5, 8, 11) for axis in "hw"
    ]
    assert sorted(resized) == sorted(expected)
    assert adapted.keys() == target.keys()
    assert all(adapted[k].shape == target[k].shape for k in target)
    assert adapted["image_encoder.pos_embed"].shape == (1, 32, 32, 768)
    assert adapted["image_encoder.blocks.2.attn.rel_pos_h"].shape == (63, 64)
    assert adapted["image_encoder.blocks.0.attn.rel_pos_h"].shape == (27, 64)


# ------------------------------------------------------------------------------------------- download


def test_default_cache_dir_per_platform(monkeypatch, tmp_path):
    monkeypatch.setenv(dl.CACHE_ENV, "~/custom-cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dl.default_cache_dir() == tmp_path / "custom-cache"
    monkeypatch.delenv(dl.CACHE_ENV)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    assert dl.default_cache_dir() == tmp_path / ".cache" / "knowledgesam"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.default_cache_dir() == tmp_path / "xdg" / "knowledgesam"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert dl.default_cache_dir() == tmp_path / "Library" / "Caches" / "knowledgesam"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "AppData" / "Local"))
    assert dl.default_cache_dir() == tmp_path / "AppData" / "Local" / "knowledgesam"


def test_download_from_file_url_verifies_and_caches(tmp_path, monkeypatch, capsys):
    source = _payload(tmp_path)
    info = _info_for(source)
    folder = tmp_path / "models"
    calls: list[tuple[int, int]] = []
    path = download_checkpoint(info, cache_dir=folder, progress=lambda d, t: calls.append((d, t)))
    assert path == folder / info.name
    assert path.read_bytes() == source.read_bytes()
    assert _files(folder) == [info.name]  # no temp file left behind
    assert calls[-1] == (info.size_bytes, info.size_bytes) and len(calls) == 4

    # Second call: already there and verified (hash cached at download) — neither network nor re-hash.
    def no_network(*args, **kwargs):
        raise AssertionError("downloaded again")

    def no_hash(*args, **kwargs):
        raise AssertionError("re-hashed")

    monkeypatch.setattr(dl.urllib.request, "urlopen", no_network)
    monkeypatch.setattr(sc, "file_sha256", no_hash)
    assert download_checkpoint(info, cache_dir=folder, progress=False) == path
    monkeypatch.undo()

    # progress=True draws a tqdm bar on stderr; default folder is the user cache.
    monkeypatch.setenv(dl.CACHE_ENV, str(tmp_path / "default-cache"))
    path2 = download_checkpoint(info)
    assert path2 == tmp_path / "default-cache" / info.name and path2.is_file()
    assert info.name in capsys.readouterr().err


def test_download_hash_mismatch_leaves_nothing(tmp_path):
    source = _payload(tmp_path, 4096)
    info = CheckpointInfo(name="model.pth", url=source.as_uri(), sha256="0" * 64, size_bytes=4096)
    folder = tmp_path / "models"
    with pytest.raises(WeightsError) as caught:
        download_checkpoint(info, cache_dir=folder, progress=False)
    message = str(caught.value)
    assert "0" * 64 in message and hashlib.sha256(source.read_bytes()).hexdigest() in message
    assert _files(folder) == []


class _CancelAfter:
    def __init__(self, checks: int):
        self.checks = checks

    def raise_if_cancelled(self) -> None:
        self.checks -= 1
        if self.checks < 0:
            raise CancelledError("cancelled")


def test_interrupted_download_leaves_no_partial_file(tmp_path):
    source = _payload(tmp_path)
    info = _info_for(source)
    folder = tmp_path / "models"

    def ctrl_c(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_checkpoint(info, cache_dir=folder, progress=ctrl_c)
    assert _files(folder) == []
    with pytest.raises(CancelledError):
        download_checkpoint(info, cache_dir=folder, progress=False, cancel=_CancelAfter(2))
    assert _files(folder) == []


def test_existing_bad_file_is_kept_unless_forced(tmp_path):
    source = _payload(tmp_path, 4096)
    info = _info_for(source)
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / info.name).write_bytes(b"someone else's file")
    with pytest.raises(WeightsError, match="left untouched"):
        download_checkpoint(info, cache_dir=folder, progress=False)
    assert (folder / info.name).read_bytes() == b"someone else's file"

    # A forced download that turns out corrupt does not destroy the existing file either.
    bad = CheckpointInfo(name=info.name, url=info.url, sha256="f" * 64)
    with pytest.raises(WeightsError, match="corrupt"):
        download_checkpoint(bad, cache_dir=folder, progress=False, force=True)
    assert (folder / info.name).read_bytes() == b"someone else's file"

    path = download_checkpoint(info, cache_dir=folder, progress=False, force=True)
    assert path.read_bytes() == source.read_bytes() and _files(folder) == [info.name]


def test_unreachable_url_is_a_weights_error(tmp_path):
    info = CheckpointInfo(name="model.pth", url=(tmp_path / "absent.bin").as_uri(), sha256="0" * 64)
    folder = tmp_path / "models"
    with pytest.raises(WeightsError, match="cannot download .*absent.bin"):
        download_checkpoint(info, cache_dir=folder, progress=False)
    assert _files(folder) == []


def _cli(argv: list[str]) -> argparse.Namespace:
    from KnowledgeSAMLib.cli import download_sam

    parser = argparse.ArgumentParser()
    download_sam.register(parser.add_subparsers())
    return parser.parse_args(argv)


def test_cli_download_sam(tmp_path, monkeypatch, capsys):
    source = _payload(tmp_path, 4096)
    folder = tmp_path / "dest"
    # The real checkpoint's hash refuses our small file, and nothing is saved.
    args = _cli(["download-sam", "--dest", str(folder), "--url", source.as_uri(), "--quiet"])
    with pytest.raises(WeightsError, match=SAM_VIT_B.sha256):
        args.func(args)
    assert _files(folder) == []
    # With a checkpoint description that matches, the file lands in --dest and its path is printed.
    monkeypatch.setattr(sc, "SAM_VIT_B", _info_for(source, name=SAM_VIT_B.name))
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert str(folder / SAM_VIT_B.name) in out
    assert (folder / SAM_VIT_B.name).read_bytes() == source.read_bytes()
