"""Target files in, result files out: the path rules every file-based front-end shares.

The CLI (``knowledgesam segment``) and Slicer's batch script take the same ``--target`` and ``--output``
words and must agree on what they mean; both call :func:`expand_targets` and :func:`plan_outputs`, which
check everything before any image is read, so a batch never stops half-way on a name clash or an
existing file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ..errors import InputError
from .output import sidecar_path

__all__ = ["IMAGE_SUFFIXES", "LABEL_SUFFIXES", "NAME_FIELD", "expand_targets", "target_name", "plan_outputs"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".png")  # what write_labels writes
NAME_FIELD = "{name}"  # in an output path: each target's name, e.g. results/{name}-ksam.seg.nrrd
_NAME_SUFFIXES = (".seg.nrrd", ".nhdr") + IMAGE_SUFFIXES


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes))


def _is_dicom_folder(folder: Path) -> bool:
    return not any(_has_suffix(p, IMAGE_SUFFIXES) for p in folder.iterdir() if p.is_file())


def expand_targets(items: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder of images → its images (sorted); a DICOM folder → itself; a .txt → its lines."""
    targets: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_file() and path.suffix.lower() == ".txt":
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            targets.extend(Path(line).expanduser() if Path(line).is_absolute() else path.parent / line
                           for line in lines if line and not line.startswith("#"))
        elif path.is_dir() and not _is_dicom_folder(path):
            found = sorted(p for p in path.iterdir() if p.is_file() and _has_suffix(p, IMAGE_SUFFIXES)
                           and not p.name.lower().endswith(".seg.nrrd"))
            if not found:
                raise InputError(f"{path}: folder contains no images")
            targets.extend(found)
        else:
            targets.append(path)
    for target in targets:
        if not target.exists():
            raise InputError(f"{target}: target image not found")
    if not targets:
        raise InputError("no target images given")
    return targets


def target_name(path: str | os.PathLike) -> str:
    """The file name without its (possibly double) image ending: ``case1.nii.gz`` → ``case1``."""
    name = Path(path).name
    for suffix in _NAME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def plan_outputs(targets: Sequence[Path], output: str | os.PathLike, fmt: str = "seg.nrrd", *,
                 writable: Sequence[str] = LABEL_SUFFIXES, overwrite: bool = False,
                 sidecars: bool = False) -> list[Path]:
    """One output file per target, all checked before any work starts.

    ``output`` is a pattern with ``{name}`` (each target's name), a file name (one target), or else a
    folder (``<folder>/<name>.<fmt>``). Refused with an InputError: a file name for several targets, two
    targets written to one file, an ending not in ``writable``, an existing file (or, with ``sidecars``,
    its ``.ksam.json``) unless ``overwrite``.
    """
    out = Path(output).expanduser()
    if NAME_FIELD in str(output):
        paths = [Path(str(out).replace(NAME_FIELD, target_name(t))) for t in targets]
    elif _has_suffix(out, LABEL_SUFFIXES) and not out.is_dir():
        if len(targets) != 1:
            raise InputError(f"{out}: several targets need an output folder, not a file name")
        paths = [out]
    else:
        paths = [out / f"{target_name(t)}.{fmt}" for t in targets]
    seen: dict[str, Path] = {}
    for target, path in zip(targets, paths):
        if not _has_suffix(path, writable):
            raise InputError(f"{path}: cannot write this file type; use {' or '.join(writable)}")
        key = os.path.abspath(path)
        if key in seen:
            raise InputError(f"{target} and {seen[key]} would both be written to {path}; rename one of them")
        seen[key] = target
    if not overwrite:
        for path in paths:
            for candidate in (path, sidecar_path(path)) if sidecars else (path,):
                if candidate.exists():
                    raise InputError(f"{candidate}: file exists; not overwriting it (use --overwrite)")
    return paths
