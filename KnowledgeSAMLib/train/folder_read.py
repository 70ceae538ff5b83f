"""Reading one paired case of a user's folder into an :class:`Image` and :class:`Labels` named by structure.

Why a reader of its own: files come from many tools, and a training run over hundreds of them must say *which*
file is wrong and *why*, in one line, instead of stopping deep in a resampler. Every check here raises a
:class:`CaseProblem` naming the case; small oddities that do not stop the case (label values the table does
not name, labels partly outside the image) come back as notes. Reading itself is the data layer's
(``data/io.py``: NIfTI, NRRD, MHA, DICOM, PNG/JPG/BMP, ``.seg.nrrd``).

The labels returned hold exactly the structures this case shows (non-empty), named as the run names them:
a ``.seg.nrrd`` names its segments; a plain label map takes its names from the label table (a structure may
have several values, e.g. REFUGE's disc = cup + rim); per-structure masks are named by their folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.volume import Image, Labels, Segment
from ..errors import InputError
from .folder_scan import FolderCase, LabelTable

__all__ = ["CaseProblem", "ReadCase", "read_folder_case", "StructureNames"]

CROPPED_WARNING = 0.05  # note a case when more than this fraction of its labelled volume is outside the image


class CaseProblem(InputError):
    """A case that cannot be used (the message names it and says why)."""


@dataclass
class ReadCase:
    image: Image
    labels: Labels  # one segment per structure present, each on its own layer or value
    notes: list[str] = field(default_factory=list)


class StructureNames:
    """The run's spelling of each structure: configured tasks (matched case-insensitively, or by label value
    for unnamed labels), else the first spelling seen."""

    def __init__(self, tasks: list[str]) -> None:
        self.tasks = list(tasks)
        self._seen: dict[str, str] = {t.lower(): t for t in tasks}

    def resolve(self, name: str, value: int | None) -> str | None:
        """The run's name for a segment, or None when the run does not train on it."""
        if self.tasks:
            hit = self._seen.get(name.lower())
            if hit is None and value is not None:
                hit = self._seen.get(str(value))
            return hit
        return self._seen.setdefault(name.lower(), name)


def _read_image(path) -> Image:
    from ..data.io import read_image

    return read_image(path)


def _read_mask(path) -> Labels:
    """A binary mask file as Labels (non-zero = inside); a JPEG mask is thresholded at half its range."""
    from ..data.io import file_extension, read_labels

    if file_extension(path) in (".jpg", ".jpeg"):
        image = _read_image(path)
        array = image.array if image.array.ndim == 3 else image.array.mean(-1)
        return Labels((array > array.max() / 2).astype(np.uint8), image.geometry, source=str(path))
    return read_labels(path)


def _named_segments(labels: Labels, table: LabelTable | None, names: StructureNames,
                    notes: list[str], case: str) -> tuple[list[np.ndarray], list[str]]:
    """``(masks, names)`` of the structures this label file holds, as the run names them."""
    from ..evaluation.matching import has_real_names

    masks, found = [], []
    if table is not None and not has_real_names(labels):
        layer = labels.layers[0]
        for name, values in table.structures.items():
            run_name = names.resolve(name, values[0] if len(values) == 1 else None)
            if run_name is not None:
                masks.append(np.isin(layer, values))
                found.append(run_name)
        known = table.values | ({0} if 0 not in table.values and not table.background else set())
        stray = sorted(set(int(v) for v in np.unique(layer)) - known)
        if stray:
            notes.append(f"{case}: label values {', '.join(map(str, stray))} are not in the label table (ignored)")
        return masks, found
    for seg in labels.segments:
        run_name = names.resolve(seg.name, seg.label_value)
        if run_name is not None and run_name not in found:
            masks.append(labels.mask(seg))
            found.append(run_name)
    return masks, found


def _on_image_grid(labels: Labels, image: Image, case: str, notes: list[str]) -> Labels:
    """The labels on the image's grid: identical, or resampled (3D, nearest neighbour, as Slicer shows them)."""
    image_2d = image.geometry.ndim == 2 or image.shape[0] == 1
    labels_2d = labels.geometry.ndim == 2 or labels.shape[0] == 1
    if image_2d != labels_2d:
        raise CaseProblem(f"{case}: mixed dimensions: {'2D' if labels_2d else '3D'} labels "
                          f"{'x'.join(map(str, labels.shape))} for a {'2D' if image_2d else '3D'} image "
                          f"{'x'.join(map(str, image.shape))} (left out)")
    if labels.shape == image.shape and (image_2d or labels.geometry.same_grid(image.geometry)):
        return Labels(labels.layers, image.geometry, labels.segments, labels.source)
    if image_2d:
        raise CaseProblem(f"{case}: labels {labels.shape[1]}x{labels.shape[2]} do not cover the image "
                          f"{image.shape[1]}x{image.shape[2]} pixel for pixel (left out)")
    from ..data.io import resample_labels_to

    try:
        moved = resample_labels_to(labels, image.geometry, image.shape)
    except InputError:
        raise CaseProblem(f"{case}: the labels lie outside the image (no overlap in patient space; left out)") from None
    before = float((labels.layers > 0).sum()) * float(np.prod(labels.geometry.spacing))
    after = float((moved.layers > 0).sum()) * float(np.prod(image.geometry.spacing))
    if before > 0 and after < (1 - CROPPED_WARNING) * before:
        notes.append(f"{case}: {1 - after / before:.0%} of the labelled volume lies outside the image (cropped)")
    return moved


def read_folder_case(case: FolderCase, table: LabelTable | None, names: StructureNames,
                     want_volume: bool) -> ReadCase:
    """Read and check one case; raises :class:`CaseProblem` for a case that cannot be used."""
    from ..data.io import read_labels

    notes: list[str] = []
    try:
        image = _read_image(case.image)
    except InputError as error:
        raise CaseProblem(f"{error} (left out)") from None
    is_volume = image.geometry.ndim != 2 and image.shape[0] > 1
    if is_volume != want_volume:
        kind = "a volume folder" if want_volume else "an image folder"
        raise CaseProblem(f"{case.name}: mixed dimensions: a {'3D' if is_volume else '2D'} image "
                          f"{'x'.join(map(str, image.shape))} in {kind} (left out)")
    masks: list[np.ndarray] = []
    found: list[str] = []
    try:
        if case.labels is not None:
            labels = _on_image_grid(read_labels(case.labels), image, case.name, notes)
            masks, found = _named_segments(labels, table, names, notes, case.name)
        for structure, path in case.masks.items():
            run_name = names.resolve(structure, None)
            if run_name is not None and run_name not in found:
                mask = _on_image_grid(_read_mask(path), image, case.name, notes)
                masks.append(mask.layers.max(0) > 0)
                found.append(run_name)
    except CaseProblem:
        raise
    except InputError as error:
        raise CaseProblem(f"{error} (left out)") from None
    kept = [(m, n) for m, n in zip(masks, found) if m.any()]
    if not kept and names.tasks and not found:
        raise CaseProblem(f"{case.name}: the labels hold none of {', '.join(names.tasks)} (left out)")
    if not kept:
        raise CaseProblem(f"{case.name}: empty labels: no labelled voxel of "
                          f"{', '.join(found) or 'any structure'} (left out)")
    layers = np.stack([m for m, _ in kept]).astype(np.uint8)
    segments = [Segment(name=n, label_value=1, layer=i) for i, (_, n) in enumerate(kept)]
    return ReadCase(image=image, labels=Labels(layers, image.geometry, segments, str(case.labels or case.image)),
                    notes=notes)
