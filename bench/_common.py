"""Shared pieces of the baseline benchmarks: data location, SimpleITK bridging, scoring, JSON output.

Why: the atlas and U-Net baselines must load the same cases, split them the same way and score them
with the same metric code as the KnowledgeSAM runs, or their numbers are not comparable.
"""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from KnowledgeSAMLib.data.volume import Geometry, Image, Labels
from KnowledgeSAMLib.evaluation.metrics import mean_scores, score_structure

STRUCTURES = ("head", "body")


def hippocampus_available(root: str | Path | None = None) -> bool:
    """Whether the hippocampus data can be found (``root``, else ``$KNOWLEDGESAM_SHARED_DATA``, else shared/data)."""
    from KnowledgeSAMLib.data.datasets import hippocampus_root
    from KnowledgeSAMLib.errors import InputError

    try:
        hippocampus_root(root)
    except InputError:
        return False
    return True


def refuse_other_budget(tool: str, folder: Path, stored: dict[str, Any] | None, budget: dict[str, Any]) -> None:
    """One table never mixes budgets: a finished run made with another budget (or with none recorded) stops
    the script, naming the folder and what differs, instead of being reused."""
    old, current = stored or {}, json.loads(json.dumps(budget))  # as stored: tuples become lists
    if old != current:
        changed = ", ".join(f"{k} {old.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(old) | set(current))
                            if old.get(k) != current.get(k))
        raise SystemExit(f"{tool}: error: {folder} holds a run made with another budget ({changed}); "
                         "use another --work-dir or delete that folder")


def resume_or_start_fresh(run_dir: Path) -> str | None:
    """The Trainer's ``resume`` for a benchmark run folder: ``"auto"`` when it holds a checkpoint, else None.

    A run killed before its first checkpoint leaves only logs, and the Trainer rightly refuses to start over
    a folder holding a run; nothing in it can be resumed, so it is kept as ``<run>.interrupted`` (replacing an
    older one) and the run starts fresh."""
    import shutil

    from KnowledgeSAMLib.train.checkpoint import latest_checkpoint

    if latest_checkpoint(run_dir):
        return "auto"
    if run_dir.exists():
        aside = run_dir.with_name(run_dir.name + ".interrupted")
        if aside.exists():
            shutil.rmtree(aside)
        run_dir.rename(aside)
    return None


def to_sitk(array: np.ndarray, geometry: Geometry, dtype=np.float32) -> sitk.Image:
    """A scalar ``(z, y, x)`` array on ``geometry`` as a 3D SimpleITK image (the geometry is not re-derived)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=dtype))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def score_case(prediction: Labels, truth: Labels, structures: Sequence[str] = STRUCTURES) -> dict[str, Any]:
    """Dice and HD95 per named structure (prediction and truth on the same grid) plus the mean."""
    scores = [score_structure(name, prediction.mask(name), truth.mask(name), truth.geometry.spacing)
              for name in structures]
    mean = mean_scores(scores)
    return {
        "dice": {s.name: s.dice for s in scores},
        "hd95_mm": {s.name: (s.hd95_mm if math.isfinite(s.hd95_mm) else None) for s in scores},
        "mean_dice": mean["dice"],
    }


def summarise(cases: list[dict[str, Any]], structures: Sequence[str] = STRUCTURES) -> dict[str, Any]:
    """Mean Dice per structure, overall mean Dice and mean seconds per case over the evaluated cases."""
    per_structure = {name: float(np.mean([c["dice"][name] for c in cases])) for name in structures}
    return {
        "cases": len(cases),
        "dice": per_structure,
        "mean_dice": float(np.mean(list(per_structure.values()))),
        "seconds_per_case": float(np.mean([c["seconds"] for c in cases])) if cases and "seconds" in cases[0] else None,
    }


def machine() -> dict[str, Any]:
    """Where the numbers were measured (they depend on it)."""
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()}


def write_json(payload: dict[str, Any], path: str | Path, overwrite: bool = True) -> Path:
    """Write benchmark results atomically (temp file in the same folder, then rename)."""
    from KnowledgeSAMLib.data.io import atomic_write

    path = Path(path)
    with atomic_write(path, overwrite=overwrite) as temporary:
        Path(temporary).write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def two_part_phantom(shape: tuple[int, int, int] = (32, 40, 32), centre_mm: tuple[float, float, float] | None = None,
                     radii_mm: tuple[float, float, float] = (6.0, 12.0, 6.0), seed: int = 0,
                     spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[Image, Labels]:
    """A hippocampus-like test object: an elongated ellipsoid split along y into "head" (1) and "body" (2).

    ``centre_mm``/``radii_mm`` are (x, y, z) in millimetres from the grid origin. The image has a bright
    object (head slightly brighter than body), a second landmark blob, a smooth intensity ramp and noise,
    so that registration and learning have something to hold on to. Used by the baselines' smoke tests.
    """
    from KnowledgeSAMLib.data.volume import Segment

    rng = np.random.default_rng(seed)
    geometry = Geometry(spacing=spacing)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing[::-1])], indexing="ij")
    extent = [n * s for n, s in zip(shape[::-1], spacing)]  # x, y, z in mm
    cx, cy, cz = centre_mm if centre_mm is not None else tuple(e / 2 for e in extent)
    rx, ry, rz = radii_mm
    inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0
    labelmap = np.where(inside, np.where(y < cy, 1, 2), 0).astype(np.uint8)
    landmark = ((x - cx - 1.6 * rx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) <= (0.6 * rx) ** 2
    image = 0.2 + 0.1 * y / extent[1] + np.where(labelmap == 1, 0.7, np.where(labelmap == 2, 0.55, 0.0))
    image = image + 0.4 * landmark + rng.normal(0.0, 0.03, shape)
    labels = Labels(layers=labelmap[None], geometry=geometry,
                    segments=[Segment("head", 1), Segment("body", 2)], source=f"phantom seed {seed}")
    return Image(array=image.astype(np.float32), geometry=geometry, source=f"phantom seed {seed}"), labels
