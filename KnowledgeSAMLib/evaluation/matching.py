"""Pair the structures of a prediction with those of a ground truth, and put both on one grid.

Why a module of its own: "which label of file A is which label of file B" is where evaluations go
silently wrong (a Slicer export renumbers values, a NIfTI has no names). The rules here are explicit:

* ``labels=[1, 3]``: pair by label value; ``segments=["head", "body"]``: pair by segment name (or
  Slicer segment id; exact, then case-insensitive).
* Neither given: by name when both label sets carry real names (not generic ones such as
  ``"Label 2"``, ``"Segment_1"`` or ``"3"``), otherwise by value; every structure of the truth is
  evaluated.
* A requested structure missing from either file is an :class:`InputError` naming the file and what it
  does contain. ``missing_as_empty=True`` instead scores a structure absent from the *prediction* as an
  empty prediction (a plain labelmap has no entry for a value none of its voxels carry).
* A prediction on another grid is resampled onto the truth grid (nearest neighbour, as Slicer does);
  grids that do not overlap in physical space are an :class:`InputError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from ..data.io import resample_labels_to
from ..data.volume import Labels, Segment
from ..errors import InputError

__all__ = ["MatchedStructure", "has_real_names", "matching_mode", "match_structures", "align_to_truth",
           "structure_masks"]

MatchBy = Literal["name", "value"]

_GENERIC_NAME = re.compile(r"^\s*((label|segment)[\s_-]*)?\d+\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class MatchedStructure:
    """One structure to score: its truth segment and the prediction segment paired with it (or None = empty)."""

    name: str
    truth: Segment
    prediction: Segment | None


def _describe(labels: Labels, role: str) -> str:
    return labels.source or f"the {role}"


def _contents(labels: Labels) -> str:
    return ", ".join(f"{s.name}={s.label_value}" for s in labels.segments) or "no segments"


def has_real_names(labels: Labels) -> bool:
    """True when every segment has a name a person gave it (not ``Label 1``, ``Segment_2``, ``3``)."""
    return bool(labels.segments) and all(not _GENERIC_NAME.match(s.name or "") for s in labels.segments)


def _lookup(labels: Labels, key: str | int) -> Segment | None:
    try:
        return labels.find(key)
    except KeyError:
        return None


def _missing(key: str | int, by: MatchBy, labels: Labels, role: str) -> InputError:
    what = f"label value {key}" if by == "value" else f"segment {key!r}"
    hint = "--segments NAME,..." if by == "name" else "--labels VALUE,..."
    return InputError(f"{_describe(labels, role)}: {role} has no {what} (it has: {_contents(labels)}); "
                      f"choose structures with {hint}")


def matching_mode(prediction: Labels, truth: Labels, labels: Sequence[int] | None = None,
                  segments: Sequence[str] | None = None) -> MatchBy:
    """How structures will be paired: ``"value"`` or ``"name"`` (rules: module docstring)."""
    if labels:
        return "value"
    if segments:
        return "name"
    return "name" if has_real_names(truth) and has_real_names(prediction) else "value"


def match_structures(prediction: Labels, truth: Labels, labels: Sequence[int] | None = None,
                     segments: Sequence[str] | None = None, missing_as_empty: bool = False) -> list[MatchedStructure]:
    """Decide which prediction segment is scored against which truth segment (rules: module docstring)."""
    if labels and segments:
        raise InputError("give either label values or segment names to evaluate, not both")
    by = matching_mode(prediction, truth, labels, segments)
    keys: list[str | int]
    if labels:
        keys = list(dict.fromkeys(int(v) for v in labels))
    elif segments:
        keys = list(dict.fromkeys(str(s) for s in segments))
    else:
        if not truth.segments:
            raise InputError(f"{_describe(truth, 'truth')}: the truth has no labelled structures to evaluate")
        keys = list(dict.fromkeys(s.name if by == "name" else s.label_value for s in truth.segments))

    matched: list[MatchedStructure] = []
    for key in keys:
        truth_segment = _lookup(truth, key)
        if truth_segment is None:
            raise _missing(key, by, truth, "truth")
        prediction_segment = _lookup(prediction, key)
        if prediction_segment is None and not missing_as_empty:
            raise _missing(key, by, prediction, "prediction")
        name = truth_segment.name
        if _GENERIC_NAME.match(name) and prediction_segment and not _GENERIC_NAME.match(prediction_segment.name):
            name = prediction_segment.name  # e.g. a NIfTI truth scored against a named .seg.nrrd
        matched.append(MatchedStructure(name, truth_segment, prediction_segment))
    names = [m.name for m in matched]
    if len(set(names)) != len(names):  # e.g. two layers both calling value 1 "Label 1"
        matched = [MatchedStructure(f"{m.name} ({m.truth.label_value})", m.truth, m.prediction) for m in matched]
    return matched


def align_to_truth(prediction: Labels, truth: Labels) -> tuple[Labels, bool]:
    """The prediction on the truth's grid, and whether it had to be resampled (nearest neighbour)."""
    if prediction.shape == truth.shape and prediction.geometry.same_grid(truth.geometry):
        return prediction, False
    return resample_labels_to(prediction, truth.geometry, truth.shape), True


def structure_masks(prediction: Labels, truth: Labels,
                    matches: Sequence[MatchedStructure]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, prediction mask, truth mask)`` per matched structure; both on the truth grid."""
    result = []
    for match in matches:
        truth_mask = truth.mask(match.truth)
        if match.prediction is None:
            prediction_mask = np.zeros_like(truth_mask)
        else:
            prediction_mask = prediction.mask(match.prediction)
        result.append((match.name, prediction_mask, truth_mask))
    return result
