"""Where models come from: the embedded default model, a saved model folder, or a named config.

``resolve_model`` is what the CLI (``--model``), the engine and the Slicer module call with whatever the
user typed: ``"default"`` (the model shipped under ``Resources/Models/default``), a folder written by
``save_model``, or a config name (``lite``/``vit_b``/``small``/``tiny``), which gives a model whose new heads are
*randomly initialised* (only the pretrained base, if found, is real) and says so with a warning.

The default model folder is found in this order: ``$KNOWLEDGESAM_MODEL_DIR``; the source checkout's
``Resources/Models/default`` (the Slicer extension and editable installs); the copy installed with the
package (``KnowledgeSAMLib/_models/default``, for wheels). The first that exists wins.

A user's own models (``knowledgesam train --data DIR --out MODEL_DIR``) live as folders in their model
directory, :func:`user_models_dir` (``$KNOWLEDGESAM_USER_MODELS``, else the platform's user data folder);
:func:`list_user_models` lists them for a model selector (the Slicer panel, ``--model``).
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError

__all__ = ["default_model_dir", "resolve_model", "ENV_MODEL_DIR", "DEFAULT_MODEL_NAME", "UserModel",
           "user_models_dir", "list_user_models", "ENV_USER_MODELS"]

ENV_MODEL_DIR = "KNOWLEDGESAM_MODEL_DIR"
ENV_USER_MODELS = "KNOWLEDGESAM_USER_MODELS"
DEFAULT_MODEL_NAME = "default"
_REPO_MODEL_DIR = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "default"
_PACKAGE_MODEL_DIR = Path(__file__).resolve().parents[1] / "_models" / "default"


def _candidates() -> list[Path]:
    found = []
    env = os.environ.get(ENV_MODEL_DIR)
    if env:
        found.append(Path(env).expanduser())
    found.extend([_REPO_MODEL_DIR, _PACKAGE_MODEL_DIR])
    return found


def default_model_dir() -> Path:
    """The embedded default model's folder (the first existing candidate; if none exists, the one an
    environment variable names, else the source checkout's ``Resources/Models/default``)."""
    candidates = _candidates()
    for path in candidates:
        if (path / "config.json").is_file():
            return path
    return candidates[0]


def resolve_model(name_or_path: str | os.PathLike = DEFAULT_MODEL_NAME, sam_checkpoint: str | os.PathLike | None = None,
                  map_location: str = "cpu", sam_sha256: str | None = None):
    """A ready :class:`~KnowledgeSAMLib.model.ksam.KSAM` for ``"default"``, a model folder, or a config name.

    ``sam_checkpoint``/``sam_sha256``: the pretrained base file (and its hash, for a file other than the
    official one) for models that reference their base instead of storing it.
    """
    from .config import NAMED_CONFIGS
    from .weights import load_model

    text = str(name_or_path)
    if text == DEFAULT_MODEL_NAME:
        directory = default_model_dir()
        if not (directory / "config.json").is_file():
            raise WeightsError(
                f"{directory}: the embedded default model is missing; set {ENV_MODEL_DIR} to a trained model "
                f"folder or train one with `knowledgesam train --config configs/default_model.yaml`")
        return load_model(directory, sam_checkpoint=sam_checkpoint, map_location=map_location, sam_sha256=sam_sha256)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_model(path, sam_checkpoint=sam_checkpoint, map_location=map_location, sam_sha256=sam_sha256)
    if text in NAMED_CONFIGS:
        from .build import build_model

        warnings.warn(f"model {text!r} is a config name: its knowledge heads are randomly initialised "
                      f"(use 'default' or a trained model folder to segment)", stacklevel=2)
        return build_model(text, sam_checkpoint=sam_checkpoint, sam_sha256=sam_sha256)
    raise WeightsError(f"{text}: not a model folder, 'default', or a config name "
                       f"({', '.join(NAMED_CONFIGS)})")


# ------------------------------------------------------------------------------------------ user models
@dataclass(frozen=True)
class UserModel:
    """A model folder in the user's model directory, as a selector shows it."""

    name: str  # the folder's name
    path: Path
    preset: str  # the KSAM config it was built from (lite, small, vit_b, ...)
    image_size: int
    trained_on: tuple[str, ...] = ()  # the structures of its training data, when its training.json says


def user_models_dir() -> Path:
    """``$KNOWLEDGESAM_USER_MODELS``, else ``~/.local/share/knowledgesam/models`` (Linux, or ``$XDG_DATA_HOME``),
    ``~/Library/Application Support/knowledgesam/models`` (macOS), ``%APPDATA%\\knowledgesam\\models``
    (Windows). Not created here."""
    override = os.environ.get(ENV_USER_MODELS)
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share").expanduser()
    return base / "knowledgesam" / "models"


def _structures(folder: Path) -> tuple[str, ...]:
    try:
        data = json.loads((folder / "training.json").read_text(encoding="utf-8")).get("data", {})
        return tuple(dict.fromkeys(t for info in data.values() for t in info.get("tasks", [])))
    except (OSError, ValueError, AttributeError):
        return ()


def list_user_models(root: str | os.PathLike | None = None) -> list[UserModel]:
    """The model folders (``config.json`` + ``model.safetensors``) directly in ``root`` (default:
    :func:`user_models_dir`), by name. Folders that are not models, or whose config cannot be read, are left
    out; nothing heavy is loaded (no torch, no weights)."""
    root = Path(root) if root is not None else user_models_dir()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not (folder / "model.safetensors").is_file():  # weights.WEIGHTS_FILE (not imported: it needs torch)
            continue
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            preset, size = str(config["name"]), int(config["image_size"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        found.append(UserModel(folder.name, folder, preset, size, _structures(folder)))
    return found
