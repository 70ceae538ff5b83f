"""The simple case, ``knowledgesam train --data DIR --out MODEL_DIR``: a whole training config from a folder.

Why a generated config and not a second trainer: the run must be the same machinery as any configured run
(checkpoints, resume, DDP, validation, model card), and it must be reproducible — so the CLI writes the full
config it made to ``MODEL_DIR/train_config.yaml``, and ``knowledgesam train --config`` on that file runs it
again. The choices it makes, by the model it starts from:

* a trained model (``default``, or a model folder): fine-tune it (``init_from``) at a low learning rate;
* ``lite``: LiteMedSAM's frozen encoder, its embeddings cached once, new heads trained on them;
* ``small`` / ``tiny``: a model trained from scratch; ``vit_b``: SAM ViT-B with LoRA (needs its checkpoint).

A frozen encoder (``encoder_training: frozen``) always gets an embedding cache, and then the images are
augmented per view (``randomise``, ``copies``) instead of per step. Caches go to the user cache folder, keyed by
content, so a second run on the same folder reuses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .config import TrainConfig, config_from_dict

__all__ = ["QuickOptions", "folder_config", "DEFAULT_STEPS", "RUN_SUBDIR", "CONFIG_FILE"]

DEFAULT_STEPS = 600  # ≈ 10-20 min for the default model on two CPU cores
RUN_SUBDIR = "run"  # MODEL_DIR/run: logs, checkpoints, split.json
CONFIG_FILE = "train_config.yaml"  # MODEL_DIR/train_config.yaml: the full config of the run


@dataclass
class QuickOptions:
    """What a user says on the command line for the simple case."""

    data: Path
    out: Path
    structures: list[str] = field(default_factory=list)
    model: str = "default"  # "default", a model folder, or a preset (lite, small, vit_b, tiny, lite_tiny)
    steps: int = DEFAULT_STEPS
    seed: int = 0
    strict: bool = False
    kind: str | None = None  # volume_folder / image_folder; None = by the files found
    labels: str | None = None
    patients: str | None = None
    val_cases: int | None = None  # None = about 10 % of the patients
    test_cases: int | None = None  # None = about 20 % of the patients
    trainable: str = "model"
    sam_checkpoint: str | None = None


def _start_model(name: str) -> tuple[dict[str, Any], bool]:
    """The starting model's KSAM config (as a dict) and whether it is trained (fine-tune) or a preset."""
    from ..model.config import NAMED_CONFIGS, get_config
    from ..model.registry import DEFAULT_MODEL_NAME, default_model_dir

    if name == DEFAULT_MODEL_NAME:
        folder = default_model_dir()
    elif Path(name).expanduser().is_dir():
        folder = Path(name).expanduser()
    elif name in NAMED_CONFIGS:
        return get_config(name).to_dict(), False
    else:
        raise InputError(f"--model {name}: not 'default', a model folder, or a preset ({', '.join(NAMED_CONFIGS)})")
    import json

    path = folder / "config.json"
    if not path.is_file():
        raise InputError(f"{folder}: not a model folder (no config.json)")
    return json.loads(path.read_text(encoding="utf-8")), True


def _schedule(steps: int) -> tuple[int, int]:
    """(epochs, steps per epoch) with epochs × steps = ``steps`` exactly and up to 10 validations."""
    if steps < 1:
        raise InputError(f"--steps must be at least 1, got {steps}")
    epochs = next(e for e in range(min(10, steps), 0, -1) if steps % e == 0)
    return epochs, steps // epochs


def _split_sizes(options: QuickOptions) -> tuple[int, int]:
    from .folder_scan import scan_folder
    from .folder_split import assign_patients, default_split_sizes

    scan = scan_folder(options.data)
    assign_patients(scan.cases, options.patients)
    val, test = default_split_sizes(len({c.patient for c in scan.cases}))
    return (val if options.val_cases is None else options.val_cases,
            test if options.test_cases is None else options.test_cases)


def _kind(options: QuickOptions) -> str:
    if options.kind:
        return options.kind
    from .folder_scan import scan_folder

    return "image_folder" if scan_folder(options.data).is_2d() else "volume_folder"


def folder_config(options: QuickOptions) -> TrainConfig:
    """The full training config for ``options`` (validated; relative paths made absolute)."""
    from ..model.user_cache import default_cache_dir

    data, out = options.data.expanduser().resolve(), options.out.expanduser().resolve()
    options = QuickOptions(**{**options.__dict__, "data": data, "out": out})
    model_config, trained = _start_model(options.model)
    frozen = model_config.get("encoder_training") == "frozen" or (
        not trained and model_config.get("pretrained") == "litemedsam") or options.trainable == "heads"
    kind = _kind(options)
    val, test = _split_sizes(options)
    epochs, spe = _schedule(options.steps)
    cache = default_cache_dir() / "training"
    source: dict[str, Any] = {"kind": kind, "root": str(data), "tasks": list(options.structures),
                              "val_cases": val, "test_cases": test, "train_cases": 0, "seed": options.seed,
                              "labels": options.labels, "patients": options.patients}
    if frozen:  # fixed pixels per view: vary them once per case instead of per step
        source.update(randomise=0.4, copies=2, max_slices=12 if kind == "volume_folder" else 0)
    model: dict[str, Any] = {"trainable": options.trainable, "sam_checkpoint": options.sam_checkpoint}
    if trained:
        model.update(name=model_config.get("name", "tiny"),  # informative only: init_from's config wins
                     init_from=str(options.model if options.model == "default" else Path(options.model).resolve()))
    else:
        model.update(name=options.model, overrides={"encoder_training": "frozen"} if frozen else {})
    lr = 1e-4 if trained or options.model == "vit_b" else (2e-4 if frozen else 1e-3)
    return config_from_dict({
        "model": model,
        "data": {"sources": [source], "cache_dir": str(cache / "slices"), "strict": options.strict,
                 "embedding_cache_dir": str(cache / "embeddings") if frozen else None},
        "augment": {"enabled": not frozen},
        "loss": {"iou_weight": 0.05},
        "optim": {"lr": lr, "warmup_steps": min(100, max(1, options.steps // 10)), "batch_size": 8,
                  "epochs": epochs, "steps_per_epoch": spe},
        "validation": {"enabled": val > 0, "patience": 3, "keep_best": True},
        "run": {"out_dir": str(out / RUN_SUBDIR), "seed": options.seed},
    }, where="--data")
