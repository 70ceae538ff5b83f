"""Loaders and fixed splits for the small real datasets kept beside the repository (``../shared/data``).

Why fixed, code-defined splits: training, evaluation and the documentation must talk about the same
held-out cases, and a reference for each held-out target must come from *another* patient in the
training set (cross-patient knowledge prompt), chosen deterministically.

* MSD Task04 hippocampus (40 T1 MRI crops; CC-BY-SA 4.0): segments ``head`` (MSD label 1, "Anterior")
  and ``body`` (MSD label 2, "Posterior"). Split: sorted ids, test = ``ids[3::4]`` (10), train = rest;
  target ``test[k]`` is paired with reference ``train[k]``. Intensities are float32 of mixed origin
  (uint8 and float, up to ~3.6e5): use the ``mr`` intensity preset (per-volume percentiles).
* PAPILA (4 colour fundus photos, 2576×1934; CC BY 4.0): ``disc`` (layer 0 = label >= 1) ⊃ ``cup``
  (layer 1 = label 2), two experts. The disc is small in the full photo, so by default the loader
  returns a *disc-centred square crop*, side = 3 × the disc diameter taken from the expert label's
  bounding box, as REFUGE's disc-centred crops are made. The crop therefore uses the label: evaluation
  on PAPILA is on disc-centred crops, not on whole photographs. The crop keeps the full photo's pixel
  coordinates in its geometry (origin = crop corner). Split: test = ``RET087OS`` with reference
  ``RET065OD``; train = the other three.

The data folder defaults to ``<repo>/../shared/data`` and can be moved with the environment variable
``KNOWLEDGESAM_SHARED_DATA``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import InputError
from .io import read_image, read_labels
from .volume import Geometry, Image, Labels, Segment

__all__ = [
    "shared_data_root", "Split",
    "hippocampus_root", "hippocampus_cases", "load_hippocampus", "hippocampus_split", "hippocampus_eval_pairs",
    "HIPPOCAMPUS_SEGMENTS",
    "papila_root", "papila_eyes", "load_papila", "papila_split", "papila_eval_pairs", "disc_centred_box",
    "PAPILA_SEGMENTS", "PAPILA_TEST", "PAPILA_REFERENCE",
]

ENV_VAR = "KNOWLEDGESAM_SHARED_DATA"
HIPPOCAMPUS_DIR = "msd-hippocampus"
PAPILA_DIR = "papila"
HIPPOCAMPUS_SEGMENTS: tuple[Segment, ...] = (
    Segment("head", 1, 0, (0.90, 0.60, 0.20)),  # MSD "Anterior"
    Segment("body", 2, 0, (0.25, 0.60, 0.90)),  # MSD "Posterior" (body + tail)
)
PAPILA_SEGMENTS: tuple[Segment, ...] = (
    Segment("disc", 1, 0, (0.13, 0.55, 0.95)),
    Segment("cup", 2, 1, (1.0, 0.85, 0.10)),
)
PAPILA_TEST = ("RET087OS",)
PAPILA_REFERENCE = {"RET087OS": "RET065OD"}
PAPILA_CROP_FACTOR = 3.0  # crop side / disc diameter


class Split(NamedTuple):
    train: list[str]
    test: list[str]


def shared_data_root() -> Path:
    """``$KNOWLEDGESAM_SHARED_DATA`` if set, else ``shared/data`` beside the repository folder."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _dataset_root(root: str | os.PathLike | None, name: str, marker: str) -> Path:
    """Accept the shared data folder or the dataset folder itself; fail with a clear message."""
    base = Path(root) if root is not None else shared_data_root()
    for candidate in (base / name, base):
        if (candidate / marker).is_dir():
            return candidate
    raise InputError(f"{base}: the {name} dataset was not found (expected {base / name / marker}; "
                     f"set {ENV_VAR} to the shared data folder)")


# ----------------------------------------------------------------------------------- hippocampus

def hippocampus_root(root: str | os.PathLike | None = None) -> Path:
    return _dataset_root(root, HIPPOCAMPUS_DIR, "images")


def hippocampus_cases(root: str | os.PathLike | None = None) -> list[str]:
    """Sorted case ids (``hippocampus_001`` ...) that have both an image and a label."""
    folder = hippocampus_root(root)
    images = {p.name[: -len(".nii.gz")] for p in (folder / "images").glob("*.nii.gz")}
    labels = {p.name[: -len(".nii.gz")] for p in (folder / "labels").glob("*.nii.gz")}
    cases = sorted(images & labels)
    if not cases:
        raise InputError(f"{folder}: no hippocampus cases with both images/ and labels/ files")
    return cases


def load_hippocampus(root: str | os.PathLike | None, case_id: str) -> tuple[Image, Labels]:
    """Image (float32, whatever the file's dtype) and labels ``head`` = 1, ``body`` = 2 on the same grid."""
    folder = hippocampus_root(root)
    image_path = folder / "images" / f"{case_id}.nii.gz"
    label_path = folder / "labels" / f"{case_id}.nii.gz"
    image = read_image(image_path)
    labels = read_labels(label_path)
    if labels.shape != image.shape or not labels.geometry.same_grid(image.geometry):
        raise InputError(f"{label_path}: label grid does not match the image {image_path}")
    values = set(np.unique(labels.layers).tolist()) - {0}
    if not values <= {1, 2}:
        raise InputError(f"{label_path}: unexpected label values {sorted(values)} (expected 1 and 2)")
    image = Image(image.array.astype(np.float32, copy=False), image.geometry, image.source)
    segments = [Segment(s.name, s.label_value, s.layer, s.color) for s in HIPPOCAMPUS_SEGMENTS]
    return image, Labels(labels.layers, labels.geometry, segments, labels.source)


def hippocampus_split(ids: Sequence[str]) -> Split:
    """Fixed split: sorted ids, test = every 4th starting at index 3, train = the rest."""
    ordered = sorted(ids)
    test = ordered[3::4]
    return Split(train=[i for i in ordered if i not in test], test=test)


def hippocampus_eval_pairs(ids: Sequence[str]) -> list[tuple[str, str]]:
    """``(target, reference)``: held-out case ``k`` with training case ``k`` (another patient)."""
    split = hippocampus_split(ids)
    if len(split.train) < len(split.test):
        raise InputError(f"not enough training cases ({len(split.train)}) to pair {len(split.test)} targets")
    return list(zip(split.test, split.train))


# ---------------------------------------------------------------------------------------- PAPILA

def papila_root(root: str | os.PathLike | None = None) -> Path:
    return _dataset_root(root, PAPILA_DIR, "images")


def papila_eyes(root: str | os.PathLike | None = None) -> list[str]:
    """Sorted eye ids (``RET065OD`` ...) with an image."""
    folder = papila_root(root)
    eyes = sorted(p.stem for p in (folder / "images").glob("*.jpg"))
    if not eyes:
        raise InputError(f"{folder}: no PAPILA images in images/")
    return eyes


def papila_split(eyes: Sequence[str] | None = None) -> Split:
    eyes = sorted(eyes) if eyes is not None else ["RET028OS", "RET065OD", "RET087OS", "RET210OS"]
    return Split(train=[e for e in eyes if e not in PAPILA_TEST], test=[e for e in eyes if e in PAPILA_TEST])


def papila_eval_pairs() -> list[tuple[str, str]]:
    return [(target, PAPILA_REFERENCE[target]) for target in PAPILA_TEST]


def disc_centred_box(disc: np.ndarray, factor: float = PAPILA_CROP_FACTOR, jitter: float = 0.0,
                     rng: np.random.Generator | None = None) -> tuple[int, int, int]:
    """``(top, left, side)`` of a square crop centred on the disc's bounding box, side = ``factor`` × the
    disc diameter (longer side of the box). ``jitter`` > 0 (training only) shifts the centre by up to
    ``jitter`` × side and scales the side by up to ± ``jitter``; without it the box is deterministic."""
    rows, cols = np.nonzero(disc)
    if rows.size == 0:
        raise InputError("the label has no optic disc pixels; cannot centre a crop on it")
    diameter = max(rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    centre = np.array([(rows.min() + rows.max()) / 2.0, (cols.min() + cols.max()) / 2.0])
    side = factor * diameter
    if jitter > 0:
        rng = rng if rng is not None else np.random.default_rng()
        centre = centre + rng.uniform(-jitter, jitter, 2) * side
        side *= 1.0 + rng.uniform(-jitter, jitter)
    side = int(round(side))
    top, left = (int(round(c - side / 2.0)) for c in centre)
    return top, left, side


def _crop(array: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """Square crop of a ``(y, x, ...)`` array; parts outside the photo are zero (black, like its border)."""
    out = np.zeros((side, side) + array.shape[2:], dtype=array.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, array.shape[0]), min(left + side, array.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = array[y0:y1, x0:x1]
    return out


def load_papila(root: str | os.PathLike | None, eye_id: str, expert: int = 1, crop: bool = True,
                jitter: float = 0.0, rng: np.random.Generator | None = None) -> tuple[Image, Labels]:
    """RGB fundus image and ``disc`` ⊃ ``cup`` labels of one eye, by default as a disc-centred crop."""
    if expert not in (1, 2):
        raise InputError(f"PAPILA has experts 1 and 2, not {expert}")
    folder = papila_root(root)
    image = read_image(folder / "images" / f"{eye_id}.jpg")
    label_path = folder / "labels" / f"{eye_id}_exp{expert}.png"
    raw = read_labels(label_path).layers[0, 0]
    if raw.shape != image.shape[1:]:
        raise InputError(f"{label_path}: size {raw.shape} does not match the image {image.shape[1:]}")
    rgb = image.array[0]
    disc, cup = raw >= 1, raw == 2
    geometry = Geometry(ndim=2)
    if crop:
        top, left, side = disc_centred_box(disc, jitter=jitter, rng=rng)
        rgb, disc, cup = (_crop(a, top, left, side) for a in (rgb, disc, cup))
        geometry = Geometry(origin=(float(left), float(top), 0.0), ndim=2)
    layers = np.stack([disc.astype(np.uint8), cup.astype(np.uint8) * 2])[:, None]
    segments = [Segment(s.name, s.label_value, s.layer, s.color) for s in PAPILA_SEGMENTS]
    return (Image(rgb[None], geometry, image.source),
            Labels(layers, geometry, segments, str(label_path)))
