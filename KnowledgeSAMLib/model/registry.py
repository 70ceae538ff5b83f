"""Where models come from: the embedded default model, a saved model folder, or a named config.

``resolve_model`` is what the CLI (``--model``), the engine and the Slicer module call with whatever the
user typed: ``"default"`` (the model shipped under ``Resources/Models/default``), a folder written by
``save_model``, or a config name (``lite``/``vit_b``/``small``/``tiny``), which gives a model whose new heads are
*randomly initialised* (only the pretrained base, if found, is real) and says so with a warning.

The default model folder is found in this order: ``$KNOWLEDGESAM_MODEL_DIR``; the source checkout's
``Resources/Models/default`` (the Slicer extension and editable installs); the copy installed with the
package (``KnowledgeSAMLib/_models/default``, for wheels). The first that exists wins.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import WeightsError

__all__ = ["default_model_dir", "resolve_model", "ENV_MODEL_DIR", "DEFAULT_MODEL_NAME"]

ENV_MODEL_DIR = "KNOWLEDGESAM_MODEL_DIR"
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
