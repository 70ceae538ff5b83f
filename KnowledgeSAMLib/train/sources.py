"""Training data as pre-computed 2D slice cases at model size (uint8), built once per run.

Why pre-compute: a training step needs a handful of slices, but reading a volume, fitting its intensity
preset and resampling it to the model grid costs far more than the step itself on a CPU. Every source
(phantom or real dataset) is turned once into :class:`SliceCase` arrays (images ``(n, S, S, 3)`` uint8,
masks ``(n, T, S, S)`` uint8), optionally cached to disk as ``.npz`` so restarts and every DDP process
skip the work. The pair sampler then only indexes numpy arrays.

Loading, intensity mapping and square fitting are the data layer's (``KnowledgeSAMLib.data``); this module
only decides *which* volumes, slices and tasks become training cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..data.volume import Image, Labels
from ..errors import InputError
from .cases import SliceCase
from .config import FOLDER_KINDS, SourceConfig

__all__ = ["SliceCase", "Source", "volume_to_case", "build_source", "build_sources", "DEFAULT_TASKS",
           "DEFAULT_PRESETS", "HELD_OUT_PHANTOM_SEED", "VAL_PHANTOM_SEED_OFFSET", "SLICING_VERSION",
           "TOTALSEG_CT_NAMES"]

# TotalSegmentator example volumes (model labels, Apache-2.0; ../shared/data/totalsegmentator-example): training
# prompts only, never accuracy claims. The CT's liver, aorta, IVC, kidneys and spleen are left out of the default
# tasks: they are the structures of the real-CT check in bench/ (the MR keeps them).
TOTALSEG_FILES = {"ct": ("example_ct.nii.gz", "example_seg_fast_force_split.nii.gz", "ct-abdomen"),
                  "ct_sm": ("example_ct_sm.nii.gz", "example_seg.nii.gz", "ct-abdomen"),
                  "mr": ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "mr")}
TOTALSEG_CT_NAMES = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach",
                     7: "pancreas", 18: "small_bowel", 19: "duodenum", 20: "colon", 21: "urinary_bladder",
                     25: "sacrum", 29: "vertebrae_L3", 30: "vertebrae_L2", 31: "vertebrae_L1", 52: "aorta",
                     63: "inferior_vena_cava", 64: "portal_vein_and_splenic_vein", 65: "iliac_artery_left",
                     66: "iliac_artery_right", 77: "hip_left", 78: "hip_right", 79: "spinal_cord",
                     80: "gluteus_maximus_left", 81: "gluteus_maximus_right", 86: "autochthon_left",
                     87: "autochthon_right", 88: "iliopsoas_left", 89: "iliopsoas_right"}
# total_mr ids whose names we are sure of; the others are tasks by id (names only pair reference and target).
TOTALSEG_MR_NAMES = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 4: "gallbladder", 5: "liver", 6: "stomach",
                     7: "pancreas"}
TOTALSEG_CT_HELD_OUT = ("liver", "aorta", "inferior_vena_cava", "kidney_left", "kidney_right", "spleen")

DEFAULT_TASKS: dict[str, list[str]] = {
    "kidney_phantom": ["artery", "medulla", "cortex"],
    "kidney_roi_phantom": ["artery", "medulla", "cortex"],
    "fundus_phantom": ["disc", "cup"],
    "hippocampus": ["head", "body"],
    "papila": ["disc", "cup"],
    "totalsegmentator": [],  # every named structure of each volume, except the CT's held-out ones
    "volume_folder": [],  # every structure found in the folder
    "image_folder": [],
}
DEFAULT_PRESETS = {"kidney_phantom": "ct-abdomen", "kidney_roi_phantom": "ct-abdomen", "fundus_phantom": "rgb",
                   "hippocampus": "mr", "papila": "rgb", "totalsegmentator": "auto", "volume_folder": "auto",
                   "image_folder": "auto"}

_FOLDER_ONLY = {"test_cases": 0, "labels": None, "patients": None, "split_file": None}
# settings added later: absent from cache keys at their defaults
_ADDED_LATER = {"anatomy": False, "phase": "corticomedullary", "tuning_cases": 0}
VAL_PHANTOM_SEED_OFFSET = 1000  # validation phantoms: seed + 1000 + i
HELD_OUT_PHANTOM_SEED = 5000  # evaluation phantoms (bench/table2.py): 5000 + i, never trained or validated on
_CACHE_VERSION = 3  # 3: slices in the engine's canonical orientation (axis_view)
SLICING_VERSION = _CACHE_VERSION  # models trained on older slices saw other pixels (benchmarks compare it)


@dataclass
class Source:
    """A named family of cases with a sampling weight; ``train`` and ``val`` never share a case."""

    name: str
    kind: str
    weight: float
    tasks: list[str]
    train: list[SliceCase]
    val: list[SliceCase]
    held_out: list[str] = field(default_factory=list)  # test cases this source keeps out (for the model card)
    problems: list[str] = field(default_factory=list)  # folders: one line per data problem (data.json)
    split: dict | None = None  # folders: the patient split (split.json beside the run)


# ------------------------------------------------------------------------------------ volume -> case
def volume_to_case(name: str, source: str, image: Image, labels: Labels, tasks: list[str], preset: str,
                   size: int, axis: str = "axial", margin: int = 3) -> SliceCase | None:
    """Slice one labelled volume (or 2D image) into a :class:`SliceCase` at ``size`` × ``size``.

    Keeps the slices spanned by the union of the tasks' extents plus ``margin`` on each side (the
    negatives pool). Returns None when none of the tasks is present.
    """
    from .views import ViewSpec, volume_view

    return volume_view(name, source, image, labels, tasks, preset, size, ViewSpec(), np.random.default_rng(0),
                       axis, margin)


def default_tasks(src: SourceConfig) -> list[str]:
    """The tasks of a source that names none: its kind's structures; kidney phantoms with ``anatomy`` add the
    organs, and outside the corticomedullary phase have only the organs (cortex and medulla look alike)."""
    tasks = list(DEFAULT_TASKS[src.kind])
    if src.kind == "kidney_phantom" and src.phase != "corticomedullary":
        tasks = []
    if src.kind == "kidney_phantom" and src.anatomy:
        from ..data.phantoms.kidney_anatomy import ANATOMY

        tasks += list(ANATOMY)
    return tasks


# ------------------------------------------------------------------------------------ per-kind loaders
Volumes = Iterator[tuple[str, Image, Labels]]


def _kidney_volumes(src: SourceConfig) -> tuple[Volumes, Volumes, list[str]]:
    from ..data.phantoms import make_kidney_phantom

    def gen(seeds: range) -> Volumes:
        for seed in seeds:
            try:
                image, labels = make_kidney_phantom(seed, shape=tuple(src.shape), anatomy=src.anatomy,
                                                    phase=src.phase)
            except ValueError as error:
                raise InputError(f"kidney_phantom source: {error}") from None
            yield f"kidney_phantom_{seed:04d}", image, labels

    return (gen(range(src.seed, src.seed + src.n_train)),
            gen(range(src.seed + VAL_PHANTOM_SEED_OFFSET, src.seed + VAL_PHANTOM_SEED_OFFSET + src.val_cases)),
            [f"seeds >= {HELD_OUT_PHANTOM_SEED} (evaluation phantoms)"])


def _kidney_roi_volumes(src: SourceConfig) -> tuple[Volumes, Volumes, list[str]]:
    from ..data.phantoms import make_kidney_roi_phantom

    def gen(seeds: range) -> Volumes:
        for seed in seeds:
            image, labels = make_kidney_roi_phantom(seed)
            yield f"kidney_roi_phantom_{seed:04d}", image, labels

    return (gen(range(src.seed, src.seed + src.n_train)),
            gen(range(src.seed + VAL_PHANTOM_SEED_OFFSET, src.seed + VAL_PHANTOM_SEED_OFFSET + src.val_cases)),
            [f"seeds >= {HELD_OUT_PHANTOM_SEED} (evaluation phantoms)"])


def _fundus_volumes(src: SourceConfig) -> tuple[Volumes, Volumes, list[str]]:
    from ..data.phantoms import make_fundus_phantom

    def gen(seeds: range) -> Volumes:
        for seed in seeds:
            try:
                image, labels = make_fundus_phantom(seed, src.size)
            except ValueError as error:
                raise InputError(f"fundus_phantom source: {error}") from None
            yield f"fundus_phantom_{seed:04d}", image, labels

    return (gen(range(src.seed, src.seed + src.n_train)),
            gen(range(src.seed + VAL_PHANTOM_SEED_OFFSET, src.seed + VAL_PHANTOM_SEED_OFFSET + src.val_cases)),
            [f"seeds >= {HELD_OUT_PHANTOM_SEED} (evaluation phantoms)"])


def _split_train_val(ids: list[str], src: SourceConfig) -> tuple[list[str], list[str]]:
    """Validation = the last ``val_cases`` of the train split; ``train_cases`` caps the rest (0 = all)."""
    if src.val_cases >= len(ids):
        raise InputError(f"{src.root}: val_cases={src.val_cases} leaves no training case out of {len(ids)}")
    train, val = (ids[:-src.val_cases], ids[-src.val_cases:]) if src.val_cases else (ids, [])
    if src.n_train:
        train = train[:src.n_train]
    return train, val


def _hippocampus_volumes(src: SourceConfig) -> tuple[Volumes, Volumes, list[str]]:
    from ..data.datasets import hippocampus_cases, hippocampus_split, load_hippocampus

    every = hippocampus_cases(src.root)
    tuning, ids = every[:src.tuning_cases], every[src.tuning_cases:]  # tuning cases never reach training
    if not ids:
        raise InputError(f"{src.root}: tuning_cases={src.tuning_cases} leaves no case to train on")
    if src.test_split:
        train_ids, test_ids = hippocampus_split(ids)  # the test split never reaches training
    else:
        train_ids, test_ids = list(ids), []
    train, val = _split_train_val(sorted(train_ids), src)

    def gen(ids: list[str]) -> Volumes:
        for case_id in ids:
            image, labels = load_hippocampus(src.root, case_id)
            yield case_id if case_id.startswith("hippocampus") else f"hippocampus_{case_id}", image, labels

    return gen(train), gen(val), [*tuning, *test_ids]


def _papila_volumes(src: SourceConfig) -> tuple[Volumes, Volumes, list[str]]:
    from ..data.datasets import load_papila, papila_eyes, papila_split

    train_eyes, test_eyes = papila_split(papila_eyes(src.root))  # RET087OS (test) never reaches training
    train, val = _split_train_val(sorted(train_eyes), src)

    def gen(eyes: list[str]) -> Volumes:
        for eye in eyes:
            image, labels = load_papila(src.root, eye, expert=src.expert, crop=src.crop)
            yield f"papila_{eye}", image, labels

    return gen(train), gen(val), list(test_eyes)


def _totalseg_labels(labels: Labels, names: dict[int, str], volume: str) -> Labels:
    """Give the label map's values names (known ones by name, the rest as ``<volume>_label_<id>``)."""
    from ..data.volume import Segment

    values = sorted(int(v) for v in np.unique(labels.layers[0]) if v)
    segments = [Segment(names.get(v, f"{volume}_label_{v}"), v, 0) for v in values]
    return Labels(labels.layers[:1], labels.geometry, segments, labels.source)


def _totalseg_volumes(src: SourceConfig) -> tuple[Volumes, Volumes, list[str]]:
    from ..data.io import read_image, read_labels

    root = Path(src.root)
    chosen = list(src.volumes) or list(TOTALSEG_FILES)
    unknown = [v for v in chosen if v not in TOTALSEG_FILES]
    if unknown:
        raise InputError(f"totalsegmentator source: unknown volumes {unknown}; choose from {', '.join(TOTALSEG_FILES)}")

    def gen() -> Volumes:
        for volume in chosen:
            image_file, labels_file, _ = TOTALSEG_FILES[volume]
            image, labels = read_image(root / image_file), read_labels(root / labels_file)
            names = TOTALSEG_MR_NAMES if volume == "mr" else TOTALSEG_CT_NAMES
            yield f"totalseg_{volume}", image, _totalseg_labels(labels, names, volume)

    return gen(), iter(()), ["CT: " + ", ".join(TOTALSEG_CT_HELD_OUT) + " (real-CT check structures)"]


_LOADERS: dict[str, Callable[[SourceConfig], tuple[Volumes, Volumes, list[str]]]] = {
    "kidney_phantom": _kidney_volumes,
    "kidney_roi_phantom": _kidney_roi_volumes,
    "fundus_phantom": _fundus_volumes,
    "hippocampus": _hippocampus_volumes,
    "papila": _papila_volumes,
    "totalsegmentator": _totalseg_volumes,
}


def _source_tasks(src: SourceConfig, labels: Labels, case_name: str) -> list[str]:
    """The tasks of one volume: the configured ones, or (totalsegmentator) every named structure with enough
    voxels, minus the CT's held-out structures."""
    if src.kind in FOLDER_KINDS:  # the folder reader kept exactly the run's structures this case shows
        return [seg.name for seg in labels.segments]
    if src.tasks or src.kind != "totalsegmentator":
        return list(src.tasks) or default_tasks(src)
    held_out = () if case_name.endswith("_mr") else TOTALSEG_CT_HELD_OUT
    counts = {seg.name: int((labels.layers[0] == seg.label_value).sum()) for seg in labels.segments}
    return [name for name, count in counts.items() if name not in held_out and count >= 200]


def _cases_of_volume(src: SourceConfig, name: str, source_name: str, image: Image, labels: Labels,
                     preset: str, size: int) -> list[SliceCase]:
    """One case per view of a volume: the plain slicing, or ``copies`` drawn views (ROI, randomisation)."""
    tasks = _source_tasks(src, labels, name)
    if not tasks:
        return []
    if src.kind == "totalsegmentator" and src.preset is None:
        preset = "mr" if name.endswith("_mr") else "ct-abdomen"
    plain = src.view == "full" and src.randomise == 0 and src.max_slices == 0 and src.copies == 1
    if plain:
        case = volume_to_case(name, source_name, image, labels, tasks, preset, size, src.axis, src.margin_slices)
        return [case] if case is not None else []
    from zlib import crc32

    from .views import draw_view, volume_view

    cases = []
    for copy in range(src.copies):
        rng = np.random.default_rng([src.seed, crc32(name.encode()), copy])
        spec = draw_view(rng, roi=src.view in ("roi", "region"), margin_range=tuple(src.roi_margin),
                         shift=src.roi_shift, randomise=src.randomise, per_region=src.view == "region")
        label = name if src.copies == 1 else f"{name}#{copy}"
        case = volume_view(label, source_name, image, labels, tasks, preset, size, spec, rng, src.axis,
                           src.margin_slices, src.max_slices)
        if case is not None:
            cases.append(case)
    return cases


# ------------------------------------------------------------------------------------ building + cache
def _cache_key(src: SourceConfig, size: int, content: str = "") -> str:
    """Hash of what the cached slices depend on. A dataset root enters by its folder name only: configs
    resolve roots to absolute paths, and a cache copied to another machine (a lent GPU) or a moved checkout
    must still be found. The sampling ``weight`` does not change a single slice, so it is left out: re-weighting
    a source must not rebuild (minutes for hundreds of phantoms) what is already cached. A folder's ``content``
    (its files' names, sizes and times, and the split) enters too: a user's folder changes between runs."""
    source = asdict(src)
    source.pop("weight", None)
    source["train_cases"] = src.n_train  # null and its value give the same slices
    for name, default in {**_FOLDER_ONLY, **_ADDED_LATER}.items():  # settings added later: absent at their
        if source.get(name) == default:         # defaults, so that caches of the built-in kinds keep their keys
            source.pop(name, None)
    for name in ("root", "labels", "split_file"):
        if source.get(name):
            source[name] = Path(source[name]).name
    payload = json.dumps({"source": source, "model_size": size, "version": _CACHE_VERSION,
                          **({"content": content} if content else {})}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _save_cases(path: Path, train: list[SliceCase], val: list[SliceCase], held_out: list[str],
                extra: dict | None = None) -> None:
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for split, cases in (("train", train), ("val", val)):
        for i, case in enumerate(cases):
            key = f"{split}{i}"
            arrays[f"{key}_images"], arrays[f"{key}_masks"], arrays[f"{key}_index"] = (
                case.images, case.masks, case.slice_index)
            meta.append({"key": key, "split": split, "name": case.name, "source": case.source,
                         "tasks": case.tasks, "is_volume": case.is_volume})
    arrays["meta"] = np.frombuffer(json.dumps({"cases": meta, "held_out": held_out, "extra": extra or {}}).encode(),
                                   dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cases(path: Path) -> tuple[list[SliceCase], list[SliceCase], list[str], dict]:
    with np.load(path) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        out: dict[str, list[SliceCase]] = {"train": [], "val": []}
        for m in meta["cases"]:
            out[m["split"]].append(SliceCase(
                name=m["name"], source=m["source"], images=data[f"{m['key']}_images"],
                masks=data[f"{m['key']}_masks"], tasks=m["tasks"], slice_index=data[f"{m['key']}_index"],
                is_volume=m["is_volume"]))
    return out["train"], out["val"], list(meta["held_out"]), dict(meta.get("extra", {}))


def _with_tasks(case: SliceCase, tasks: list[str]) -> SliceCase:
    """The case with masks for exactly ``tasks``: a structure the volume does not show gets an empty mask."""
    if case.tasks == tasks:
        return case
    n, s = case.n, case.size
    masks = np.zeros((n, len(tasks), s, s), dtype=np.uint8)
    for t, task in enumerate(tasks):
        if task in case.tasks:
            masks[:, t] = case.masks[:, case.task_index(task)]
    return SliceCase(name=case.name, source=case.source, images=case.images, masks=masks, tasks=list(tasks),
                     slice_index=case.slice_index, is_volume=case.is_volume)


def build_source(src: SourceConfig, size: int, name: str, cache_dir: str | Path | None = None,
                 progress: Callable[[str], None] | None = None, strict: bool = False,
                 warn: Callable[[str], None] | None = None) -> Source:
    """Turn one configured source into train/val :class:`SliceCase` lists at ``size`` (cached if asked).

    Folders (``volume_folder``, ``image_folder``) report each data problem through ``warn`` (one line) and leave
    the case out, or raise at the first one when ``strict``."""
    tasks = list(src.tasks) or default_tasks(src)
    preset = src.preset or DEFAULT_PRESETS[src.kind]
    folder = report = None
    content = ""
    if src.kind in FOLDER_KINDS:
        from .folder_source import DataReport, FolderSource

        report = DataReport(strict, warn)
        folder = FolderSource(src, report)
        content = f"{folder.scan.fingerprint()}:{json.dumps(folder.record()['patients'], sort_keys=True)}"
    cache_path = Path(cache_dir) / f"{src.kind}_{_cache_key(src, size, content)}.npz" if cache_dir else None
    if cache_path is not None and cache_path.is_file():
        train, val, held_out, extra = _load_cases(cache_path)
        for case in train + val:
            case.source = name
        for line in extra.get("problems", []):  # the lines of reading the cases, said again
            if report is not None:
                report.note(line)
    else:
        train_volumes, val_volumes, held_out = folder.volumes() if folder else _LOADERS[src.kind](src)
        read_from = len(report.lines) if report else 0
        train, val = [], []
        for out, volumes in ((train, train_volumes), (val, val_volumes)):
            for case_name, image, labels in volumes:
                if progress:
                    progress(case_name)
                out.extend(_cases_of_volume(src, case_name, name, image, labels, preset, size))
        if folder is not None:
            folder.finish()
        if cache_path is not None:
            _save_cases(cache_path, train, val, held_out, {"problems": report.lines[read_from:] if report else []})
    if not train:
        raise InputError(f"data source {name} ({src.kind}) produced no training case with "
                         f"{', '.join(tasks) or 'any structure'}")
    if not tasks:  # per-volume tasks (totalsegmentator, folders): the union, in first-seen order
        tasks = list(dict.fromkeys(t for case in train + val for t in case.tasks))
    train, val = [_with_tasks(c, tasks) for c in train], [_with_tasks(c, tasks) for c in val]
    return Source(name=name, kind=src.kind, weight=src.weight, tasks=tasks, train=train, val=val, held_out=held_out,
                  problems=list(report.lines) if report else [], split=folder.record() if folder else None)


def build_sources(sources: list[SourceConfig], size: int, cache_dir: str | Path | None = None,
                  progress: Callable[[str], None] | None = None, strict: bool = False,
                  warn: Callable[[str], None] | None = None) -> list[Source]:
    """Build every configured source; names are the kind, suffixed ``#i`` when a kind repeats."""
    kinds = [s.kind for s in sources]
    built = []
    for i, src in enumerate(sources):
        name = src.kind if kinds.count(src.kind) == 1 else f"{src.kind}#{kinds[:i + 1].count(src.kind)}"
        built.append(build_source(src, size, name, cache_dir, progress, strict, warn))
    return built


def sources_summary(sources: list[Source]) -> dict[str, dict[str, object]]:
    """Which cases went where (recorded in the run folder and the model card)."""
    return {s.name: {"kind": s.kind, "weight": s.weight, "tasks": s.tasks,
                     "train_cases": [c.name for c in s.train], "val_cases": [c.name for c in s.val],
                     "held_out": s.held_out,
                     "train_slices": int(sum(c.n for c in s.train)),
                     **({"problems": s.problems} if s.problems else {})} for s in sources}
