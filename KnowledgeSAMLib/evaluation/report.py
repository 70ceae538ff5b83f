"""Score a predicted label set against a ground truth: per-structure Dice/HD95, the mean, table and JSON.

Why separate from the metrics: this is the one place that ties files' label sets (matching, grid
alignment) to the array metrics, so the CLI, the benchmarks and the Slicer module report identically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..data.volume import Labels
from .matching import align_to_truth, match_structures, matching_mode, structure_masks
from .metrics import StructureScore, mean_scores, score_structure

__all__ = ["EvaluationReport", "evaluate_labels", "format_table"]


@dataclass
class EvaluationReport:
    """Scores of one prediction against one truth."""

    structures: list[StructureScore]
    prediction: str = ""
    truth: str = ""
    matched_by: str = "value"  # "value" or "name"
    resampled: bool = False  # the prediction was resampled onto the truth grid
    pairs: list[dict] = field(default_factory=list)  # truth/prediction label values per structure
    # (name, prediction mask, truth mask) on the truth grid, kept only when asked (for overlays)
    masks: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list, repr=False)

    @property
    def mean(self) -> dict[str, float]:
        return mean_scores(self.structures)

    def to_json(self) -> dict:
        """JSON-ready dict; undefined (infinite) HD95 values are ``None``."""
        mean = {k: (v if math.isfinite(v) else None) for k, v in self.mean.items()}
        structures = []
        for score, pair in zip(self.structures, self.pairs or [{}] * len(self.structures)):
            structures.append({**score.to_json(), **pair})
        return {
            "prediction": self.prediction,
            "truth": self.truth,
            "matched_by": self.matched_by,
            "resampled_prediction": self.resampled,
            "structures": structures,
            "mean": mean,
            "conventions": "Dice: both empty = 1, one empty = 0. HD95: symmetric (max of directed 95th "
                           "percentiles of surface distances, mm); both empty = 0, one empty = null (infinite).",
        }


def evaluate_labels(prediction: Labels, truth: Labels, labels: Sequence[int] | None = None,
                    segments: Sequence[str] | None = None, missing_as_empty: bool = False,
                    keep_masks: bool = False) -> EvaluationReport:
    """Match structures, bring the prediction onto the truth grid, and score each structure."""
    matches = match_structures(prediction, truth, labels, segments, missing_as_empty)
    aligned, resampled = align_to_truth(prediction, truth)
    masks = structure_masks(aligned, truth, matches)
    scores = [score_structure(name, pred, true, truth.geometry.spacing) for name, pred, true in masks]
    matched_by = matching_mode(prediction, truth, labels, segments)
    pairs = [{"truth_label": m.truth.label_value,
              "prediction_label": None if m.prediction is None else m.prediction.label_value,
              "prediction_segment": None if m.prediction is None else m.prediction.name}
             for m in matches]
    return EvaluationReport(scores, prediction.source, truth.source, matched_by, resampled, pairs,
                            masks if keep_masks else [])


def _fmt(value: float, digits: int) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def format_table(report: EvaluationReport) -> str:
    """A plain-text table: one row per structure, then the mean."""
    width = max([len("structure"), len("mean")] + [len(s.name) for s in report.structures])
    lines = [f"{'structure':<{width}}  {'Dice':>6}  {'HD95 mm':>8}  {'truth vox':>9}  {'pred vox':>9}"]
    lines.append("-" * len(lines[0]))
    for score in report.structures:
        lines.append(f"{score.name:<{width}}  {_fmt(score.dice, 4):>6}  {_fmt(score.hd95_mm, 2):>8}  "
                     f"{score.truth_voxels:>9}  {score.prediction_voxels:>9}")
    mean = report.mean
    lines.append("-" * len(lines[0]))
    lines.append(f"{'mean':<{width}}  {_fmt(mean['dice'], 4):>6}  {_fmt(mean['hd95_mm'], 2):>8}")
    notes = [f"matched by {report.matched_by}"]
    if report.resampled:
        notes.append("prediction resampled onto the truth grid (nearest neighbour)")
    if any(not math.isfinite(s.hd95_mm) for s in report.structures):
        notes.append("HD95 n/a = one of the two masks is empty")
    lines.append("(" + "; ".join(notes) + ")")
    return "\n".join(lines)
