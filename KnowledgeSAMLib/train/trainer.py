"""The training loop: pairs → augmentation → KSAM → BCE + Dice → Adam, with validation and checkpoints.

One :class:`Trainer` runs one configured job, single-process or as one rank of a torchrun/DDP job. It
writes into ``run.out_dir``: ``config.json`` (the resolved config), ``data.json`` (which cases were used
for training and validation), ``train_log.csv`` (loss terms, lr, grad norm, speed every ``log_every``
steps), ``val_log.csv`` (Dice per structure each epoch), ``checkpoints/`` (trainable tensors + optimiser,
scheduler, scaler and sampler state for ``--resume``) and ``model/`` (``save_model`` output) at the end; with
folder sources also ``split.json`` (the patient split: which cases trained, validated and are held out).

Numerics: the loss is computed in float32 outside autocast, the Prompt Parser runs in float32 inside it
(model/prompt_parser.py), and a step whose loss is not finite is counted (``nonfinite`` in train_log.csv,
``nonfinite_steps`` in summary.json) and warned about once such steps pass 1 % of the steps so far.

Reproducibility: the model is built right after ``torch.manual_seed(run.seed)`` on every rank, so
random-init frozen weights agree across ranks and across resumes (checked by fingerprint); pair sampling
and augmentation draw from one numpy generator per rank whose state is checkpointed, so a resumed run
continues with the batches the uninterrupted run would have drawn (bit-identical on CPU).
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..errors import CancelledError, InputError, KnowledgeSAMError
from .augment import augment_pair_batch
from .checkpoint import frozen_fingerprint, latest_checkpoint, load_checkpoint, save_checkpoint
from .config import TrainConfig, config_to_dict
from .distributed import (DistContext, all_gather_objects, all_reduce_sum, barrier, broadcast_object,
                          init_distributed)
from .loss import BceDiceLoss
from .pairs import PairBatch, PairSampler
from .parts import restore_trainable, select_trainable
from .schedule import warmup_poly_scheduler
from .sources import Source, build_sources, sources_summary
from .validate import validation_dice

__all__ = ["Trainer", "TrainResult", "build_train_model", "ProgressFn"]

#: ``progress(event, done, total, info)``; events: "data" (a case was built), "problem" (a data problem,
#: ``info["line"]``), "embeddings" (slices encoded into the embedding cache), "step", "val", "checkpoint",
#: "warning" (``info["message"]``), "stopped" (early stopping, ``info["reason"]``).
ProgressFn = Callable[[str, int, int, dict], None]

_TRAIN_FIELDS = ["step", "epoch", "lr", "loss", "bce", "dice_loss", "iou_loss", "grad_norm", "negatives",
                 "skipped", "nonfinite", "steps_per_s", "elapsed_s"]
NONFINITE_WARN_FRACTION = 0.01  # warn once non-finite losses pass this fraction of the steps so far
BEST_WEIGHTS = "best_trainable.safetensors"  # validation.keep_best: the best epoch's trainable tensors


@dataclass
class TrainResult:
    """What a finished run produced."""

    out_dir: Path
    steps: int
    first_loss: float  # mean of the first logged interval
    last_loss: float  # mean of the last logged interval
    val: dict[str, float] = field(default_factory=dict)  # last validation Dice per structure
    model_dir: Path | None = None
    steps_per_s: float = 0.0  # training steps per second (excluding data building and validation)


def build_train_model(cfg: TrainConfig) -> nn.Module:
    """The model a config asks for (preset + overrides, or ``init_from`` a trained model)."""
    from ..model.config import KSAMConfig, get_config

    m = cfg.model
    try:
        if m.init_from:
            from ..model.registry import resolve_model

            base = resolve_model(m.init_from, sam_checkpoint=m.sam_checkpoint)
            if not m.overrides:
                return base
            config = base.config.replace(**m.overrides)
        else:
            config = get_config(m.name).replace(**m.overrides) if m.overrides else get_config(m.name)
    except (ValueError, TypeError) as error:
        raise InputError(f"model: {error}") from None
    assert isinstance(config, KSAMConfig)
    from .. import build_model

    model = build_model(config, sam_checkpoint=m.sam_checkpoint)
    if m.init_from:
        # overrides may add or drop heads (e.g. an ablation): load what fits, new parts keep their init
        own = model.state_dict()
        fitting = {k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape}
        model.load_state_dict(fitting, strict=False)
    return model


class _PairForward(nn.Module):
    """What DDP wraps: one forward giving logits (and IoU-head scores when the model can decode).

    With cached embeddings (``target_embedding``, ``ref_embedding``) the encoder is skipped: the reference
    prompt is built from the reference's cached embedding and the heads decode the target's.
    """

    def __init__(self, model: nn.Module, with_iou: bool) -> None:
        super().__init__()
        self.model = model
        self.with_iou = with_iou

    def forward(self, target: torch.Tensor, ref_image: torch.Tensor, ref_mask: torch.Tensor,
                target_embedding: torch.Tensor | None = None, ref_embedding: torch.Tensor | None = None):
        if target_embedding is not None:
            prompt = self.model.encode_reference(ref_image, ref_mask, embeddings=ref_embedding)
            logits, iou = self.model.decode(target_embedding, prompt)
            return logits, (iou if self.with_iou else None)
        if not self.with_iou:
            return self.model(target, ref_image, ref_mask), None
        return self.model.predict(target, ref_image, ref_mask)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _amp_dtype(choice: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or choice == "off":
        return None
    if choice == "bf16" or (choice == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


class _CsvLog:
    """Append-only CSV written by rank 0; on resume, rows after the resumed step are dropped."""

    def __init__(self, path: Path, fields: list[str], keep_until_step: int | None) -> None:
        self.path, self.fields = path, fields
        rows: list[dict] = []
        if keep_until_step is not None and path.is_file():
            with path.open(newline="", encoding="utf-8") as handle:
                rows = [r for r in csv.DictReader(handle) if int(float(r.get("step", 0))) <= keep_until_step]
            old_fields = list(rows[0].keys()) if rows else []
            self.fields = fields + [f for f in old_fields if f not in fields]
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, self.fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


@dataclass
class _Job:
    """What one fit() builds once and every loop helper uses (one object instead of a dozen arguments)."""

    sources: list[Source]
    spe: int  # steps per epoch
    total: int  # planned steps
    sampler: PairSampler
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    loss_fn: BceDiceLoss
    net: nn.Module  # _PairForward, DDP-wrapped when distributed
    fingerprint: str  # frozen weights' fingerprint, checked on resume
    labels: list[str]  # "source/structure" columns of val_log.csv
    train_log: _CsvLog | None = None  # rank 0 only
    val_log: _CsvLog | None = None


@dataclass
class _LoopState:
    """The training loop's mutable state; step, best, stale and nonfinite travel in checkpoints."""

    step: int = 0
    best: dict[str, float] = field(default_factory=dict)
    stale: int = 0  # validations without improvement
    nonfinite: int = 0  # steps with a non-finite loss, all ranks
    skipped: int = 0  # steps where the optimiser did not step (this rank)
    logged: list[float] = field(default_factory=list)  # mean loss of every logged interval
    train_time: float = 0.0  # seconds spent in training steps
    t_start: float = 0.0
    t_interval: float = 0.0  # start of the current log interval
    # per-interval sums: loss, bce, dice, iou, negatives, finite count, steps
    interval: torch.Tensor = field(default_factory=lambda: torch.zeros(7, dtype=torch.float64))
    grad_norm: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    last_val: dict[str, float] = field(default_factory=dict)
    warned: bool = False  # the non-finite warning was given
    stopped: bool = False  # early stopping ended the run


class Trainer:
    """Runs one training job described by a :class:`TrainConfig`.

    ``model`` and ``sources`` may be given (tests, benchmarks); otherwise they are built from the config.
    ``resume``: None (fresh run; the run folder must not hold one), ``"auto"`` (latest checkpoint of
    ``out_dir``) or a checkpoint folder.
    """

    def __init__(self, config: TrainConfig, *, model: nn.Module | None = None,
                 sources: list[Source] | None = None, resume: str | Path | None = None,
                 ctx: DistContext | None = None, progress: ProgressFn | None = None,
                 cancel: Any | None = None) -> None:
        self.cfg = config
        self.resume = resume
        self.ctx = ctx or init_distributed(config.run.device)
        self.progress = progress or (lambda *a: None)
        self.cancel = cancel
        self.out_dir = Path(config.run.out_dir)
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        _seed_everything(config.run.seed)
        self.model = (model if model is not None else build_train_model(config)).to(self.ctx.device)
        self._own_trainable = select_trainable(self.model, config.model.trainable)
        self.size = int(self.model.config.image_size)
        self._sources = sources
        self._total = config.total_steps

    # ------------------------------------------------------------------------------------------ setup
    def _check_cancel(self) -> None:
        if self.cancel is not None and getattr(self.cancel, "cancelled", False):
            raise CancelledError("training was cancelled; a checkpoint was saved, continue with --resume")

    def _cancel_requested(self, step: int) -> bool:
        """Single process: the token. DDP: a collective check every ``log_every`` steps, so that all
        ranks stop at the same step (a lone rank leaving would hang the others in the all-reduce)."""
        flag = self.cancel is not None and bool(getattr(self.cancel, "cancelled", False))
        if not self.ctx.distributed:
            return flag
        if step % self.cfg.run.log_every:
            return False
        return bool(all_reduce_sum(torch.tensor([1.0 if flag else 0.0]), self.ctx)[0] > 0)

    def _build_sources(self) -> list[Source]:
        if self._sources is not None:
            return self._sources
        cfg, ctx = self.cfg, self.ctx
        report = lambda name: self.progress("data", 0, 0, {"case": name})  # noqa: E731
        warn = lambda line: self.progress("problem", 0, 0, {"line": line})  # noqa: E731
        if cfg.data.cache_dir and ctx.distributed:  # rank 0 fills the cache, the others read it
            failed = None
            if ctx.is_main:
                try:
                    build_sources(cfg.data.sources, self.size, cfg.data.cache_dir, report, cfg.data.strict, warn)
                except KnowledgeSAMError as error:  # e.g. data.strict: every rank stops, none waits forever
                    failed = str(error)
            failed = broadcast_object(failed, ctx)
            if failed:
                raise InputError(failed)
            warn = None  # said while filling the cache
        sources = build_sources(cfg.data.sources, self.size, cfg.data.cache_dir, report if ctx.is_main else None,
                                cfg.data.strict, warn if ctx.is_main else None)
        if cfg.data.embedding_cache_dir:
            self._attach_embeddings(sources)
        return sources

    def _attach_embeddings(self, sources: list[Source]) -> None:
        """Fill (rank 0) and attach the frozen encoder's cached embeddings of every slice."""
        from .embedding_store import attach_embeddings

        cfg, ctx = self.cfg, self.ctx
        report = lambda name, done, total: self.progress("embeddings", done, total, {"source": name})  # noqa: E731
        kwargs = dict(device=ctx.device, batch_size=cfg.data.embedding_batch_size)
        if ctx.is_main:
            attach_embeddings(sources, self.model, cfg.data.embedding_cache_dir, progress=report,
                              cancel=None if ctx.distributed else self._check_cancel, **kwargs)
        barrier(ctx)
        if not ctx.is_main:
            attach_embeddings(sources, self.model, cfg.data.embedding_cache_dir, encode=False, **kwargs)

    def _prepare_out_dir(self) -> Path | None:
        """The checkpoint to resume from (None = fresh); refuses to overwrite an existing run."""
        if self.resume is None:
            taken = (self.out_dir / "train_log.csv").exists() or latest_checkpoint(self.out_dir) is not None
            if broadcast_object(taken if self.ctx.is_main else None, self.ctx):  # every rank stops, none hangs
                raise InputError(f"{self.out_dir}: already holds a training run; pass --resume to continue it "
                                 f"or choose another run.out_dir")
            return None
        path = latest_checkpoint(self.out_dir) if str(self.resume) == "auto" else Path(self.resume)
        if path is None:
            raise InputError(f"{self.out_dir}: no checkpoint to resume from")
        if not path.is_dir():
            raise InputError(f"{path}: checkpoint folder not found")
        return path

    def _steps_per_epoch(self, sources: list[Source]) -> int:
        """``optim.steps_per_epoch``, or (0) one pass: every training slice once as a target."""
        cfg = self.cfg
        if cfg.optim.steps_per_epoch:
            return cfg.optim.steps_per_epoch
        slices = sum(c.n for s in sources for c in s.train)
        pairs = slices * cfg.pairs.tasks_per_target
        return max(1, math.ceil(pairs / (cfg.optim.batch_size * self.ctx.world_size)))

    def _check_numerics(self, nonfinite: int, step: int, warned: bool) -> bool:
        """Warn (once) when non-finite losses pass NONFINITE_WARN_FRACTION of the steps; True once warned."""
        if warned or not nonfinite or nonfinite <= NONFINITE_WARN_FRACTION * step * self.ctx.world_size:
            return warned
        message = (f"{nonfinite} of {step * self.ctx.world_size} training steps so far had a non-finite loss "
                   f"(skipped); more than {NONFINITE_WARN_FRACTION:.0%} means the numerics are not sound: try "
                   f"run.amp: bf16 or off, a lower optim.lr, or optim.grad_clip")
        if self.ctx.is_main:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            self.progress("warning", step, self._total, {"message": message})
        return True

    def _save_best(self, model: nn.Module) -> None:
        """Keep the trainable tensors of the best validation so far (rank 0; resumable: a file in the run)."""
        from safetensors.torch import save_file

        from .checkpoint import trainable_state

        if self.ctx.is_main:
            save_file(trainable_state(model), str(self.out_dir / BEST_WEIGHTS))

    def _load_best(self, model: nn.Module) -> bool:
        from safetensors.torch import load_file

        path = self.out_dir / BEST_WEIGHTS
        if not path.is_file():
            return False
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in load_file(str(path)).items():
                params[name].copy_(tensor)
        return True

    # ------------------------------------------------------------------------------------------ run
    def fit(self) -> TrainResult:
        """Run the job: set up (or resume), train to the planned steps or an early stop, save the model."""
        resume_from = self._prepare_out_dir()
        barrier(self.ctx)
        job = self._build_job()
        state = self._restore(job, resume_from)
        self._open_logs(job, state.step if resume_from is not None else None)
        state.t_interval = state.t_start = time.perf_counter()
        self._run_loop(job, state)
        return self._finish(job, state)

    def _build_job(self) -> _Job:
        """Data, sampler, optimiser, schedule, AMP scaler, loss and forward, built in this fixed order on every
        rank: the random streams a resumed run restores depend on it."""
        cfg, ctx, model = self.cfg, self.ctx, self.model
        sources = self._build_sources()
        spe = self._steps_per_epoch(sources)
        total = self._total = cfg.optim.epochs * spe
        if cfg.optim.warmup_steps > total:
            raise InputError(f"optim.warmup_steps: {cfg.optim.warmup_steps} exceeds the {total} training steps "
                             f"({cfg.optim.epochs} epochs of {spe})")
        seq = np.random.SeedSequence([cfg.run.seed, ctx.rank])
        sampler = PairSampler(sources, cfg.pairs, seed=int(seq.generate_state(1)[0]))
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise KnowledgeSAMError("the model has no trainable parameters")
        optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                     weight_decay=cfg.optim.weight_decay)
        scheduler = warmup_poly_scheduler(optimizer, total, cfg.optim.warmup_steps, cfg.optim.poly_power,
                                          cfg.optim.min_lr_ratio)
        amp_dtype = _amp_dtype(cfg.run.amp, ctx.device)
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
        loss_fn = BceDiceLoss(cfg.loss.dice_weight, cfg.loss.pos_weight, cfg.loss.dice_smooth).to(ctx.device)
        net = self._build_net()
        return _Job(sources=sources, spe=spe, total=total, sampler=sampler, params=params, optimizer=optimizer,
                    scheduler=scheduler, amp_dtype=amp_dtype, scaler=scaler, loss_fn=loss_fn, net=net,
                    fingerprint=frozen_fingerprint(model),
                    labels=[f"{s.name}/{t}" for s in sources for t in s.tasks if s.val])

    def _build_net(self) -> nn.Module:
        """The forward that trains: logits (and IoU scores when loss.iou_weight asks), DDP-wrapped when
        distributed so gradients are all-reduced."""
        cfg, ctx, device = self.cfg, self.ctx, self.ctx.device
        with_iou = cfg.loss.iou_weight > 0 and hasattr(self.model, "predict")
        if cfg.loss.iou_weight > 0 and not with_iou:
            raise InputError("loss.iou_weight > 0 needs a model with predict() returning (logits, iou)")
        net: nn.Module = _PairForward(self.model, with_iou)
        if ctx.distributed:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=True)  # ablations and the IoU head leave parameters unused
        return net

    def _restore(self, job: _Job, resume_from: Path | None) -> _LoopState:
        """The loop's starting state: fresh, or the checkpoint's, with optimiser, schedule, scaler, sampler and
        torch RNG restored so the resumed run draws exactly what the uninterrupted one would have."""
        state = _LoopState()
        if resume_from is None:
            return state
        ctx = self.ctx
        saved, meta = load_checkpoint(resume_from, self.model, map_location=ctx.device)
        if meta.get("frozen_fingerprint") != job.fingerprint:
            raise KnowledgeSAMError(f"{resume_from}: the frozen weights differ from the checkpoint's "
                                    f"(different model.name, sam_checkpoint or run.seed?)")
        if meta.get("world_size") != ctx.world_size:
            raise InputError(f"{resume_from}: saved by {meta.get('world_size')} processes, resumed with "
                             f"{ctx.world_size}; resume with the same number")
        job.optimizer.load_state_dict(saved["optimizer"])
        job.scheduler.load_state_dict(saved["scheduler"])
        job.scaler.load_state_dict(saved["scaler"])
        job.sampler.load_state_dict(meta["samplers"][ctx.rank])
        torch.set_rng_state(saved["torch_rng"][ctx.rank].cpu())
        state.step = int(meta["step"])
        state.best = meta.get("best_val", {})
        state.stale, state.nonfinite = int(meta.get("stale", 0)), int(meta.get("nonfinite", 0))
        return state

    def _open_logs(self, job: _Job, keep_until_step: int | None) -> None:
        """Rank 0 records the run (config.json, data.json, split.json) and opens the CSV logs; a resume keeps
        the rows up to its step so the logs read as one uninterrupted run."""
        if not self.ctx.is_main:
            return
        sources = job.sources
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "config.json").write_text(json.dumps(config_to_dict(self.cfg), indent=1), encoding="utf-8")
        (self.out_dir / "data.json").write_text(json.dumps(sources_summary(sources), indent=1), encoding="utf-8")
        splits = {s.name: s.split for s in sources if s.split is not None}
        if splits:
            (self.out_dir / "split.json").write_text(json.dumps(splits, indent=1), encoding="utf-8")
        job.train_log = _CsvLog(self.out_dir / "train_log.csv", _TRAIN_FIELDS, keep_until_step)
        job.val_log = _CsvLog(self.out_dir / "val_log.csv", ["epoch", "step", "mean", *job.labels], keep_until_step)

    def _run_loop(self, job: _Job, state: _LoopState) -> None:
        """Step until the planned total or an early stop; on cancel, checkpoint first so --resume continues."""
        cfg = self.cfg
        job.net.train()
        try:
            while state.step < job.total:
                if self._cancel_requested(state.step):
                    raise CancelledError(f"training was cancelled at step {state.step}; a checkpoint was saved, "
                                         f"continue with --resume")
                self._train_step(job, state)
                if state.step % cfg.run.log_every == 0 or state.step == job.total:
                    self._log_interval(job, state)
                if (state.step % job.spe == 0 or state.step == job.total) and self._end_epoch(job, state):
                    break
        except CancelledError:
            epoch = (state.step - 1) // job.spe + 1 if state.step else 0
            if state.step:  # keep what was learnt: resume continues from here
                self._save(job, state, epoch)
            raise

    def _train_step(self, job: _Job, state: _LoopState) -> None:
        """One optimiser step on one sampled batch, added to the log interval's sums."""
        t0 = time.perf_counter()
        batch = job.sampler.sample(self.cfg.optim.batch_size)
        loss, parts, iou_loss = self._forward_loss(job, batch)
        job.optimizer.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss))
        if not self._backward_step(job, state, loss, finite):
            state.skipped += 1
        job.scheduler.step()
        state.step += 1
        state.train_time += time.perf_counter() - t0
        state.interval += torch.tensor([float(loss.detach()) if finite else 0.0, float(parts.bce),
                                        float(parts.dice), float(iou_loss.detach()), float(batch.negative.mean()),
                                        1.0 if finite else 0.0, 1.0], dtype=torch.float64)
        self.progress("step", state.step, job.total,
                      {"loss": float(loss.detach()), "lr": job.scheduler.get_last_lr()[0]})

    def _forward_loss(self, job: _Job, batch: PairBatch) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """The batch's total loss (BCE + Dice, plus the weighted IoU-head loss), its parts and the IoU loss;
        the loss is computed in float32 outside autocast."""
        cfg, device = self.cfg, self.ctx.device
        target, target_mask, ref_image, ref_mask = self._to_device(batch, device)
        cached = self._embeddings_to_device(batch, device)
        if cached is None:  # cached embeddings fix the pixels: views carry their own randomisation
            target, target_mask, ref_image, ref_mask = augment_pair_batch(
                target, target_mask, ref_image, ref_mask, job.sampler.rng, cfg.augment)
        with torch.autocast(device.type, dtype=job.amp_dtype, enabled=job.amp_dtype is not None):
            logits, iou = job.net(target, ref_image, ref_mask, *(cached or ()))
        parts = job.loss_fn(logits, target_mask)
        loss = parts.total
        iou_loss = torch.zeros((), device=device)
        if iou is not None:
            iou_loss = self._iou_head_loss(logits, iou, target_mask)
            loss = loss + cfg.loss.iou_weight * iou_loss
        return loss, parts, iou_loss

    @staticmethod
    def _iou_head_loss(logits: torch.Tensor, iou: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the IoU head against the prediction's true IoU (an empty union counts as 1)."""
        with torch.no_grad():
            pred = logits.detach() > 0
            gt = target_mask > 0.5
            inter = (pred & gt).flatten(1).sum(1).float()
            union = (pred | gt).flatten(1).sum(1).float()
            true_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        return torch.mean((iou.float().reshape(-1) - true_iou) ** 2)

    def _backward_step(self, job: _Job, state: _LoopState, loss: torch.Tensor, finite: bool) -> bool:
        """Backward, clip and step; True when the optimiser stepped (a non-finite step is skipped)."""
        if not (finite or self.ctx.distributed):  # every rank must join the gradient all-reduce
            return False
        scaler = job.scaler
        scaler.scale(loss).backward()
        scaler.unscale_(job.optimizer)
        state.grad_norm = nn.utils.clip_grad_norm_(job.params, self.cfg.optim.grad_clip or math.inf)
        # the decision uses the all-reduced gradients, so all ranks agree; a non-finite loss on
        # any rank makes them non-finite everywhere. The fp16 scaler skips such steps itself.
        stepped = False
        if scaler.is_enabled() or bool(torch.isfinite(state.grad_norm)):
            scaler.step(job.optimizer)
            stepped = bool(torch.isfinite(state.grad_norm))
        scaler.update()
        return stepped

    def _log_interval(self, job: _Job, state: _LoopState) -> None:
        """Every log_every steps (and at the end): sum the interval over ranks, count its non-finite steps,
        and write train_log.csv's row (rank 0)."""
        ctx = self.ctx
        summed = all_reduce_sum(state.interval, ctx)
        n = max(1.0, float(summed[5]))
        state.nonfinite += int(round(float(summed[6]) - float(summed[5])))
        state.warned = self._check_numerics(state.nonfinite, state.step, state.warned)
        now = time.perf_counter()
        mean_loss = float(summed[0]) / n
        state.logged.append(mean_loss)
        if job.train_log is not None:
            job.train_log.write({
                "step": state.step, "epoch": (state.step - 1) // job.spe + 1, "lr": job.scheduler.get_last_lr()[0],
                "loss": mean_loss, "bce": float(summed[1]) / n, "dice_loss": float(summed[2]) / n,
                "iou_loss": float(summed[3]) / n, "grad_norm": float(state.grad_norm),
                "negatives": float(summed[4]) / n, "skipped": state.skipped, "nonfinite": state.nonfinite,
                "steps_per_s": float(summed[5]) / ctx.world_size / max(1e-9, now - state.t_interval),
                "elapsed_s": now - state.t_start})
        state.interval.zero_()
        state.t_interval = now

    def _end_epoch(self, job: _Job, state: _LoopState) -> bool:
        """At an epoch's end: validate, checkpoint, and say (True) when early stopping ends training."""
        cfg = self.cfg
        epoch = (state.step - 1) // job.spe + 1
        if cfg.validation.enabled and job.labels:
            self._validate(job, state, epoch)
        if epoch % cfg.run.checkpoint_every == 0 or state.step == job.total or state.stopped:
            self._save(job, state, epoch)
        state.t_interval = time.perf_counter()  # validation and checkpointing do not count as training speed
        if state.stopped:
            best = state.best
            self.progress("stopped", state.step, job.total, {"reason": (
                f"early stopping: no better mean validation Dice for {state.stale} validations (best "
                f"{best.get('mean', float('nan')):.3f} at step {best.get('step')})")})
        return state.stopped

    def _validate(self, job: _Job, state: _LoopState, epoch: int) -> None:
        """Validation Dice per structure into val_log.csv; tracks the best epoch and decides early stopping."""
        cfg, ctx = self.cfg, self.ctx
        state.last_val = validation_dice(
            self.model, job.sources, ctx.device, cfg.validation.max_slices_per_case,
            cfg.validation.batch_size, cfg.validation.threshold, ctx, job.amp_dtype,
            cancel=None if ctx.distributed else self._check_cancel)
        if job.val_log is not None:
            job.val_log.write({"epoch": epoch, "step": state.step, **state.last_val})
        state.best, state.stale = self._after_validation(state.last_val, state.best, state.stale, state.step,
                                                         self.model)
        self.progress("val", epoch, cfg.optim.epochs, state.last_val)
        state.stopped = bool(cfg.validation.patience) and state.stale >= cfg.validation.patience

    def _finish(self, job: _Job, state: _LoopState) -> TrainResult:
        """Rank 0 saves the model and summary.json; every rank waits for it and returns the result."""
        model_dir = self._save_final(job, state) if self.ctx.is_main else None
        barrier(self.ctx)
        speed = (state.step / state.train_time) if state.train_time else 0.0
        logged = state.logged
        return TrainResult(out_dir=self.out_dir, steps=state.step, first_loss=logged[0] if logged else math.nan,
                           last_loss=logged[-1] if logged else math.nan, val=state.last_val, model_dir=model_dir,
                           steps_per_s=speed)

    def _save_final(self, job: _Job, state: _LoopState) -> Path:
        """Save ``model/`` (the best epoch's weights with keep_best, else the last) and summary.json."""
        from ..model.weights import save_model

        cfg, model = self.cfg, self.model
        model_dir = self.out_dir / "model"
        saved = "best" if cfg.validation.keep_best and self._load_best(model) else "last"
        restore_trainable(model, self._own_trainable)  # saved as the model it is, whatever trained here
        save_model(model, model_dir, overwrite=True,
                   metadata={"trained_steps": str(state.step), "train_config": json.dumps(config_to_dict(cfg)),
                             "weights": saved})
        summary = {"steps": state.step, "planned_steps": job.total, "steps_per_epoch": job.spe,
                   "stopped_early": state.stopped, "saved_weights": saved, "best_val": state.best,
                   "last_val": state.last_val, "nonfinite_steps": state.nonfinite, "skipped_steps": state.skipped,
                   "train_steps_per_s": (state.step / state.train_time) if state.train_time else 0.0,
                   "world_size": self.ctx.world_size, "device": str(self.ctx.device)}
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        return model_dir

    # ------------------------------------------------------------------------------------------ helpers
    def _after_validation(self, val: dict[str, float], best: dict, stale: int, step: int,
                          model: nn.Module) -> tuple[dict, int]:
        """Track the best mean Dice (and its weights, with keep_best) and the validations since it rose."""
        mean = val.get("mean")
        if mean is None:
            return best, stale
        improved = mean > best.get("mean", -1.0) + self.cfg.validation.min_delta
        if mean > best.get("mean", -1.0):
            best = dict(val, step=step)
            if self.cfg.validation.keep_best:
                self._save_best(model)
        return best, 0 if improved else stale + 1

    @staticmethod
    def _to_device(batch: PairBatch, device: torch.device) -> tuple[torch.Tensor, ...]:
        def images(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)

        def masks(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(device, non_blocking=True)[:, None].float()

        return images(batch.target), masks(batch.target_mask), images(batch.ref_image), masks(batch.ref_mask)

    @staticmethod
    def _embeddings_to_device(batch: PairBatch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        if batch.target_embedding is None or batch.ref_embedding is None:
            return None
        return (torch.from_numpy(batch.target_embedding).to(device).float(),
                torch.from_numpy(batch.ref_embedding).to(device).float())

    def _save(self, job: _Job, state: _LoopState, epoch: int) -> None:
        """Checkpoint everything a bit-identical resume needs: trainable tensors, optimiser, schedule, scaler,
        every rank's sampler and torch RNG state, and the loop's counters."""
        ctx = self.ctx
        samplers = all_gather_objects(job.sampler.state_dict(), ctx)
        rngs = all_gather_objects(torch.get_rng_state(), ctx)
        if ctx.is_main:
            saved = {"optimizer": job.optimizer.state_dict(), "scheduler": job.scheduler.state_dict(),
                     "scaler": job.scaler.state_dict(), "torch_rng": rngs}
            meta = {"epoch": epoch, "world_size": ctx.world_size, "samplers": samplers,
                    "frozen_fingerprint": job.fingerprint, "best_val": state.best,
                    "stale": state.stale, "nonfinite": state.nonfinite, "config": config_to_dict(self.cfg)}
            path = save_checkpoint(self.out_dir, state.step, self.model, saved, meta,
                                   keep=self.cfg.run.keep_checkpoints)
            self.progress("checkpoint", state.step, self._total, {"path": str(path)})
        barrier(ctx)

