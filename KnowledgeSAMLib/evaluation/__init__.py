"""Evaluation: Dice and HD95 per structure, label matching between files, PNG overlays.

Array level (no files): :mod:`.metrics` (``dice``, ``hd95``, ``score_structure``).
Label sets: :func:`evaluate_labels` pairs structures (by name or value), resamples the prediction onto
the truth grid and scores each structure. :mod:`.overlay` draws a montage for a visual check.
"""

from __future__ import annotations

from .matching import MatchedStructure, align_to_truth, match_structures
from .metrics import StructureScore, dice, hd95, mean_scores, score_structure
from .report import EvaluationReport, evaluate_labels, format_table

__all__ = [
    "StructureScore",
    "dice",
    "hd95",
    "score_structure",
    "mean_scores",
    "MatchedStructure",
    "match_structures",
    "align_to_truth",
    "EvaluationReport",
    "evaluate_labels",
    "format_table",
]
