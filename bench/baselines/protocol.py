"""What the accuracy benchmark evaluates on: datasets, held-out (target, reference) pairs, PAPILA folds.

Why in one place: every method must be scored on exactly the same targets with exactly the same
references, and the held-out rules must be the ones training respects:

* **kidney** — kidney-ROI CT phantoms, target seed 5000+i with reference seed 5100+i (both never
  trained or validated on: training uses seeds < 1000, validation 1000+);
* **fundus** — 2D fundus phantoms, target 5000+i, reference 5100+i (256 px, as trained);
* **hippocampus** — MSD Task04 held-out split (``hippocampus_eval_pairs``: test case k with training
  case k, another patient);
* **PAPILA** — leave one eye out: each eye is a target once, its reference another eye (the official
  pair RET087OS ← RET065OD, otherwise the next eye in sorted order); the trained methods' fold models
  never see the target eye;
* **kidney, whole abdomen** — our own generator's full field of view (``kidney_phantom``, 40×224×224, spine
  and bowel in view), target seed 5000+i, reference 5100+i: held out, but the same generator as training;
* **unseen generator** — ``kidney-full`` (512² abdominal CT) and ``fundus-full`` (whole photographs) from
  :mod:`KnowledgeSAMLib.data.unseen_phantoms`, written independently of the training phantoms and never used by
  any training or tuning step: target seed i, reference seed 100+i. These rows are the evidence of
  generalisation; the others are smoke tests of the familiar distribution;
* **real CT** — ``bench/real_ct_check.py``'s pair: the TotalSegmentator example CT prompted by its labelled
  upper slab, scored on the slices the slab does not contain (model labels: a check, not an accuracy claim).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from KnowledgeSAMLib.data.volume import Image, Labels
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.train.sources import HELD_OUT_PHANTOM_SEED, SliceCase, Source, volume_to_case

__all__ = ["DatasetSpec", "DATASETS", "EvalPair", "REFERENCE_SEED_OFFSET", "eval_pairs", "papila_folds",
           "papila_fold_source", "dataset_available"]

REFERENCE_SEED_OFFSET = 100  # phantom target 5000+i is prompted with phantom 5100+i


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    title: str
    source_kind: str  # the training source kind (KnowledgeSAMLib.train.sources)
    structures: tuple[str, ...]
    preset: str
    volumetric: bool


DATASETS: dict[str, DatasetSpec] = {
    "kidney": DatasetSpec("kidney", "Kidney ROI CT phantoms (3D)", "kidney_roi_phantom",
                          ("artery", "medulla", "cortex"), "ct-abdomen", True),
    "fundus": DatasetSpec("fundus", "Fundus phantoms (2D)", "fundus_phantom", ("disc", "cup"), "rgb", False),
    "hippocampus": DatasetSpec("hippocampus", "MSD hippocampus MRI (3D, cross-patient reference)", "hippocampus",
                               ("head", "body"), "mr", True),
    "papila": DatasetSpec("papila", "PAPILA fundus photographs (2D, leave-one-eye-out)", "papila",
                          ("disc", "cup"), "rgb", False),
    "kidney_full": DatasetSpec("kidney_full", "Kidney CT phantoms, whole abdomen in view (3D, our generator)",
                               "kidney_phantom", ("artery", "medulla", "cortex"), "ct-abdomen", True),
    "kidney_unseen": DatasetSpec("kidney_unseen", "Kidney CT, whole abdomen — unseen generator (3D, 512²)",
                                 "unseen", ("artery", "medulla", "cortex"), "ct-abdomen", True),
    "fundus_unseen": DatasetSpec("fundus_unseen", "Fundus photographs — unseen generator (2D, whole field)",
                                 "unseen", ("disc", "cup"), "rgb", False),
    "real_ct": DatasetSpec("real_ct", "Real abdominal CT check (TotalSegmentator example, model labels)",
                           "unseen", ("kidney_right", "kidney_left", "liver", "aorta", "inferior_vena_cava"),
                           "ct-abdomen", True),
}
KIDNEY_FULL_SHAPE = (40, 224, 224)  # as the default model's whole-abdomen training phantoms


@dataclass
class EvalPair:
    """One held-out target with its truth and the labelled reference that prompts it."""

    dataset: str
    case: str
    target: Image
    truth: Labels
    reference_id: str
    reference: Image
    reference_labels: Labels
    scored_slices: slice | None = None  # numpy slice of the target's first axis that is scored (None: all)


def dataset_available(key: str, root: str | Path | None) -> str | None:
    """None when the dataset can be loaded, else the reason it cannot (one line)."""
    if key in ("kidney", "fundus", "kidney_full", "kidney_unseen", "fundus_unseen"):
        return None
    if key == "real_ct":
        from KnowledgeSAMLib.data.datasets import shared_data_root

        folder = (Path(root) if root else shared_data_root()) / "totalsegmentator-example"
        return None if (folder / "example_ct.nii.gz").is_file() else f"{folder}: the TotalSegmentator example is missing"
    from KnowledgeSAMLib.data.datasets import hippocampus_root, papila_root

    try:
        (hippocampus_root if key == "hippocampus" else papila_root)(root)
    except InputError as error:
        return str(error)
    return None


def papila_folds(root: str | Path | None) -> list[tuple[str, str, list[str]]]:
    """``(target eye, reference eye, training eyes)`` for every eye (training eyes exclude the target)."""
    from KnowledgeSAMLib.data.datasets import PAPILA_REFERENCE, papila_eyes

    eyes = papila_eyes(root)
    if len(eyes) < 2:
        raise InputError(f"PAPILA leave-one-out needs at least 2 eyes, found {len(eyes)}")
    folds = []
    for i, eye in enumerate(eyes):
        reference = PAPILA_REFERENCE.get(eye) or eyes[(i + 1) % len(eyes)]
        folds.append((eye, reference, [e for e in eyes if e != eye]))
    return folds


def eval_pairs(key: str, count: int, root: str | Path | None = None, fundus_size: int = 256,
               papila_targets: Sequence[str] | None = None) -> Iterator[EvalPair]:
    """The held-out pairs of dataset ``key`` (``count`` <= 0: all; PAPILA: the eyes in ``papila_targets``)."""
    if key == "kidney":
        from KnowledgeSAMLib.data.phantoms import make_kidney_roi_phantom

        for i in range(count):
            t, r = HELD_OUT_PHANTOM_SEED + i, HELD_OUT_PHANTOM_SEED + REFERENCE_SEED_OFFSET + i
            yield EvalPair(key, f"seed {t}", *make_kidney_roi_phantom(t), f"seed {r}", *make_kidney_roi_phantom(r))
    elif key == "fundus":
        from KnowledgeSAMLib.data.phantoms import make_fundus_phantom

        for i in range(count):
            t, r = HELD_OUT_PHANTOM_SEED + i, HELD_OUT_PHANTOM_SEED + REFERENCE_SEED_OFFSET + i
            yield EvalPair(key, f"seed {t}", *make_fundus_phantom(t, fundus_size), f"seed {r}",
                           *make_fundus_phantom(r, fundus_size))
    elif key == "hippocampus":
        from KnowledgeSAMLib.data.datasets import hippocampus_cases, hippocampus_eval_pairs, load_hippocampus

        pairs = hippocampus_eval_pairs(hippocampus_cases(root))
        for target, reference in pairs[:count] if count > 0 else pairs:
            yield EvalPair(key, target, *load_hippocampus(root, target), reference, *load_hippocampus(root, reference))
    elif key == "papila":
        from KnowledgeSAMLib.data.datasets import load_papila

        for eye, reference, _ in papila_folds(root):
            if papila_targets is None or eye in papila_targets:
                yield EvalPair(key, eye, *load_papila(root, eye), reference, *load_papila(root, reference))
    elif key == "kidney_full":
        from KnowledgeSAMLib.data.phantoms import make_kidney_phantom

        for i in range(count):
            t, r = HELD_OUT_PHANTOM_SEED + i, HELD_OUT_PHANTOM_SEED + REFERENCE_SEED_OFFSET + i
            yield EvalPair(key, f"seed {t}", *make_kidney_phantom(t, shape=KIDNEY_FULL_SHAPE), f"seed {r}",
                           *make_kidney_phantom(r, shape=KIDNEY_FULL_SHAPE))
    elif key in ("kidney_unseen", "fundus_unseen"):
        from KnowledgeSAMLib.data import unseen_phantoms

        make = unseen_phantoms.make_kidney_full_phantom if key == "kidney_unseen" else \
            unseen_phantoms.make_fundus_full_phantom
        for i in range(count):
            yield EvalPair(key, f"seed {i}", *make(i), f"seed {100 + i}", *make(100 + i))
    elif key == "real_ct":
        from KnowledgeSAMLib.data.datasets import shared_data_root
        from bench.real_ct_check import SLAB_START, load

        folder = (Path(root) if root else shared_data_root()) / "totalsegmentator-example"
        target, truth, reference, reference_labels = load(folder)
        yield EvalPair(key, "example_ct[0:82]", target, truth, "example_ct_sm (slices 82-111)", reference,
                       reference_labels, scored_slices=slice(0, SLAB_START))
    else:
        raise ValueError(f"unknown dataset {key!r}")


def papila_fold_source(root: str | Path | None, eyes: Sequence[str], size: int, held_out: str,
                       weight: float = 0.4) -> Source:
    """The training eyes of one PAPILA fold (``held_out`` = its target eye) as a :class:`Source` at model size."""
    from KnowledgeSAMLib.data.datasets import load_papila

    if held_out in eyes:
        raise ValueError(f"PAPILA fold: the target eye {held_out} must not be a training eye")
    cases: list[SliceCase] = []
    for eye in eyes:
        image, labels = load_papila(root, eye)
        case = volume_to_case(f"papila_{eye}", "papila", image, labels, ["disc", "cup"], "rgb", size)
        if case is not None:
            cases.append(case)
    return Source(name="papila", kind="papila", weight=weight, tasks=["disc", "cup"], train=cases, val=[],
                  held_out=[held_out])
