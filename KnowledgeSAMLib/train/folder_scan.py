"""Finding a user's labelled cases in a folder: which image goes with which label file, by file name.

Why pairing by name and not by a manifest: people arrive with folders, not manifests — a Slicer user's scene
saved per case, an nnU-Net ``imagesTr``/``labelsTr`` pair, a REFUGE-like ``images``/``masks`` split. The
rules (docs/training.md, "Your own data"):

* a file is a **label** file when it is a ``.seg.nrrd``, when its name ends in a label word (``_label(s)``,
  ``_seg``, ``_segmentation``, ``_mask(s)``, ``-label``, ...) or when it lies under a label folder (``labels``,
  ``labelsTr``, ``masks``, ``segmentations``, ``annotations``, ``gt``); everything else it can read is an
  **image** (a folder of DICOM files is one image);
* the **key** of a file is its name without extension and without the label or image word (``_image``,
  ``_img``, ``_0000``, ...); the **context** is its folder below the root with the image/label folders left
  out. An image and a label with the same context and key are a case; a label one folder deeper is the mask of
  one structure, named by that folder (``masks/disc/g0001.png``, ``masks/cup/g0001.png``);
* a context left with exactly one image and one label file (``case01/CT.nrrd`` + ``case01/Segmentation.seg.nrrd``,
  as Slicer saves a scene) pairs them; whatever is still alone is named as unpaired.

Nothing is read here but file names (and the first bytes of extension-less files, to spot DICOM).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

__all__ = ["FolderCase", "FolderScan", "scan_folder", "read_label_table", "find_label_table", "LabelTable",
           "LABEL_TABLE_NAMES"]

IMAGE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_EXTENSIONS = IMAGE_EXTENSIONS + (".seg.nrrd",)
TWO_D_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_EXTENSIONS = (".dcm", ".ima")
IMAGE_FOLDERS = {"images", "image", "imagestr", "img", "imgs", "volumes", "scans"}
LABEL_FOLDERS = {"labels", "label", "labelstr", "masks", "mask", "segmentations", "segmentation", "annotations",
                 "annotation", "gt", "groundtruth", "ground_truth"}
LABEL_WORDS = ("_labels", "_label", "_labelmap", "_segmentation", "_seg", "_masks", "_mask", "_gt", "-labels",
               "-label", "-segmentation", "-seg", ".label")
IMAGE_WORDS = ("_image", "_img", "_volume", "_vol", "_0000", "-image")
LABEL_TABLE_NAMES = ("labels.json", "labels.yaml", "labels.yml", "dataset.json")


@dataclass
class FolderCase:
    """One image and its labels: a label file, or one mask file per structure (``masks``)."""

    name: str
    patient: str
    image: Path
    labels: Path | None = None
    masks: dict[str, Path] = field(default_factory=dict)

    def files(self) -> list[Path]:
        return [self.image] + ([self.labels] if self.labels else []) + list(self.masks.values())

    def record(self, root: Path) -> dict[str, object]:
        """JSON-able description with paths relative to the folder (written to split.json)."""
        def rel(p: Path) -> str:
            return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)

        out: dict[str, object] = {"name": self.name, "patient": self.patient, "image": rel(self.image)}
        if self.labels:
            out["labels"] = rel(self.labels)
        if self.masks:
            out["masks"] = {k: rel(v) for k, v in self.masks.items()}
        return out


@dataclass
class FolderScan:
    root: Path
    cases: list[FolderCase]
    problems: list[str]  # one line per unpaired or ambiguous file
    ignored: int = 0  # files of other types (notes, spreadsheets, ...)

    def fingerprint(self) -> str:
        """Changes when a paired file is added, removed, renamed or rewritten (cache keys use it)."""
        digest = hashlib.sha256()
        for case in self.cases:
            for path in case.files():
                entries = sorted(path.iterdir()) if path.is_dir() else [path]
                for item in entries:
                    stat = item.stat()
                    digest.update(f"{item.relative_to(self.root)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()[:16]

    def is_2d(self) -> bool:
        """True when most images are 2D picture files (PNG/JPG/BMP/TIFF)."""
        flat = [c for c in self.cases if _extension(c.image) in TWO_D_EXTENSIONS]
        return bool(self.cases) and len(flat) * 2 > len(self.cases)


def _extension(path: Path) -> str:
    from ..data.io import file_extension

    return "" if path.is_dir() else file_extension(path)


def _is_dicom_file(path: Path) -> bool:
    if _extension(path) in DICOM_EXTENSIONS:
        return True
    if path.suffix:
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _strip(stem: str, words: tuple[str, ...]) -> str:
    lower = stem.lower()
    for word in words:
        if lower.endswith(word) and len(stem) > len(word):
            return stem[: -len(word)]
    return stem


@dataclass
class _Item:
    path: Path
    is_label: bool
    context: tuple[str, ...]
    key: str
    structure: str | None = None  # a per-structure mask: the structure its folder names


def _item(root: Path, path: Path) -> _Item:
    relative = path.relative_to(root) if path != root else Path(root.name)
    folders = list(relative.parts[:-1])
    ext = _extension(path)
    name = relative.parts[-1]
    stem = name[: len(name) - len(ext)] if ext else name
    if path.is_dir():  # a DICOM series: always an image
        return _Item(path, False, tuple(f for f in folders if f.lower() not in IMAGE_FOLDERS | LABEL_FOLDERS),
                     _strip(stem, IMAGE_WORDS).lower())
    in_label_folder = any(f.lower() in LABEL_FOLDERS for f in folders)
    label_word = _strip(stem, LABEL_WORDS) != stem
    is_label = ext == ".seg.nrrd" or label_word or in_label_folder
    key = _strip(stem, LABEL_WORDS) if is_label else _strip(stem, IMAGE_WORDS)
    context = tuple(f for f in folders if f.lower() not in IMAGE_FOLDERS | LABEL_FOLDERS)
    return _Item(path, is_label, context, key.lower())


def _walk(root: Path) -> tuple[list[_Item], int]:
    """Every readable file (and DICOM folder) below ``root`` as an item; the count of files ignored."""
    items: list[_Item] = []
    ignored = 0
    for folder in sorted([root] + [p for p in root.rglob("*") if p.is_dir()]):
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        dicom = [p for p in files if _is_dicom_file(p)]
        if dicom:
            items.append(_item(root, folder))
        for path in files:
            if path in dicom:
                continue
            if _extension(path) not in LABEL_EXTENSIONS:
                ignored += path.name not in LABEL_TABLE_NAMES
                continue
            items.append(_item(root, path))
    return items, ignored


def _case_name(context: tuple[str, ...], key: str, single: bool, image: Path) -> str:
    if context and single:
        return "/".join(context)
    ext = _extension(image)
    stem = image.name[: len(image.name) - len(ext)] if ext else image.name
    return "/".join(context + (_strip(stem, IMAGE_WORDS),))


def scan_folder(root: str | Path) -> FolderScan:
    """Pair the images and label files below ``root`` (see the module docstring for the rules)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data folder not found")
    items, ignored = _walk(root)
    images = [i for i in items if not i.is_label]
    labels = [i for i in items if i.is_label]
    problems: list[str] = []
    by_key: dict[tuple[tuple[str, ...], str], list[_Item]] = {}
    for image in images:
        by_key.setdefault((image.context, image.key), []).append(image)
    for key, found in by_key.items():
        if len(found) > 1:
            problems.append(f"{', '.join(str(i.path) for i in found)}: several images with the same name "
                            f"(left out: rename all but one)")
    unique = {k: v[0] for k, v in by_key.items() if len(v) == 1}
    paired: dict[tuple[tuple[str, ...], str], dict] = {}
    spare_labels: list[_Item] = []
    for label in labels:
        whole = unique.get((label.context, label.key))
        part = unique.get((label.context[:-1], label.key)) if label.context else None
        if whole is not None:
            slot = paired.setdefault((whole.context, whole.key), {"image": whole, "labels": [], "masks": {}})
            slot["labels"].append(label)
        elif part is not None and any(f.lower() in LABEL_FOLDERS for f in label.path.relative_to(root).parts[:-1]):
            slot = paired.setdefault((part.context, part.key), {"image": part, "labels": [], "masks": {}})
            slot["masks"][label.context[-1]] = label
        elif (label.context, label.key) in by_key:
            continue  # its image was ambiguous: already named
        else:
            spare_labels.append(label)
    spare_images = [i for k, i in unique.items() if k not in paired]
    _pair_leftovers(spare_images, spare_labels, paired)
    cases: list[FolderCase] = []
    contexts = [k[0] for k in paired]
    for (context, key), slot in sorted(paired.items()):
        image = slot["image"]
        if len(slot["labels"]) > 1:
            problems.append(f"{image.path}: several label files ({', '.join(l.path.name for l in slot['labels'])}); "
                            f"left out: keep one")
            continue
        if slot["labels"] and slot["masks"]:
            slot["masks"] = {}  # a label file wins over per-structure masks of the same name
        name = _case_name(context, key, contexts.count(context) == 1, image.path)
        cases.append(FolderCase(name=name, patient=context[0] if context else name, image=image.path,
                                labels=slot["labels"][0].path if slot["labels"] else None,
                                masks={k: v.path for k, v in sorted(slot["masks"].items())}))
    for image in spare_images:
        problems.append(f"{image.path}: no label file pairs with this image (left out)")
    for label in spare_labels:
        problems.append(f"{label.path}: no image pairs with this label file (left out)")
    return FolderScan(root=root, cases=cases, problems=problems, ignored=ignored)


def _pair_leftovers(images: list[_Item], labels: list[_Item], paired: dict) -> None:
    """A folder holding one image and one label file and nothing paired by name (a case saved from Slicer:
    ``CT.nrrd`` + ``Segmentation.seg.nrrd``): they belong together."""
    for context in sorted({i.context for i in images}):
        if any(key[0] == context for key in paired):
            continue
        mine = [i for i in images if i.context == context]
        theirs = [l for l in labels if l.context == context]
        if len(mine) == 1 and len(theirs) == 1:
            paired[(context, mine[0].key)] = {"image": mine[0], "labels": [theirs[0]], "masks": {}}
            images.remove(mine[0])
            labels.remove(theirs[0])


# ------------------------------------------------------------------------------------------ label tables
def find_label_table(root: Path, given: str | None) -> Path | None:
    """The configured table, else the first of LABEL_TABLE_NAMES in the folder."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise InputError(f"{path}: label table not found")
        return path
    for name in LABEL_TABLE_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def _values(value: object, where: str) -> list[int]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)) or not str(item).strip().isdigit():
            raise InputError(f"{where}: label values must be whole numbers >= 0, got {item!r}")
        out.append(int(item))
    return out


@dataclass
class LabelTable:
    """Structure names of plain label maps: ``structures`` = ``{name: [values]}``; ``background`` = values named
    background (never a structure, never reported as unknown)."""

    structures: dict[str, list[int]]
    background: list[int] = field(default_factory=list)
    source: str = ""

    @property
    def values(self) -> set[int]:
        return {v for values in self.structures.values() for v in values} | set(self.background)


def read_label_table(path: Path) -> LabelTable:
    """``{value: name}`` or ``{name: value(s)}`` (JSON/YAML, optionally under a top-level ``labels`` key as in
    nnU-Net's dataset.json)."""
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # noqa: BLE001 - json and yaml raise their own types
        raise InputError(f"{path}: not a readable label table ({str(error).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("labels"), dict):
        data = data["labels"]
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: a label table maps label values to names, e.g. {{1: liver, 2: spleen}}")
    by_value = all(isinstance(k, int) or str(k).strip().isdigit() for k in data)
    table = LabelTable({}, [], str(path))
    for key, value in data.items():
        name, values = (str(value), _values(key, str(path))) if by_value else (str(key), _values(value, str(path)))
        if name.strip().lower() == "background":
            table.background.extend(values)
        else:
            table.structures.setdefault(name.strip(), []).extend(values)
    if not table.structures:
        raise InputError(f"{path}: the label table names no structure besides the background")
    return table
