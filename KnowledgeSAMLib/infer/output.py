"""From per-structure probabilities to a :class:`Labels` in exactly the target geometry, and to files.

Post-processing follows KSAM_SPEC §5.12C: optional 1-2-1 smoothing across slices, threshold, optional
largest 3D connected component, then overlaps: structures that share a layer in the reference are
mutually exclusive there (a labelmap cannot say otherwise), so their overlaps go to the most probable
one; structures on different reference layers (nested, e.g. disc ⊃ cup) may overlap and are written
on separate layers. Label values, names, colours and terminology come from the reference segments.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .._files import file_sha256
from ..data.volume import Geometry, Image, Labels, Segment
from .request import EngineOptions, SegmentationResult
from .slicing import AxisView

__all__ = ["postprocess", "assemble_labels", "labels_from_probabilities", "sidecar_path", "write_result",
           "provenance_json", "file_sha256", "SIDECAR_SUFFIX"]


def _smooth_across_slices(prob: np.ndarray, view: AxisView) -> np.ndarray:
    """1-2-1 smoothing along the slice axis, one slice at a time (uint8 in, uint8 out)."""
    source = np.moveaxis(prob, view.slice_axis, 0)
    out = np.empty_like(prob)
    target = np.moveaxis(out, view.slice_axis, 0)
    n = source.shape[0]
    for k in range(n):
        below, above = source[max(k - 1, 0)], source[min(k + 1, n - 1)]
        total = below.astype(np.uint16) + 2 * source[k].astype(np.uint16) + above
        target[k] = (total + 2) // 4
    return out


def postprocess(probabilities: dict[str, np.ndarray], segments: Sequence[Segment], view: AxisView,
                options: EngineOptions) -> dict[str, np.ndarray]:
    """uint8 probabilities per structure → boolean masks (smoothing, threshold, component, overlaps)."""
    from .modes import largest_component

    threshold = options.byte_threshold
    if options.smooth_z and view.n > 1:
        probabilities = {name: _smooth_across_slices(p, view) for name, p in probabilities.items()}
    masks = {}
    for seg in segments:
        mask = probabilities[seg.name] > threshold
        masks[seg.name] = largest_component(mask) if options.largest_component else mask
    for group in _exclusive_groups(segments, options.overlap):
        if len(group) < 2:
            continue
        names = [seg.name for seg in group]
        if options.contested == "smaller":  # fixed precedence: the structure with fewer voxels first
            sizes = [int(masks[n].sum()) for n in names]
            rank = np.argsort(np.argsort(sizes, kind="stable"), kind="stable")  # 0 = smallest
        for z in range(next(iter(masks.values())).shape[0]):  # one z-plane at a time: bounded memory
            stacked = np.stack([masks[n][z] for n in names])
            contested = stacked.sum(axis=0) > 1
            if not contested.any():
                continue
            if options.contested == "smaller":
                claim = np.where(stacked, rank[:, None, None], len(names))
                winner = np.argmin(claim, axis=0)
            else:
                winner = np.argmax(np.stack([probabilities[n][z] for n in names]), axis=0)
            for i, name in enumerate(names):
                masks[name][z] &= ~contested | (winner == i)
    return masks


def _exclusive_groups(segments: Sequence[Segment], overlap: str) -> list[list[Segment]]:
    if overlap == "layers":
        return [[seg] for seg in segments]
    if overlap == "argmax":
        return [list(segments)]
    by_layer: dict[int, list[Segment]] = {}
    for seg in segments:
        by_layer.setdefault(seg.layer, []).append(seg)
    return list(by_layer.values())


def assemble_labels(masks: dict[str, np.ndarray], segments: Sequence[Segment], geometry: Geometry,
                    shape: tuple[int, int, int]) -> Labels:
    """Put each structure on the first layer where neither its label value nor its voxels clash."""
    top = max((seg.label_value for seg in segments), default=1)
    dtype = np.uint8 if top <= 255 else (np.uint16 if top <= 65535 else np.int32)
    layers: list[np.ndarray] = []
    values: list[set[int]] = []
    out_segments: list[Segment] = []
    for seg in segments:
        mask = masks[seg.name]
        for index, layer in enumerate(layers):
            if seg.label_value not in values[index] and not layer[mask].any():
                break
        else:
            layers.append(np.zeros(shape, dtype=dtype))
            values.append(set())
            index = len(layers) - 1
        layers[index][mask] = seg.label_value
        values[index].add(seg.label_value)
        out_segments.append(Segment(name=seg.name, label_value=seg.label_value, layer=index, color=seg.color,
                                    terminology=seg.terminology, id=seg.id))
    stacked = np.stack(layers) if layers else np.zeros((1,) + tuple(shape), dtype=dtype)
    return Labels(layers=stacked, geometry=geometry, segments=out_segments)


def labels_from_probabilities(probabilities: dict[str, np.ndarray], segments: Sequence[Segment], view: AxisView,
                              options: EngineOptions, target: Image) -> Labels:
    """Post-process the probability maps and assemble the labels on ``target``'s grid."""
    masks = postprocess(probabilities, segments, view, options)
    return assemble_labels(masks, segments, target.geometry, target.shape)


# ------------------------------------------------------------------------------------------ files

SIDECAR_SUFFIX = ".ksam.json"


def sidecar_path(output: str | Path) -> Path:
    """``result.seg.nrrd`` → ``result.seg.nrrd.ksam.json``: the provenance of exactly that file.

    The whole file name is kept, so ``result.nii.gz`` and ``result.seg.nrrd`` in one folder never share
    (and never replace) each other's sidecar."""
    output = Path(output)
    return output.with_name(output.name + SIDECAR_SUFFIX)


def _home_prefix() -> str | None:
    home = os.path.expanduser("~")
    return home.rstrip(os.sep) if home not in ("~", os.sep, "") else None


def _without_home(text: str, home: str | None) -> str:
    """A path under the user's home folder as ``~/...``: a shared result file does not name its author."""
    if home and (text == home or text.startswith(home + os.sep)):
        return "~" + text[len(home):]
    return text


def _jsonable(value: Any, home: str | None = None) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v, home) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, home) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), home)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else round(float(value), 6)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (str, Path)):
        return _without_home(str(value), home)
    return value


def provenance_json(result: SegmentationResult, output: dict[str, str] | None = None) -> str:
    """The sidecar's text: the provenance, the per-slice confidence and (``output``) the labels file it
    belongs to, by name and SHA256, so labels and sidecar of different runs can never pass as a pair."""
    record = dict(result.provenance)
    record["confidence"] = {name: values for name, values in result.confidence.items()}
    if output is not None:
        record["output"] = dict(output)
    return json.dumps(_jsonable(record, _home_prefix()), indent=2) + "\n"


def earlier_confidence(labels_path: str | Path, axis: str) -> dict[str, np.ndarray] | None:
    """The per-slice confidence in the sidecar of an earlier result (``labels_path``'s ``.ksam.json``), when it was
    a run along ``axis``; None without a readable one. Why: an update from the command line recomputes one slab,
    and the suggestion where to look next needs the confidence of the rest. The labels themselves may have been
    corrected since (their hash then differs): the confidence of slices outside the slab is still the earlier
    run's."""
    try:
        record = json.loads(sidecar_path(labels_path).read_text(encoding="utf-8"))
        if record.get("axis") != axis or not isinstance(record.get("confidence"), dict):
            return None
        return {str(name): np.array([np.nan if v is None else float(v) for v in values], dtype=np.float32)
                for name, values in record["confidence"].items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def write_result(result: SegmentationResult, path: str | Path, overwrite: bool = False,
                 sidecar: bool = True, on_commit: Callable[[], None] | None = None) -> list[Path]:
    """Write the labels (format by extension) and the provenance sidecar as one unit.

    Both are written to temporaries, then renamed together (:mod:`KnowledgeSAMLib.data.commit`): a failure,
    Ctrl+C or kill leaves either the old pair or the new pair, never one of each. Existing files are refused
    unless ``overwrite``; the labels' format is checked before anything is written. ``on_commit`` is called
    the moment both are in place (see :func:`~KnowledgeSAMLib.data.commit.commit_renames`)."""
    from ..data.commit import staged_files
    from ..data.io import labels_writer

    path = Path(path)
    destinations = [path] + ([sidecar_path(path)] if sidecar else [])
    writer = labels_writer(result.labels, path)
    with staged_files(destinations, overwrite, on_commit) as temporaries:
        writer(temporaries[0])
        if sidecar:
            output = {"file": path.name, "sha256": file_sha256(temporaries[0])}
            temporaries[1].write_text(provenance_json(result, output), encoding="utf-8")
    return destinations
