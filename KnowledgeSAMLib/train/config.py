"""Training configuration: typed dataclasses loaded from YAML or JSON, every field documented.

Why dataclasses with ``doc`` metadata: the config file is the experiment's record (it is copied into the
run folder and into the shipped model card), so every knob must be named, typed, range-checked and
explained in one place. ``describe()`` renders the documentation; ``knowledgesam train --describe``
prints it, and docs/training.md is generated from it.

Loading is strict: an unknown key, a wrong type or an out-of-range value is an ``InputError`` naming
the file and the dotted key (``configs/x.yaml: optim.lr: must be > 0, got -1``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from ..errors import InputError

__all__ = [
    "ModelSection", "SourceConfig", "DataSection", "PairSection", "AugmentSection", "LossSection",
    "OptimSection", "ValidationSection", "RunSection", "TrainConfig",
    "load_config", "config_from_dict", "config_to_dict", "apply_overrides", "describe",
    "SOURCE_KINDS", "FOLDER_KINDS", "TRAINABLE_PARTS",
]

FOLDER_KINDS = ("volume_folder", "image_folder")  # a user's own labelled cases (train/folders.py)
SOURCE_KINDS = ("kidney_phantom", "kidney_roi_phantom", "fundus_phantom", "hippocampus", "papila", "totalsegmentator",
                *FOLDER_KINDS)
TRAINABLE_PARTS = ("model", "heads", "lora")


def _f(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = None, **check: Any) -> Any:
    """A dataclass field carrying its documentation and simple range checks (``ge``, ``gt``, ``le``, ``lt``)."""
    metadata = {"doc": doc, **check}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------------------------- sections
@dataclass
class ModelSection:
    """Which network to train and where its starting weights come from."""

    name: str = _f("tiny", "Model preset passed to build_model: 'tiny' (64 px, CI), 'small', 'vit_b' (SAM ViT-B, 512 px).")
    overrides: dict[str, Any] = _f(
        doc="KSAMConfig fields to change on top of the preset, e.g. {use_km: false, use_pm: false} for the "
            "paper's Table 2 ablations. Unknown fields are rejected when the model is built.",
        factory=dict)
    sam_checkpoint: Optional[str] = _f(
        None, "Local path of the SAM image-encoder checkpoint (sam_vit_b_01ec64.pth) for 'vit_b'; null = random "
              "init (only sensible for tiny/small smoke runs). Never downloaded.")
    init_from: Optional[str] = _f(
        None, "Start from a trained KSAM model instead of the preset: 'default' (the embedded model) or a model "
              "directory (save_model output). Its config wins over 'name'; 'overrides' still apply.")
    trainable: str = _f(
        "model", "Which parts learn: 'model' (as the model's config says: encoder_training, train_prompt_encoder, "
                 "freeze_decoder); 'heads' (everything but the image encoder: PrAdaptor, Knowledge Merge, Prompt "
                 "Merge, prompt encoder, mask decoder; the encoder, LoRA included, stays as it is, so its "
                 "embeddings can be cached); 'lora' (only the encoder's LoRA adapters; needs encoder_training: lora).")


@dataclass
class SourceConfig:
    """One training data source: a family of volumes/images turned into 2D slice cases at model size."""

    kind: str = _f(doc="Built-in data (kidney_phantom, kidney_roi_phantom, fundus_phantom, hippocampus, papila, "
                       "totalsegmentator) or your own labelled cases: volume_folder (NIfTI/NRRD/MHA/DICOM volumes "
                       "with label maps or .seg.nrrd) or image_folder (PNG/JPG/BMP images with label images or one "
                       "mask per structure), paired by file name (docs/training.md, 'Your own data').")
    weight: float = _f(1.0, "Relative probability that a batch group is drawn from this source.", gt=0)
    tasks: list[str] = _f(
        doc="Segment names used as tasks (each is a binary 'which structure' prompt). Empty = all segments of the "
            "source (kidney phantoms: artery, medulla, cortex; fundus/PAPILA: disc, cup; hippocampus: head, body; "
            "folders: every structure found). Folders match names case-insensitively; a label value (e.g. '3') "
            "names an unnamed label.",
        factory=list)
    root: Optional[str] = _f(
        None, "Data folder for real datasets and folders (hippocampus, papila, volume_folder, image_folder); "
              "relative paths are resolved against the config file's folder. Ignored by phantoms.")
    preset: Optional[str] = _f(
        None, "Intensity preset name for data.intensity.get_preset (e.g. 'ct-abdomen', 'mr', 'rgb', 'auto'); "
              "null = the source's natural preset (kidney phantoms: ct-abdomen, hippocampus: mr, fundus/papila: "
              "rgb, folders: auto).")
    axis: str = _f("axial", "Slicing axis for volumes: axial, coronal or sagittal (2D images ignore it).")
    train_cases: Optional[int] = _f(
        None, "Phantoms: number of training phantoms (seeds seed .. seed+n-1). Real data: maximum number of "
              "training cases taken from the dataset's train split (0 = all). Folders: maximum number of training "
              "patients (0 = all that the split leaves). null = 8, except for folders: all.", ge=0)
    val_cases: int = _f(
        2, "Phantoms: validation phantoms (seeds seed+1000 ..). Real data: cases moved from the end of the train "
           "split to validation (never trained on). The dataset's test split is never used here. Folders: "
           "patients drawn for validation.", ge=0)
    test_cases: int = _f(
        0, "Folders: patients drawn for testing: never read by training, listed in split.json beside the run "
           "(the held-out cases to evaluate on).", ge=0)
    seed: int = _f(
        0, "Phantoms: first generator seed. Held-out evaluation phantoms use seeds >= 5000. Folders: seed of the "
           "patient split (the same seed and files give the same split).", ge=0)
    labels: Optional[str] = _f(
        None, "Folders: label table (JSON or YAML) naming label values, e.g. {1: liver, 2: spleen}, or giving a "
              "structure several values, e.g. {disc: [0, 128], cup: 0} (REFUGE masks). null = labels.json, "
              "labels.yaml, labels.yml or an nnU-Net dataset.json in the folder if there is one; .seg.nrrd files "
              "name their own segments. Relative paths are resolved like 'root'.")
    patients: Optional[str] = _f(
        None, "Folders: regular expression giving a case's patient ID from its name (the first group, or the "
              "whole match), e.g. '^(RET\\d+)' for PAPILA-style eyes; cases of one patient always share a split. "
              "null = a case's top-level subfolder when it is in one, else the case itself.")
    split_file: Optional[str] = _f(
        None, "Folders: a split.json of an earlier run (or {train: [...], val: [...], test: [...]} patient "
              "lists) to reuse instead of drawing one; patients it does not list are left out.")
    shape: list[int] = _f(
        doc="kidney_phantom volume shape (z, y, x) in voxels (whole abdomen). kidney_roi_phantom ignores it: its "
            "kidney-centred crops have the generator's fixed size.", factory=lambda: [40, 128, 128])
    size: int = _f(256, "Fundus phantom image side in pixels.", ge=16)
    expert: int = _f(1, "PAPILA expert whose contours are used (1 or 2).", ge=1, le=2)
    margin_slices: int = _f(
        3, "Volumes: slices kept beyond the union of the tasks' z-extent on each side; they are the pool of "
           "'negative' target slices (structure absent).", ge=0)
    view: str = _f(
        "full", "'full': whole slices; 'roi': the region around the union of the tasks (over all slices) plus a "
                "random margin, as the engine's --roi auto shows the model (train/views.py); 'region': the same "
                "around one separate structure group drawn at random (one of two kidneys), as the engine's "
                "per-region windows do.")
    roi_margin: list[float] = _f(
        doc="'roi' and 'region' views: range [low, high] of the margin added on each side, as a fraction of the structures' "
            "larger in-plane extent (drawn per view).", factory=lambda: [0.15, 0.5])
    roi_shift: float = _f(0.1, "'roi' and 'region' views: largest off-centring of the crop, as a fraction of its side.", ge=0, le=0.5)
    max_slices: int = _f(
        0, "Volumes: keep at most this many slices per case, evenly spread over the kept range (0 = all); bounds "
           "the encoder work when embeddings are cached.", ge=0)
    randomise: float = _f(
        0.0, "Domain randomisation strength in [0, 1]: intensity window/contrast, gamma, noise, blur, lost "
             "resolution, a smooth shading field and (colour images) per-channel gains, drawn per view (0 = none). Views are fixed per case, so with cached embeddings this is "
             "the only image augmentation.", ge=0, le=1)
    copies: int = _f(1, "Views drawn per volume (each its own case, with its own randomisation and crop).", ge=1)
    test_split: bool = _f(
        True, "Real data: keep the dataset's fixed test split out (always true for msd-hippocampus and PAPILA "
              "evaluation); false = every case is training data (e.g. msd-hippocampus-more, IDs >= 150).")
    tuning_cases: int = _f(
        0, "hippocampus: the first N cases (sorted ids) are tuning data, never trained or validated on: the engine's "
           "settings are chosen on the first 40 of msd-hippocampus-more.", ge=0)
    crop: bool = _f(True, "papila: disc-centred crops (true) or the whole photograph (false).")
    volumes: list[str] = _f(
        doc="totalsegmentator: which example volumes (ct, ct_sm, mr); empty = all three.", factory=list)
    anatomy: bool = _f(
        False, "kidney_phantom: also label the other organs (kidney_right, kidney_left, liver, spleen, aorta, "
               "inferior_vena_cava, vertebra, bowel) as tasks beside artery, medulla and cortex "
               "(data/phantoms/kidney_anatomy.py); name them in 'tasks' or leave 'tasks' empty for all.")
    phase: str = _f(
        "corticomedullary", "kidney_phantom: contrast phase: corticomedullary, non-contrast, portal or random (one "
                            "of the three per seed). Outside the corticomedullary phase artery, medulla and cortex "
                            "are not tasks of that case (they cannot be told apart).")

    @property
    def n_train(self) -> int:
        """``train_cases`` with null resolved: 8 (phantoms, built-in datasets) or 0 = all (folders)."""
        if self.train_cases is not None:
            return self.train_cases
        return 0 if self.kind in FOLDER_KINDS else 8


@dataclass
class DataSection:
    """Where the training slices come from."""

    sources: list[SourceConfig] = _f(doc="Training sources (at least one); see data.sources[*] fields.", factory=list)
    strict: bool = _f(
        False, "Folders: stop at the first data problem (unpaired or unreadable file, labels outside the image, "
               "empty labels, a 2D case among volumes). false = name each one on one line, leave the case out "
               "and go on (the lines are also kept in data.json).")
    cache_dir: Optional[str] = _f(
        None, "Folder (relative to the current directory) for the pre-computed slice cases (npz, keyed by "
              "the source settings except its weight, and the model size). Saves re-generating phantoms / "
              "re-reading volumes on restarts and in every DDP process. null = in memory only.")
    embedding_cache_dir: Optional[str] = _f(
        None, "Folder for cached frozen-encoder embeddings of every training slice (float16, 2 MiB per slice for "
              "'lite'; keyed by slice content and encoder weights; resumable). Set it to train the heads on a "
              "frozen encoder without running it each step: needs model.overrides.encoder_training: frozen, and "
              "image augmentation is then replaced by the sources' per-view randomisation. null = run the encoder.")
    embedding_batch_size: int = _f(1, "Slices per encoder call while filling the embedding cache.", ge=1)


@dataclass
class PairSection:
    """How (target, reference image, reference mask, target mask) knowledge-prompt pairs are drawn (spec §5.10)."""

    tasks_per_target: int = _f(
        2, "Pairs per target slice in a batch, each with a different task: the same image must give different "
           "masks for different prompts, otherwise the model learns to ignore the prompt.", ge=1)
    same_case_prob: float = _f(
        0.3, "Probability that a volume target's reference is a nearby slice of the same case (|dz| <= max_dz); "
             "otherwise it is another case's slice at a similar relative position (|du| <= max_du).", ge=0, le=1)
    max_du: float = _f(
        0.05, "Cross-case references: largest difference of relative slice position u in [0, 1] within the "
              "structure's z-extent (the nearest slice is used if none is that close).", ge=0, le=1)
    max_dz: int = _f(5, "Same-case references: largest slice distance (the reference slice differs from the target).", ge=1)
    negative_fraction: float = _f(
        0.1, "Fraction of pairs whose target slice lacks the structure while the reference has it (the target "
             "mask is empty), so that empty predictions are learnt.", ge=0, le=0.9)


@dataclass
class AugmentSection:
    """Independent augmentation of reference and target (teaches robustness to misalignment)."""

    enabled: bool = _f(True, "Switch all augmentation on/off.")
    rotate_deg: float = _f(10.0, "Largest rotation, degrees (uniform in +-value), drawn separately for reference and target.", ge=0, le=180)
    scale: float = _f(0.1, "Largest relative zoom (uniform in 1 +- value).", ge=0, lt=1)
    shift: float = _f(0.08, "Largest translation as a fraction of the image side.", ge=0, le=0.5)
    flip: str = _f(
        "joint", "'joint': one horizontal flip decision per pair (reference and target mirrored together); "
                 "'independent': separate decisions (mirrors the reference against the target, which fights "
                 "Knowledge Merge's same-location fusion); 'none'.")
    flip_prob: float = _f(0.5, "Probability of a horizontal flip.", ge=0, le=1)
    brightness: float = _f(0.1, "Largest additive intensity shift (images are in [0, 1]).", ge=0, le=1)
    contrast: float = _f(0.1, "Largest relative contrast change around the image mean.", ge=0, lt=1)
    gamma: float = _f(0.2, "Largest log-gamma change: gamma in exp(+-value).", ge=0, le=2)
    noise: float = _f(0.02, "Standard deviation of additive Gaussian noise.", ge=0, le=1)


@dataclass
class LossSection:
    """loss = dice_weight * Dice + (1 - dice_weight) * BCEWithLogits(pos_weight) (spec §5.8 #15)."""

    dice_weight: float = _f(0.8, "Weight w of the soft Dice loss; BCE gets 1 - w.", ge=0, le=1)
    pos_weight: float = _f(1.0, "BCEWithLogits pos_weight (MedSA used 2).", gt=0)
    dice_smooth: float = _f(1.0, "Additive smoothing of the soft Dice (keeps empty targets well defined).", gt=0)
    iou_weight: float = _f(
        0.0, "Weight of an extra MSE loss training the decoder's IoU head to predict the true IoU of the "
             "thresholded mask (spec §5.8 #14). The engine uses that score as a per-slice confidence; 0 = the "
             "paper's loss only (the IoU head then stays untrained).", ge=0)


@dataclass
class OptimSection:
    """Adam with linear warmup then polynomial decay (spec §5.8 #16)."""

    lr: float = _f(1e-4, "Peak learning rate.", gt=0)
    betas: list[float] = _f(doc="Adam betas.", factory=lambda: [0.9, 0.999])
    weight_decay: float = _f(0.0, "Adam weight decay (L2).", ge=0)
    warmup_steps: int = _f(250, "Linear warmup length in optimiser steps (from lr/warmup to lr).", ge=0)
    poly_power: float = _f(0.9, "Decay after warmup: lr * (1 - t)^power, t going 0 -> 1 over the remaining steps.", ge=0)
    min_lr_ratio: float = _f(0.0, "Floor of the decayed learning rate, as a fraction of lr.", ge=0, le=1)
    grad_clip: Optional[float] = _f(1.0, "Clip the global gradient norm to this value; null = no clipping.", gt=0)
    batch_size: int = _f(4, "Pairs per optimiser step per process (DDP: the global batch is world_size times this).", ge=1)
    epochs: int = _f(300, "Number of epochs; validation and checkpoints happen at epoch ends.", ge=1)
    steps_per_epoch: int = _f(
        100, "Optimiser steps per epoch (sampling is with replacement, so an epoch is a step budget). 0 = one pass "
             "over the data: every training slice once as a target, i.e. ceil(slices x tasks_per_target / "
             "(batch_size x processes)) steps (the paper's epochs).", ge=0)


@dataclass
class ValidationSection:
    """Per-structure Dice on held-out validation cases at every epoch end."""

    enabled: bool = _f(True, "Run validation at epoch ends (needs val_cases > 0 in some source).")
    max_slices_per_case: int = _f(
        8, "Volumes: target slices per case and task, evenly spread over the stored range (0 = all).", ge=0)
    batch_size: int = _f(8, "Pairs per forward pass.", ge=1)
    threshold: float = _f(0.5, "Probability threshold for the binary prediction.", gt=0, lt=1)
    patience: int = _f(
        0, "Early stopping: stop after this many validations in a row without a better mean Dice (by more than "
           "min_delta); 0 = never stop early.", ge=0)
    min_delta: float = _f(0.0, "Early stopping: smallest rise of the mean validation Dice that counts as better.", ge=0)
    keep_best: bool = _f(
        False, "Save the weights of the best validation (mean Dice) as the run's model instead of the last ones.")


@dataclass
class RunSection:
    """Output, reproducibility and hardware."""

    out_dir: str = _f("runs/train", "Run folder (relative to the current directory): config copy, CSV logs, checkpoints, final model.")
    seed: int = _f(0, "Seed of model init, pair sampling and augmentation (each DDP rank offsets the sampler seed).", ge=0)
    device: str = _f("auto", "'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'. Under torchrun the local rank picks the GPU.")
    amp: str = _f("auto", "Mixed precision: 'auto' (bf16 if supported else fp16 with a grad scaler, CUDA only), 'fp16', 'bf16', 'off'. Never on CPU.")
    log_every: int = _f(10, "Write a train_log.csv row every this many steps (mean over the interval).", ge=1)
    checkpoint_every: int = _f(1, "Save a checkpoint every this many epochs (the last epoch always saves).", ge=1)
    keep_checkpoints: int = _f(2, "Keep only the newest this many checkpoints.", ge=1)
    threads: int = _f(0, "torch CPU threads per process (0 = leave torch's default).", ge=0)


@dataclass
class TrainConfig:
    """A whole training run. Sections: model, data, pairs, augment, loss, optim, validation, run."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    pairs: PairSection = field(default_factory=PairSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    run: RunSection = field(default_factory=RunSection)

    @property
    def total_steps(self) -> int:
        """Optimiser steps of the run; 0 while ``steps_per_epoch`` is 0 (one data pass, known once the data is)."""
        return self.optim.epochs * self.optim.steps_per_epoch


# --------------------------------------------------------------------------------------------- checks
_CHOICES: dict[str, tuple[str, ...]] = {
    "SourceConfig.kind": SOURCE_KINDS,
    "SourceConfig.axis": ("axial", "coronal", "sagittal"),
    "AugmentSection.flip": ("joint", "independent", "none"),
    "RunSection.amp": ("auto", "fp16", "bf16", "off"),
    "ModelSection.trainable": TRAINABLE_PARTS,
}


def _semantic_checks(cfg: TrainConfig, where: str) -> None:
    """Cross-field rules that a type alone cannot express."""
    from ..data.phantoms.kidney_anatomy import PHASES

    def fail(key: str, message: str) -> None:
        raise InputError(f"{where}: {key}: {message}")

    if not cfg.data.sources:
        fail("data.sources", "needs at least one source (kidney_phantom, fundus_phantom, hippocampus, papila)")
    for i, src in enumerate(cfg.data.sources):
        key = f"data.sources[{i}]"
        if src.kind in ("hippocampus", "papila", "totalsegmentator", *FOLDER_KINDS) and not src.root:
            fail(f"{key}.root", f"a {src.kind} source needs the dataset folder")
        if src.kind not in FOLDER_KINDS:
            for name in ("labels", "patients", "split_file"):
                if getattr(src, name) is not None:
                    fail(f"{key}.{name}", f"is for volume_folder and image_folder sources, not {src.kind}")
            if src.test_cases:
                fail(f"{key}.test_cases", f"is for volume_folder and image_folder sources, not {src.kind}")
        if src.tuning_cases and src.kind != "hippocampus":
            fail(f"{key}.tuning_cases", f"is for hippocampus sources, not {src.kind}")
        if src.patients is not None:
            import re

            try:
                re.compile(src.patients)
            except re.error as error:
                fail(f"{key}.patients", f"not a valid regular expression: {error}")
        if src.view not in ("full", "roi", "region"):
            fail(f"{key}.view", f"must be full, roi or region, got {src.view!r}")
        if len(src.roi_margin) != 2 or not 0 <= src.roi_margin[0] <= src.roi_margin[1]:
            fail(f"{key}.roi_margin", f"must be [low, high] with 0 <= low <= high, got {src.roi_margin}")
        if src.kind == "kidney_phantom":
            if len(src.shape) != 3 or min(src.shape) < 8:
                fail(f"{key}.shape", f"must be 3 sizes (z, y, x) of at least 8, got {src.shape}")
        if src.phase not in PHASES:
            fail(f"{key}.phase", f"must be one of {', '.join(PHASES)}, got {src.phase!r}")
        if (src.anatomy or src.phase != "corticomedullary") and src.kind != "kidney_phantom":
            fail(f"{key}.anatomy" if src.anatomy else f"{key}.phase", f"is for kidney_phantom sources, not {src.kind}")
        if src.phase != "corticomedullary" and {"artery", "medulla", "cortex"} & set(src.tasks):
            fail(f"{key}.tasks", f"artery, medulla and cortex cannot be told apart in phase {src.phase!r} (only "
                                 "in the corticomedullary phase): leave them out, or use a second source")
        if src.phase != "corticomedullary" and not src.anatomy:
            fail(f"{key}.phase", "a phase other than corticomedullary leaves no task without anatomy: true")
        if src.kind.endswith("_phantom") and src.n_train < 1:
            fail(f"{key}.train_cases", "a phantom source needs at least one training case")
        if len(set(src.tasks)) != len(src.tasks):
            fail(f"{key}.tasks", f"lists a task twice: {src.tasks}")
    if len(cfg.optim.betas) != 2 or not all(0 <= b < 1 for b in cfg.optim.betas):
        fail("optim.betas", f"must be two numbers in [0, 1), got {cfg.optim.betas}")
    dev = cfg.run.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        fail("run.device", f"must be auto, cpu, cuda or cuda:N, got {dev!r}")
    if cfg.optim.steps_per_epoch and cfg.optim.warmup_steps > cfg.total_steps:
        fail("optim.warmup_steps", f"{cfg.optim.warmup_steps} exceeds the {cfg.total_steps} training steps")


# --------------------------------------------------------------------------------------------- loading
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if origin is Literal:
        return " | ".join(map(repr, typing.get_args(tp)))
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (ints accepted for floats)."""

    def fail(detail: str = "") -> None:
        got = f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__
        raise InputError(f"{where}: {key}: expected {_type_name(tp)}, got {got}{detail}")

    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], key, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail()
        return _build(tp, value, key, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            fail()
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            fail()
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            fail()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
        return value
    if tp is float:
        if isinstance(value, str):  # YAML reads "1e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                fail()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail()
        return value
    if tp is Any:
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {key}")  # a bug in this file, not user input


def _build(cls: type, data: dict[str, Any], prefix: str, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        dotted = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise InputError(f"{where}: {dotted}: unknown setting (known: {', '.join(fields)})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        converted = _convert(value, hints[name], key, where)
        meta = fields[name].metadata
        if converted is not None and isinstance(converted, (int, float)) and not isinstance(converted, bool):
            for op, test, text in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                                   ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
                if op in meta and not test(converted, meta[op]):
                    raise InputError(f"{where}: {key}: must be {text} {meta[op]}, got {converted}")
        choices = _CHOICES.get(f"{cls.__name__}.{name}")
        if choices and converted not in choices:
            raise InputError(f"{where}: {key}: must be one of {', '.join(choices)}, got {converted!r}")
        kwargs[name] = converted
    missing = [f.name for f in fields.values()
               if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        dotted = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise InputError(f"{where}: {dotted}: required setting is missing")
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build and validate a TrainConfig from plain data; ``where`` names the source in error messages."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: the top level must be a mapping of sections, got {type(data).__name__}")
    cfg = _build(TrainConfig, data, "", where)
    _semantic_checks(cfg, where)
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) training config; relative data roots are
    resolved against the config file's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: training config not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise InputError(f"{path}: training config must end in .yaml, .yml or .json")
    except (json.JSONDecodeError, ValueError) as error:
        raise InputError(f"{path}: not valid JSON: {error}") from None
    except Exception as error:  # yaml.YAMLError and friends
        if isinstance(error, InputError):
            raise
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{path}: not valid YAML: {first}") from None
    cfg = config_from_dict(data if data is not None else {}, where=str(path))
    for src in cfg.data.sources:
        for name in ("root", "labels", "split_file"):
            value = getattr(src, name)
            if value and not Path(value).is_absolute():
                setattr(src, name, str((path.parent / value).resolve()))
    return cfg


def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain-data form (JSON/YAML-serialisable); ``config_from_dict(config_to_dict(c)) == c``."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: TrainConfig, assignments: list[str], where: str = "--set") -> TrainConfig:
    """Apply ``section.key=value`` strings (value parsed as YAML) and re-validate, e.g.
    ``optim.lr=3e-4`` or ``model.overrides={use_km: false}``."""
    import yaml

    data = config_to_dict(cfg)
    for item in assignments:
        if "=" not in item:
            raise InputError(f"{where}: {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        node: Any = data
        for part in parts[:-1]:
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                raise InputError(f"{where}: {dotted}: no such setting")
        try:
            value = yaml.safe_load(raw)
        except Exception:
            raise InputError(f"{where}: {dotted}: cannot parse value {raw!r}") from None
        last = parts[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise InputError(f"{where}: {dotted}: no such setting")
    return config_from_dict(data, where=where)


def describe() -> str:
    """Markdown reference of every setting: key, type, default and documentation."""
    lines = ["# Training configuration reference", "",
             "Generated from `KnowledgeSAMLib/train/config.py` (`knowledgesam train --describe`).", ""]

    def section(cls: type, prefix: str) -> None:
        lines.extend([f"## `{prefix}`", "", (cls.__doc__ or "").strip(), "",
                      "| key | type | default | meaning |", "|---|---|---|---|"])
        hints = typing.get_type_hints(cls)
        nested = []
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if f.default is not dataclasses.MISSING:
                default = json.dumps(f.default)
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = json.dumps(f.default_factory()) if not dataclasses.is_dataclass(tp) else "-"
            else:
                default = "(required)"
            doc = f.metadata.get("doc", "")
            choices = _CHOICES.get(f"{cls.__name__}.{f.name}")
            if choices:
                doc += f" Choices: {', '.join(choices)}."
            lines.append(f"| `{prefix}.{f.name}` | {_type_name(tp)} | `{default}` | {doc} |")
            if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
                nested.append((typing.get_args(tp)[0], f"{prefix}.{f.name}[*]"))
        lines.append("")
        for sub, name in nested:
            section(sub, name)

    for f in dataclasses.fields(TrainConfig):
        section(typing.get_type_hints(TrainConfig)[f.name], f.name)
    return "\n".join(lines)
