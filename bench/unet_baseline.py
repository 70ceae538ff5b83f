"""Fixed-task 2D U-Net baseline: the supervised ceiling for a task known in advance.

Why: KnowledgeSAM segments *any* structure a reference shows it; a network trained for exactly one
task (hippocampus head + body) on the same training cases bounds what "knowing the task" buys. The
model is a small 2D U-Net (pure torch) trained on slices of the training cases for a fixed time budget,
then run slice by slice over each held-out volume and scored with 3D Dice per structure.

    python bench/unet_baseline.py --minutes 12 [--axis z|y|x] [--json OUT.json]
    python bench/unet_baseline.py --quick            # exactly 100 training steps: checks that it learns
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if __package__ in (None, ""):  # run as a script: make ``bench`` and the library importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import STRUCTURES, hippocampus_available, machine, score_case, summarise, write_json  # noqa: E402
from KnowledgeSAMLib.data.volume import Image, Labels  # noqa: E402
from KnowledgeSAMLib.errors import CancelledError  # noqa: E402

AXES = {"z": 0, "y": 1, "x": 2}  # slice axis in (z, y, x) array order


@dataclass(frozen=True)
class UNetConfig:
    """Model, data and optimisation settings of the baseline."""

    axis: str = "z"
    tile: int = 64  # slices are zero-padded (centred) to tile x tile; the hippocampus crops are <= 54
    context: int = 0  # neighbouring slices on each side given as extra channels (0: plain 2D)
    base_channels: int = 16
    depth: int = 3  # number of 2x down-samplings
    classes: int = 3  # background, head, body
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-5
    dice_weight: float = 1.0  # loss = CE + dice_weight * soft Dice (foreground classes)
    foreground_fraction: float = 0.7  # share of each batch drawn from slices that contain a structure
    max_shift: int = 4  # random in-plane translation (pixels) as augmentation
    intensity_jitter: float = 0.1
    minutes: float = 12.0  # math.inf: no time budget (stop after max_steps only)
    max_steps: int | None = None  # also stop after this many steps (reproducible runs on a busy machine)
    threads: int = 2
    seed: int = 0


# Smoke-test setting: exactly 100 steps (about 15 s on 2 free cores), however busy the machine: a step count,
# not a time budget, so the result does not depend on the load.
# (Halving the width to 8 channels is not quicker to useful Dice: it stays near 0 after 80 steps.)
QUICK = UNetConfig(minutes=math.inf, max_steps=100)


# ----------------------------------------------------------------------------------------- model

class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class UNet2D(nn.Module):
    """A plain U-Net: ``depth`` down/up levels, channels doubling per level, skip connections."""

    def __init__(self, in_channels: int, classes: int, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_Block(in_channels, widths[0])] +
                                  [_Block(widths[i], widths[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                 for i in reversed(range(depth))])
        self.merge = nn.ModuleList([_Block(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(widths[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


# ------------------------------------------------------------------------------------------ data

def normalise(volume: np.ndarray) -> np.ndarray:
    """Per-scan intensity scaling to about [0, 1] (the MRIs come in very different ranges)."""
    volume = volume.astype(np.float32)
    low, high = np.percentile(volume, (0.5, 99.5))
    return np.clip((volume - low) / max(float(high - low), 1e-6), 0.0, 1.0)


def _pad_slices(stack: np.ndarray, tile: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Centre ``(n, [c,] h, w)`` slices in ``tile x tile``; returns the padded stack and the (top, left) offset."""
    h, w = stack.shape[-2:]
    if h > tile or w > tile:
        raise ValueError(f"slices of {h}x{w} do not fit the {tile}x{tile} tile; raise UNetConfig.tile")
    top, left = (tile - h) // 2, (tile - w) // 2
    pad = [(0, 0)] * (stack.ndim - 2) + [(top, tile - h - top), (left, tile - w - left)]
    return np.pad(stack, pad), (top, left)


def slice_stack(volume: np.ndarray, config: UNetConfig) -> np.ndarray:
    """``(n, 1 + 2*context, h, w)`` inputs: each slice along the axis with its neighbours (edge-clamped)."""
    moved = np.moveaxis(volume, AXES[config.axis], 0)
    n = moved.shape[0]
    offsets = range(-config.context, config.context + 1)
    return np.stack([moved[np.clip(np.arange(n) + o, 0, n - 1)] for o in offsets], axis=1)


@dataclass
class SliceSet:
    """All training slices, padded to one tile size, with the indices of slices that show a structure."""

    inputs: np.ndarray  # (N, C, T, T) float32
    targets: np.ndarray  # (N, T, T) int64
    foreground: np.ndarray  # indices into N

    @classmethod
    def build(cls, cases: Sequence[tuple[np.ndarray, np.ndarray]], config: UNetConfig) -> "SliceSet":
        inputs, targets = [], []
        for image, labelmap in cases:
            x, _ = _pad_slices(slice_stack(normalise(image), config), config.tile)
            y, _ = _pad_slices(np.moveaxis(labelmap, AXES[config.axis], 0), config.tile)
            inputs.append(x)
            targets.append(y)
        inputs_array = np.concatenate(inputs).astype(np.float32)
        targets_array = np.concatenate(targets).astype(np.int64)
        foreground = np.flatnonzero(targets_array.reshape(len(targets_array), -1).any(axis=1))
        return cls(inputs_array, targets_array, foreground)

    def batch(self, rng: np.random.Generator, config: UNetConfig) -> tuple[torch.Tensor, torch.Tensor]:
        n_fg = int(round(config.batch_size * config.foreground_fraction)) if self.foreground.size else 0
        index = np.concatenate([rng.choice(self.foreground, n_fg),
                                rng.integers(0, len(self.inputs), config.batch_size - n_fg)])
        x, y = self.inputs[index].copy(), self.targets[index].copy()
        for i in range(len(index)):  # independent random shift and intensity jitter per slice
            dy, dx = rng.integers(-config.max_shift, config.max_shift + 1, 2)
            x[i] = np.roll(x[i], (dy, dx), axis=(-2, -1))
            y[i] = np.roll(y[i], (dy, dx), axis=(-2, -1))
            gain = 1.0 + rng.uniform(-config.intensity_jitter, config.intensity_jitter)
            x[i] = x[i] * gain + rng.uniform(-config.intensity_jitter, config.intensity_jitter)
        return torch.from_numpy(x), torch.from_numpy(y)


# ----------------------------------------------------------------------------------- train / run

def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the foreground classes (batch-pooled, so empty slices do not dominate)."""
    probabilities = logits.softmax(dim=1)[:, 1:]
    one_hot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (probabilities * one_hot).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + 1.0) / (total + 1.0)).mean()


def train_unet(cases: Sequence[tuple[np.ndarray, np.ndarray]], config: UNetConfig = UNetConfig(),
               progress: Callable[[float, float], None] | None = None, cancel=None) -> tuple[UNet2D, dict]:
    """Train on ``(image, labelmap)`` volumes until the time budget is spent; returns the model and stats.

    ``progress(elapsed_s, budget_s)`` is called every step; ``cancel.cancelled`` stops with CancelledError.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    data = SliceSet.build(cases, config)
    model = UNet2D(1 + 2 * config.context, config.classes, config.base_channels, config.depth)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    budget = config.minutes * 60.0
    start = time.perf_counter()
    steps, losses = 0, []
    model.train()
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= budget or (config.max_steps is not None and steps >= config.max_steps):
            break
        if cancel is not None and getattr(cancel, "cancelled", False):
            raise CancelledError("U-Net training cancelled")
        done = elapsed / budget if config.max_steps is None else max(elapsed / budget, steps / config.max_steps)
        for group in optimiser.param_groups:  # cosine decay over the budget (time or steps)
            group["lr"] = config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        x, y = data.batch(rng, config)
        logits = model(x)
        loss = F.cross_entropy(logits, y) + config.dice_weight * soft_dice_loss(logits, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        steps += 1
        losses.append(loss.item())
        if progress:
            progress(min(elapsed, budget), budget)
    model.eval()
    stats = {"steps": steps, "train_seconds": time.perf_counter() - start, "slices": int(len(data.inputs)),
             "final_loss": float(np.mean(losses[-20:])) if losses else None,
             "parameters": sum(p.numel() for p in model.parameters())}
    return model, stats


@torch.no_grad()
def predict_volume(model: UNet2D, image: np.ndarray, config: UNetConfig, batch: int = 32) -> np.ndarray:
    """Labelmap ``(z, y, x)`` of one volume: every slice along the axis, argmax over classes."""
    inputs, (top, left) = _pad_slices(slice_stack(normalise(image), config), config.tile)
    outputs = []
    for first in range(0, len(inputs), batch):
        logits = model(torch.from_numpy(inputs[first:first + batch].astype(np.float32)))
        outputs.append(logits.argmax(dim=1).numpy())
    moved_shape = np.moveaxis(image, AXES[config.axis], 0).shape
    labels = np.concatenate(outputs)[:, top:top + moved_shape[1], left:left + moved_shape[2]]
    return np.moveaxis(labels, 0, AXES[config.axis]).astype(np.uint8)


def segment(model: UNet2D, target: Image, config: UNetConfig, template: Labels) -> Labels:
    """The prediction as :class:`Labels` on the target grid, with the training labels' segments."""
    labelmap = predict_volume(model, target.array, config)
    return Labels(layers=labelmap[None], geometry=target.geometry, segments=list(template.segments),
                  source="2D U-Net baseline")


def run_hippocampus(root: Path | None, config: UNetConfig, limit: int | None = None,
                    progress: Callable[[float, float], None] | None = None) -> dict:
    """Train on the hippocampus training split, score the held-out cases (3D Dice per structure)."""
    from KnowledgeSAMLib.data.datasets import hippocampus_cases, hippocampus_split, load_hippocampus

    train_ids, test_ids = hippocampus_split(hippocampus_cases(root))
    if limit:
        test_ids = test_ids[:limit]
    training = []
    for case_id in train_ids:
        image, labels = load_hippocampus(root, case_id)
        training.append((image.array, labels.layers[0]))
    model, stats = train_unet(training, config, progress)
    template = load_hippocampus(root, train_ids[0])[1]
    cases = []
    for case_id in test_ids:
        image, truth = load_hippocampus(root, case_id)
        start = time.perf_counter()
        prediction = segment(model, image, config, template)
        cases.append({"target": str(case_id), "seconds": time.perf_counter() - start,
                      **score_case(prediction, truth, STRUCTURES)})
    return {"method": "fixed-task 2D U-Net (trained on the hippocampus training split)", "config": {**asdict(config), "minutes": config.minutes if math.isfinite(config.minutes) else None},
            "training": stats, "train_cases": len(train_ids), "summary": summarise(cases), "cases": cases,
            "machine": machine()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="msd-hippocampus folder, or the shared data folder holding it "
                                                      "(default: $KNOWLEDGESAM_SHARED_DATA, else ../shared/data)")
    parser.add_argument("--minutes", type=float, default=UNetConfig.minutes, help="training time budget")
    parser.add_argument("--axis", choices=sorted(AXES), default=UNetConfig.axis, help="slice axis")
    parser.add_argument("--context", type=int, default=UNetConfig.context, help="neighbour slices per side as channels")
    parser.add_argument("--threads", type=int, default=UNetConfig.threads, help="torch CPU threads")
    parser.add_argument("--quick", action="store_true", help="exactly 100 training steps, 2 held-out cases")
    parser.add_argument("--json", type=Path, help="write the results here (JSON)")
    args = parser.parse_args(argv)
    if not hippocampus_available(args.data):
        print(f"unet_baseline: error: {args.data or 'shared data folder'}: hippocampus data not found",
              file=sys.stderr)
        return 2
    base = QUICK if args.quick else UNetConfig(minutes=args.minutes)
    config = replace(base, axis=args.axis, context=args.context, threads=args.threads)
    torch.set_num_threads(config.threads)
    from tqdm import tqdm

    total = round(config.minutes * 60) if math.isfinite(config.minutes) else None
    with tqdm(total=total, desc="training", unit="s", file=sys.stderr) as bar:
        def progress(elapsed: float, budget: float) -> None:
            bar.update(int(elapsed) - bar.n)

        results = run_hippocampus(args.data, config, 2 if args.quick else None, progress)
    for case in results["cases"]:
        print(f"{case['target']}: head {case['dice']['head']:.3f}  body {case['dice']['body']:.3f}  "
              f"mean {case['mean_dice']:.3f}")
    summary, training = results["summary"], results["training"]
    print(f"{training['steps']} steps in {training['train_seconds']:.0f} s; mean over {summary['cases']} held-out "
          f"cases: head {summary['dice']['head']:.3f}  body {summary['dice']['body']:.3f}  "
          f"mean {summary['mean_dice']:.3f}")
    if args.json:
        write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
