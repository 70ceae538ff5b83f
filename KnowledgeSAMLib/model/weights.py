"""Saving and loading what was trained: safetensors + JSON config, never pickles.

Only what training changes is stored. When the encoder's base weights come from a SAM checkpoint
(``config.sam_checkpoint_sha256``), those frozen weights are referenced by hash, not copied, and
:func:`load_model` needs the checkpoint file again. Models trained from scratch store everything.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._files import give_default_permissions
from ..errors import WeightsError
from .config import KSAMConfig
from .ksam import KSAM

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


def _is_referenced_base_weight(model: KSAM, name: str, param_trainable: dict[str, bool]) -> bool:
    return (
        model.config.sam_checkpoint_sha256 is not None
        and name.startswith("image_encoder.")
        and not param_trainable.get(name, False)
    )


def trained_state_dict(model: KSAM) -> dict[str, torch.Tensor]:
    """The tensors ``save_model`` writes: everything but frozen weights that a SAM checkpoint provides."""
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    return {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
        if not _is_referenced_base_weight(model, name, trainable)
    }


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        give_default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: KSAM, directory: str | Path, overwrite: bool = False,
               metadata: dict[str, str] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed), atomically."""
    directory = Path(directory)
    weights_path = directory / WEIGHTS_FILE
    if weights_path.exists() and not overwrite:
        raise WeightsError(f"{weights_path} already exists; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = trained_state_dict(model)
    meta = {"format": "knowledgesam", "format_version": str(FORMAT_VERSION), **(metadata or {})}
    _atomic_write(weights_path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    config_text = json.dumps(model.config.to_dict(), indent=2, sort_keys=True) + "\n"
    _atomic_write(directory / CONFIG_FILE, lambda tmp: tmp.write_text(config_text, encoding="utf-8"))
    return directory


def read_config(directory: str | Path) -> KSAMConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{path} not found: not a saved KnowledgeSAM model folder")
    try:
        return KSAMConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:
        raise WeightsError(f"{path} is not a valid KnowledgeSAM config: {error}") from None


def load_model(directory: str | Path, sam_checkpoint: str | Path | None = None,
               map_location: str | torch.device = "cpu") -> KSAM:
    """Rebuild a model saved by :func:`save_model` (``sam_checkpoint`` when its base weights are referenced)."""
    directory = Path(directory)
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise WeightsError(f"{weights_path} not found")
    if config.sam_checkpoint_sha256 is not None:
        if sam_checkpoint is None:
            from .download import default_cache_dir
            from .sam_checkpoint import SAM_VIT_B

            candidate = default_cache_dir() / Path(SAM_VIT_B.url).name
            if not candidate.is_file():
                raise WeightsError(
                    f"{directory} was trained on the SAM checkpoint with SHA256 {config.sam_checkpoint_sha256}; "
                    f"pass its path (sam_checkpoint=...) or fetch it with `knowledgesam download-sam`"
                )
            sam_checkpoint = candidate
        from .build import build_model

        model = build_model(config, sam_checkpoint=sam_checkpoint, expected_sha256=config.sam_checkpoint_sha256)
    else:
        model = KSAM(config)
    try:
        tensors = load_file(str(weights_path), device=str(map_location))
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise WeightsError(f"{weights_path} could not be read: {error}") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    expected_missing = set(model.state_dict()) - set(trained_state_dict(model))
    real_missing = sorted(set(missing) - expected_missing)
    if real_missing or unexpected:
        raise WeightsError(
            f"{weights_path} does not fit its config: missing {real_missing[:5]}, unexpected {list(unexpected)[:5]}"
        )
    return model


def model_hash(directory: str | Path) -> str:
    """SHA256 of the weights file: the identity of a trained model in provenance records."""
    digest = hashlib.sha256()
    with open(Path(directory) / WEIGHTS_FILE, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
