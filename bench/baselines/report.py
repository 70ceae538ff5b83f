"""The accuracy benchmark's outputs: Markdown tables per dataset and a bar chart, from raw records only.

Why generated: every number in docs/results.md comes from the records of one run of
``bench/accuracy.py`` (also written as JSON next to it), so a table can never drift from the run that
produced it. The chart is drawn with Pillow (a declared dependency) rather than matplotlib (not one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["Method", "METHODS", "Record", "Summary", "summarise", "markdown_table", "comparison_lines",
           "bar_chart"]


@dataclass(frozen=True)
class Method:
    key: str
    name: str


METHODS: tuple[Method, ...] = (
    Method("ksam_default", "KSAM (default model)"),
    Method("ksam_same", "KSAM (same budget)"),
    Method("ksam_vit_b", "KSAM vit_b (SAM ViT-B + LoRA)"),
    Method("atlas", "Atlas registration (affine + B-spline)"),
    Method("litemedsam_box", "LiteMedSAM, a truth box on every slice"),
    Method("litemedsam_reference_box", "LiteMedSAM, one box from the reference"),
    Method("point", "Point-prompt SAM (MedSA-style)"),
    Method("box", "Box-prompt SAM (MedSAM-style)"),
    Method("prompt_free", "Prompt-free SAM (SAMed-style)"),
    Method("prompt_free_unseen", "Prompt-free SAM, artery left out of its head"),
    Method("persam", "PerSAM-style one-shot (training-free)"),
    Method("unet", "2D U-Net (fixed task)"),
)
METHOD_NAMES = {m.key: m.name for m in METHODS}


@dataclass
class Record:
    """One method on one held-out case (and training seed)."""

    dataset: str
    method: str
    case: str
    seed: int | None
    dice: dict[str, float]
    seconds: float

    def to_json(self) -> dict:
        return {"dataset": self.dataset, "method": self.method, "case": self.case, "seed": self.seed,
                "dice": self.dice, "seconds": self.seconds}


@dataclass
class Summary:
    """Mean and sd per structure over (case × seed) records, plus the per-case mean over structures."""

    method: str
    n: int
    dice: dict[str, tuple[float, float]] = field(default_factory=dict)
    mean: tuple[float, float] = (math.nan, math.nan)
    seconds: float = math.nan


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def summarise(records: Sequence[Record], structures: Sequence[str]) -> Summary:
    records = list(records)
    summary = Summary(method=records[0].method if records else "", n=len(records))
    for name in structures:
        summary.dice[name] = _mean_sd([r.dice.get(name, math.nan) for r in records])
    summary.mean = _mean_sd([float(np.mean([r.dice[s] for s in structures])) for r in records
                             if all(s in r.dice for s in structures)])
    summary.seconds = float(np.mean([r.seconds for r in records])) if records else math.nan
    return summary


def _cell(value: tuple[float, float]) -> str:
    mean, sd = value
    if math.isnan(mean):
        return "—"
    return f"{mean:.3f}" if math.isnan(sd) else f"{mean:.3f} ± {sd:.3f}"


def markdown_table(records: Sequence[Record], structures: Sequence[str], notes: dict[str, str]) -> list[str]:
    """One row per method (every method, also those not run: their cells are "—" and the note says why)."""
    lines = ["| Method | " + " | ".join(structures) + " | mean | s/case | n | note |",
             "|---|" + "---|" * (len(structures) + 4)]
    for method in METHODS:
        mine = [r for r in records if r.method == method.key]
        note = notes.get(method.key, "")
        if not mine:
            lines.append(f"| {method.name} | " + " | ".join("—" for _ in structures) + f" | — | — | 0 | {note} |")
            continue
        s = summarise(mine, structures)
        cells = [_cell(s.dice[name]) for name in structures]
        lines.append(f"| {method.name} | " + " | ".join(cells) + f" | **{_cell(s.mean)}** | {s.seconds:.2f} | "
                     f"{s.n} | {note} |")
    return lines


def comparison_lines(records: Sequence[Record], structures: Sequence[str], ksam_key: str,
                     margin: float = 0.02) -> list[str]:
    """Plain statements of where the KSAM row ``ksam_key`` wins or loses (mean Dice beyond ``margin``)."""
    own = [r for r in records if r.method == ksam_key]
    if not own:
        return []
    mine = summarise(own, structures)
    wins, losses, ties = [], [], []
    for method in METHODS:
        if method.key in (ksam_key, "ksam_default", "ksam_same", "ksam_vit_b"):
            continue
        theirs = [r for r in records if r.method == method.key]
        if not theirs:
            continue
        other = summarise(theirs, structures)
        diff = mine.mean[0] - other.mean[0]
        if math.isnan(diff):
            continue
        better = [s for s in structures if mine.dice[s][0] - other.dice[s][0] > margin]
        worse = [s for s in structures if other.dice[s][0] - mine.dice[s][0] > margin]
        text = f"{method.name} ({other.mean[0]:.3f}"
        detail = []
        if better:
            detail.append("KSAM better on " + ", ".join(better))
        if worse:
            detail.append("worse on " + ", ".join(worse))
        text += "; " + "; ".join(detail) + ")" if detail else ")"
        (wins if diff > margin else losses if diff < -margin else ties).append(text)
    name = METHOD_NAMES[ksam_key]
    out = [f"- {name}, mean {mine.mean[0]:.3f}:"]
    for label, items in (("beats", wins), ("loses to", losses), ("ties with (within ±%.2f)" % margin, ties)):
        if items:
            out.append(f"  {label} " + "; ".join(items) + ".")
    return out


def dataset_verdicts(records: Sequence[Record], title: str, structures: Sequence[str],
                     ksam_keys: Sequence[str] = ("ksam_default", "ksam_same", "ksam_vit_b")) -> list[str]:
    """One dataset's win/loss statements for every KSAM row that ran, under a single heading (none if none ran)."""
    found = [line for key in ksam_keys for line in comparison_lines(records, structures, key)]
    return [f"{title}:", *found, ""] if found else []


# ---------------------------------------------------------------------------------------------- chart
_COLOURS = [(31, 119, 180), (174, 199, 232), (148, 103, 189), (127, 127, 127), (255, 127, 14), (255, 187, 120),
            (44, 160, 44), (152, 223, 138), (214, 39, 40), (140, 86, 75)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        return ImageFont.load_default()


def bar_chart(panels: Sequence[tuple[str, Sequence[str], Sequence[Record]]], path: str | Path,
              title: str = "") -> Path:
    """Grouped bars (mean Dice, sd whiskers) per structure + mean, one panel per dataset; written atomically."""
    from PIL import Image, ImageDraw

    present = [m for m in METHODS if any(r.method == m.key for _, _, recs in panels for r in recs)]
    colour = {m.key: _COLOURS[i % len(_COLOURS)] for i, m in enumerate(METHODS)}
    width, panel_h, top, legend_row = 1400, 300, 50, 22
    legend_h = legend_row * math.ceil(len(present) / 3) + 10
    height = top + legend_h + panel_h * max(1, len(panels)) + 20
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    small, big = _font(13), _font(17)
    draw.text((20, 12), title, fill="black", font=big)
    for i, m in enumerate(present):
        x, y = 20 + (i % 3) * 460, top + (i // 3) * legend_row
        draw.rectangle([x, y + 3, x + 14, y + 15], fill=colour[m.key])
        draw.text((x + 20, y), m.name, fill="black", font=small)
    y0 = top + legend_h
    for p, (heading, structures, records) in enumerate(panels):
        box_top, box_bottom = y0 + p * panel_h + 30, y0 + (p + 1) * panel_h - 30
        left, right = 70, width - 20
        draw.text((left, box_top - 24), heading, fill="black", font=big)
        for tick in np.linspace(0, 1, 6):
            y = box_bottom - tick * (box_bottom - box_top)
            draw.line([left, y, right, y], fill=(225, 225, 225))
            draw.text((left - 40, y - 7), f"{tick:.1f}", fill="black", font=small)
        groups = list(structures) + ["mean"]
        ran = [m for m in present if any(r.method == m.key for r in records)]
        group_w = (right - left) / len(groups)
        bar_w = max(2.0, (group_w - 30) / max(1, len(ran)))
        for g, group in enumerate(groups):
            gx = left + g * group_w + 15
            draw.text((gx + (group_w - 30) / 2 - 15, box_bottom + 6), group, fill="black", font=small)
            for b, m in enumerate(ran):
                s = summarise([r for r in records if r.method == m.key], structures)
                mean, sd = s.mean if group == "mean" else s.dice[group]
                if math.isnan(mean):
                    continue
                x = gx + b * bar_w
                y = box_bottom - mean * (box_bottom - box_top)
                draw.rectangle([x, y, x + bar_w - 2, box_bottom], fill=colour[m.key])
                if not math.isnan(sd):
                    lo = box_bottom - max(0.0, mean - sd) * (box_bottom - box_top)
                    hi = box_bottom - min(1.0, mean + sd) * (box_bottom - box_top)
                    cx = x + (bar_w - 2) / 2
                    draw.line([cx, lo, cx, hi], fill="black")
        draw.line([left, box_bottom, right, box_bottom], fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    img.save(tmp)
    tmp.replace(path)
    return path
