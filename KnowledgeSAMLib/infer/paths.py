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

from ..data.commit import is_hidden
from ..errors import InputError
from .output import sidecar_path

__all__ = ["IMAGE_SUFFIXES", "LABEL_SUFFIXES", "NAME_FIELD", "expand_targets", "target_name", "plan_outputs",
           "check_writable", "refuse_existing_outputs"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha", ".png")  # what write_labels writes
NAME_FIELD = "{name}"  # in an output path: each target's name, e.g. results/{name}-ksam.seg.nrrd
_NAME_SUFFIXES = (".seg.nrrd", ".nhdr") + IMAGE_SUFFIXES


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    return path.name.lower().endswith(tuple(suffixes))


def _is_dicom_folder(folder: Path) -> bool:
    return not any(_has_suffix(p, IMAGE_SUFFIXES) for p in folder.iterdir() if p.is_file() and not is_hidden(p))


def expand_targets(items: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder of images → its images (sorted; hidden files such as an interrupted write's
    ``.x.seg.nrrd.<hex>.partial.nrrd`` are not images); a DICOM folder → itself; a .txt → its lines."""
    targets: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_file() and path.suffix.lower() == ".txt":
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            targets.extend(Path(line).expanduser() if Path(line).is_absolute() else path.parent / line
                           for line in lines if line and not line.startswith("#"))
        elif path.is_dir() and not _is_dicom_folder(path):
            found = sorted(p for p in path.iterdir() if p.is_file() and _has_suffix(p, IMAGE_SUFFIXES)
                           and not p.name.lower().endswith(".seg.nrrd") and not is_hidden(p))
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


def _asks_for_folder(output: str | os.PathLike) -> bool:
    """``results/`` (a trailing separator) always means a folder, whatever its name looks like."""
    text = os.fspath(output)
    return text.endswith(("/", os.sep))


def _output_files(targets: Sequence[Path], output: str | os.PathLike, fmt: str,
                  writable: Sequence[str]) -> list[Path]:
    """Where each target's result goes: a ``{name}`` pattern, one file, or files in a folder."""
    out = Path(output).expanduser()
    if NAME_FIELD in os.fspath(output):
        return [Path(str(out).replace(NAME_FIELD, target_name(t))) for t in targets]
    folder = _asks_for_folder(output) or (out.is_dir() and not _has_suffix(out, LABEL_SUFFIXES))
    if not folder and _has_suffix(out, LABEL_SUFFIXES):
        if out.is_dir():
            raise InputError(f"{out}: is an existing folder, not a file; to write into it, end the path with "
                             f"'{os.sep}' ({out}{os.sep})")
        if len(targets) != 1:
            raise InputError(f"{out}: several targets need an output folder, not a file name")
        return [out]
    if not folder and out.suffix and not out.exists():
        raise InputError(f"{out}: '{out.suffix}' is not an output file type; use {' or '.join(writable)}, or end "
                         f"a folder's name with '{os.sep}' ({out}{os.sep})")
    return [out / f"{target_name(t)}.{fmt}" for t in targets]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _refuse_inputs(paths: Sequence[Path], inputs: Sequence[str | os.PathLike], sidecars: bool) -> None:
    """No output (or its sidecar) may be an input: same resolved path, or the same file by inode (links)."""
    known = [(Path(i).expanduser(), os.path.realpath(Path(i).expanduser()), _identity(Path(i).expanduser()))
             for i in inputs]
    for path in paths:
        for candidate in (path, sidecar_path(path)) if sidecars else (path,):
            real, identity = os.path.realpath(candidate), _identity(candidate)
            for given, given_real, given_identity in known:
                if real == given_real or (identity is not None and identity == given_identity):
                    raise InputError(f"{candidate}: is the input {given}; writing there would destroy it "
                                     "(choose another --output)")


def nearest_existing(folder: Path) -> Path:
    """``folder`` or its nearest ancestor that exists (where a new output folder would be created)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(path: Path) -> None:
    """The output's folder exists and is writable, or can be created (InputError otherwise)."""
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file name")
    existing = nearest_existing(path.parent.absolute())
    if not existing.is_dir():
        raise InputError(f"{path}: cannot create the folder {path.parent}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write in {existing} (permission denied)")


def plan_outputs(targets: Sequence[Path], output: str | os.PathLike, fmt: str = "seg.nrrd", *,
                 writable: Sequence[str] = LABEL_SUFFIXES, overwrite: bool = False,
                 sidecars: bool = False, inputs: Sequence[str | os.PathLike] = (),
                 refuse_existing: bool = True) -> list[Path]:
    """One output file per target, all checked before any work starts.

    ``output`` is a pattern with ``{name}`` (each target's name), a file name with a known ending (one
    target), or a folder (``<folder>/<name>.<fmt>``): an existing folder, a name without an ending, or any
    name ending in ``/``. Refused with an InputError: a file name for several targets, an unknown ending
    (``result.foo``), an existing folder named like a file (``x.seg.nrrd``), two targets written to one file,
    an ending not in ``writable``, an output (or its sidecar) that is one of the ``inputs`` (targets are
    always inputs), a folder that cannot be written, an existing file (or, with ``sidecars``, its
    ``.ksam.json``) unless ``overwrite``. ``refuse_existing=False`` leaves that last check to
    :class:`~.claims.OutputClaims`, which first completes an interrupted write of the output under its lock.
    """
    paths = _output_files(targets, output, fmt, writable)
    seen: dict[str, Path] = {}
    for target, path in zip(targets, paths):
        if not _has_suffix(path, writable):
            raise InputError(f"{path}: cannot write this file type; use {' or '.join(writable)}")
        key = os.path.abspath(path)
        if key in seen:
            raise InputError(f"{target} and {seen[key]} would both be written to {path}; rename one of them")
        seen[key] = target
    _refuse_inputs(paths, list(targets) + list(inputs), sidecars)
    for path in paths:
        check_writable(path)
    if refuse_existing and not overwrite:
        refuse_existing_outputs(paths, sidecars)
    return paths


def refuse_existing_outputs(paths: Sequence[Path], sidecars: bool) -> None:
    """InputError for the first output (or, with ``sidecars``, its ``.ksam.json``) that exists."""
    for path in paths:
        for candidate in (path, sidecar_path(path)) if sidecars else (path,):
            if candidate.exists():
                raise InputError(f"{candidate}: file exists; not overwriting it (use --overwrite)")
