"""Same volume, propagate mode: can the model reproduce the slices the annotator drew?

Why: every labelled slice is also predicted by the model with itself as the reference (the seeds of
:mod:`.propagate`). Where the model follows the reference, that prediction matches the drawing closely (MSD
hippocampus volumes no training step reads: Dice 0.8 and more). Where it does not — a structure or a look it never
learnt: on a real non-contrast CT slice the stage-11 default model marks the vertebral body whatever kidney, liver or
aorta it is shown — its walk to the neighbouring slices carries that error through the volume and the result looks
confident but is wrong. The drawn slices are the one truth the engine has, so it checks against them: a structure
next to a labelled slice the model cannot reproduce is filled between labelled slices by interpolating the drawn
shapes (as Slicer's "Fill between slices" does), left empty beyond them, and a warning says so.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .slicing import AxisView

__all__ = ["agreement_per_slice", "failed_slices", "unreliable_slices", "warning_for", "warning_text"]

# a drawn slice smaller than this share of the structure's largest drawn slice is not judged: at a structure's
# thin end the model's Dice is noisy even where it follows the reference (simulated annotator on 20
# msd-hippocampus-more volumes, whose corrections land there: 2 slices 0.869 when every drawn slice was judged,
# 0.875 without the self-check)
MIN_JUDGED_SHARE = 0.25


def agreement_per_slice(probabilities: np.ndarray, drawn: Mapping[int, np.ndarray], view: AxisView,
                        byte_threshold: int) -> dict[int, float]:
    """Per drawn slice of one structure (slice -> plane mask, empty planes left out): the Dice between the model's
    own prediction there (uint8 ``probabilities`` above ``byte_threshold``) and the drawing."""
    scores = {}
    for k, plane in drawn.items():
        if plane.any():
            predicted = view.get(probabilities, int(k)) > byte_threshold
            scores[int(k)] = 2.0 * float((predicted & plane).sum()) / float(predicted.sum() + plane.sum())
    return scores


def failed_slices(agreement: Mapping[int, float], drawn: Mapping[int, np.ndarray], minimum: float) -> set[int]:
    """Drawn slices the model could not reproduce: agreement below ``minimum``, among the drawn slices big enough
    to judge (:data:`MIN_JUDGED_SHARE` of the largest)."""
    areas = {int(k): int(plane.sum()) for k, plane in drawn.items()}
    largest = max(areas.values(), default=0)
    return {k for k, value in agreement.items() if value < minimum and areas.get(k, 0) >= MIN_JUDGED_SHARE * largest}


def unreliable_slices(agreement: Mapping[int, float], failed: set[int], absent: Sequence[int],
                      slices: Sequence[int]) -> tuple[list[int], list[int]]:
    """Which of ``slices`` came from a labelled slice the model could not reproduce (``failed``, of the labelled
    slices that are ``agreement``'s keys):
    ``(fill, clear)`` — slices between two labelled slices (no "absent" slice between) of which one failed, to be
    interpolated from the drawings alone, and slices reached from one failed labelled slice only, to be left empty.

    Decided per labelled slice, not per structure, so that a correction changes nothing beyond its own slab."""
    if not failed:
        return [], []
    barriers = {int(b) for b in absent}
    stops = sorted(set(agreement) | barriers)
    fill, clear = [], []
    for k in slices:
        if k in agreement or k in barriers:  # drawn, or marked absent: kept as the annotator said
            continue
        below = [s for s in stops if s < k]
        above = [s for s in stops if s > k]
        low = below[-1] if below and below[-1] in agreement else None  # an absent slice stops the walks
        high = above[0] if above and above[0] in agreement else None
        if low is not None and high is not None:
            if low in failed or high in failed:
                fill.append(k)
        elif (low if low is not None else high) in failed:
            clear.append(k)
    return fill, clear


def warning_for(name: str, agreement: Mapping[int, float], failed: set[int]) -> str | None:
    """The one line a user reads when labelled slices of a structure could not be reproduced (None if all were)."""
    if not failed:
        return None
    which = ", ".join(f"{k} (Dice {agreement[k]:.2f})" for k in sorted(failed))
    return (f"{name}: the model could not reproduce labelled slice(s) {which} with its own prediction; between "
            f"labelled slices next to them {name} is interpolated from the drawn shapes alone, and beyond them it "
            "is left empty" + ("" if len(agreement) > 1 else " (label a second slice to fill the slices between)"))


def warning_text(provenance: dict | None) -> str:
    """A result's warnings as text to put before a front-end's status line (empty when there are none)."""
    return "".join(f"Warning: {text}. " for text in (provenance or {}).get("warnings") or [])
