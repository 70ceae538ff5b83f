"""Frozen-encoder embeddings of every training slice, computed once and kept on disk.

Why: LiteMedSAM's TinyViT costs ~38 GFLOP per 256² slice (≈1.5 s on two CPU cores) while the heads KSAM
trains cost a few GFLOP. With the encoder frozen, its output for a stored slice never changes, so each slice is
encoded once into a float16 memory-mapped file (``(rows, C, G, G)``, 2 MiB per slice at 256×64²) and training
reads embeddings instead of running the encoder: the heads then train at a few seconds per step on a CPU.

The file of a source is named by the content of its slices and the encoder's weights, so a changed source or
another encoder never reuses stale embeddings. Encoding is resumable: a sidecar JSON records how many rows are
done, and an interrupted run continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import InputError
from .sources import SliceCase, Source

__all__ = ["attach_embeddings", "encoder_fingerprint", "store_path"]

#: ``progress(source name, rows done, rows total)``
EmbeddingProgress = Callable[[str, int, int], None]


def encoder_fingerprint(model: torch.nn.Module) -> str:
    """SHA256 over the image encoder's tensors and the model's input normalisation."""
    digest = hashlib.sha256()
    state = model.image_encoder.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    for buffer in (model.pixel_mean, model.pixel_std):
        digest.update(buffer.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


def _cases(source: Source) -> list[SliceCase]:
    return list(source.train) + list(source.val)


def _content_key(cases: list[SliceCase]) -> str:
    digest = hashlib.blake2b(digest_size=12)
    for case in cases:
        digest.update(f"{case.name}:{case.images.shape}".encode())
        digest.update(np.ascontiguousarray(case.images).tobytes())
    return digest.hexdigest()


def store_path(cache_dir: str | Path, source: Source, fingerprint: str) -> Path:
    """Where a source's embeddings live for an encoder (content- and encoder-addressed)."""
    return Path(cache_dir) / f"emb_{source.kind}_{_content_key(_cases(source))}_{fingerprint[:12]}.f16"


def _read_done(sidecar: Path) -> int:
    try:
        return int(json.loads(sidecar.read_text(encoding="utf-8")).get("done", 0))
    except (OSError, ValueError):
        return 0


def _write_done(sidecar: Path, done: int, rows: int, shape: tuple[int, ...]) -> None:
    tmp = sidecar.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"done": done, "rows": rows, "shape": list(shape)}), encoding="utf-8")
    os.replace(tmp, sidecar)


@torch.inference_mode()
def _encode_rows(model: torch.nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    batch = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return model.encode(batch).to("cpu", torch.float16).numpy()


def attach_embeddings(sources: list[Source], model: torch.nn.Module, cache_dir: str | Path, *,
                      device: torch.device | str = "cpu", batch_size: int = 1,
                      progress: EmbeddingProgress | None = None, encode: bool = True,
                      cancel: Callable[[], None] | None = None) -> None:
    """Give every case of ``sources`` its ``embeddings`` (a read-only ``(n, C, G, G)`` float16 memmap view).

    Missing rows are encoded first (``encode=False``: wait for another process to finish them instead — DDP
    ranks other than 0). Raises InputError when any encoder weight learns (LoRA included): cached embeddings
    would go stale as soon as it did. A LoRA model whose adapters are held still (``model.trainable: heads``)
    qualifies.
    """
    if any(p.requires_grad for p in model.image_encoder.parameters()):
        raise InputError(f"cached encoder embeddings need a frozen encoder; the model's encoder_training is "
                         f"{model.config.encoder_training!r} (set model.overrides.encoder_training: frozen, or "
                         f"model.trainable: heads)")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = encoder_fingerprint(model)
    device = torch.device(device)
    c, g = int(model.config.prompt_dim), int(model.config.grid_size)
    was_training = model.training
    model.eval()
    accelerated = False
    if device.type == "cpu" and encode:  # ONNX Runtime encodes about twice as fast as eager PyTorch on a CPU
        from ..infer.onnx_encoder import accelerate

        accelerated = accelerate(model, device)
    try:
        for source in sources:
            cases = _cases(source)
            rows = sum(case.n for case in cases)
            path = store_path(cache_dir, source, fingerprint)
            sidecar = path.with_suffix(".json")
            shape = (rows, c, g, g)
            if encode:
                done = _read_done(sidecar) if path.is_file() else 0
                store = np.memmap(path, dtype=np.float16, mode="r+" if path.is_file() else "w+", shape=shape)
                images = np.concatenate([case.images for case in cases]) if done < rows else None
                while done < rows:
                    if cancel is not None:
                        cancel()
                    stop = min(rows, done + max(1, batch_size))
                    store[done:stop] = _encode_rows(model, images[done:stop], device)
                    done = stop
                    if done == rows or done % 16 < max(1, batch_size):
                        store.flush()
                        _write_done(sidecar, done, rows, shape)
                    if progress is not None:
                        progress(source.name, done, rows)
                del store
                if progress is not None and images is not None:
                    progress(source.name, rows, rows)
            elif _read_done(sidecar) < rows:
                raise InputError(f"{path}: embeddings are not complete ({_read_done(sidecar)}/{rows} rows)")
            view = np.memmap(path, dtype=np.float16, mode="r", shape=shape)
            start = 0
            for case in cases:
                case.embeddings = view[start:start + case.n]
                start += case.n
    finally:
        if accelerated:
            model.encoder_runtime = None  # training runs the encoder (if at all) in PyTorch
        model.train(was_training)
