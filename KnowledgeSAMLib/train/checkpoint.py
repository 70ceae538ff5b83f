"""Training checkpoints: the trainable tensors (safetensors) plus optimiser/scheduler/sampler state.

Why only the trainable parts: with LoRA the frozen encoder is 87 M parameters that never change; it is
rebuilt from the config (and SAM checkpoint, or the run seed for random init), and a fingerprint of the
frozen tensors guards against resuming on different ones. Each checkpoint is a folder
``checkpoints/step_NNNNNNN/`` written to a temporary folder first and renamed, so a crash never leaves a
half-written "latest" checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..errors import InputError, WeightsError

__all__ = ["trainable_state", "frozen_fingerprint", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "list_checkpoints", "CHECKPOINT_DIR"]

CHECKPOINT_DIR = "checkpoints"
_TENSORS = "trainable.safetensors"
_STATE = "state.pt"
_META = "meta.json"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters with ``requires_grad`` (LoRA, heads, decoder...), detached on the CPU."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def frozen_fingerprint(model: torch.nn.Module) -> str:
    """SHA256 over the frozen parameters (names, shapes and bytes): identical iff the frozen weights are."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            digest.update(name.encode())
            digest.update(str(tuple(param.shape)).encode())
            digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(out_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if (p / _META).is_file() and not p.name.startswith(".")]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(out_dir: str | Path, step: int, model: torch.nn.Module, state: dict[str, Any],
                    meta: dict[str, Any], keep: int = 2) -> Path:
    """Write ``checkpoints/step_{step}`` atomically and delete all but the newest ``keep``.

    ``state`` holds torch objects (optimizer, scheduler, scaler, RNG); ``meta`` is JSON (step, epoch,
    config, sampler states, fingerprint).
    """
    root = Path(out_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:07d}.", dir=root))
    try:
        save_file(trainable_state(model), str(tmp / _TENSORS))
        torch.save(state, tmp / _STATE)
        (tmp / _META).write_text(json.dumps({"step": step, **meta}, indent=1, default=str), encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, model: torch.nn.Module, map_location: str | torch.device = "cpu"
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load the trainable tensors into ``model`` (exactly the trainable set) and return (state, meta)."""
    path = Path(path)
    if not (path / _META).is_file():
        raise InputError(f"{path}: not a training checkpoint (no {_META})")
    meta = json.loads((path / _META).read_text(encoding="utf-8"))
    tensors = load_file(str(path / _TENSORS))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(tensors) != expected:
        missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise WeightsError(f"{path}: checkpoint does not fit this model "
                           f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                           f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''})")
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                raise WeightsError(f"{path}: {name} has shape {tuple(tensor.shape)}, model expects "
                                   f"{tuple(params[name].shape)}")
            params[name].copy_(tensor)
    state = torch.load(path / _STATE, map_location=map_location, weights_only=True)
    return state, meta
