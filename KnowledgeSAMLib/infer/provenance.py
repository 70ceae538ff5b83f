"""What a result records about how it was made: assembled here, and only here.

Two parts, two callers. The engine knows what ran (:func:`engine_record`: model, mode, slices, device,
counts, timings); the front-end knows what the inputs are called (a file path, a node name) and what the
user asked for, which :class:`~KnowledgeSAMLib.infer.segmenter.Segmenter` adds for every front-end with
:func:`with_sources`. The sidecar ``.ksam.json`` (``output.write_result``) and the Slicer segment tags
(:func:`headline`) are both read from this one record.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Sequence

from .. import __version__

__all__ = ["Sources", "engine_record", "with_sources", "headline"]


@dataclass(frozen=True)
class Sources:
    """How a front-end names its inputs, for the record (``None``: keep what the engine recorded)."""

    target: str | None = None  # e.g. the target's file path, or its volume node's name
    reference: str | None = None
    reference_labels: str | None = None
    model: str | None = None  # what the user asked for: "default", a model folder, a config name
    knowledge_prompt: str | None = None  # one line saying which reference segments prompted the run


def _labelled_slices(merged, segments) -> dict[str, list[int]]:
    """The reference slices each structure was prompted from (structures no pass looked at are left out)."""
    out = {}
    for seg in segments:
        try:
            out[seg.name] = merged.bank.labelled_slices(seg).tolist()
        except KeyError:
            continue
    return out


def _weights_file(model) -> dict[str, Any]:
    """Which weights file a model folder's model came from, and whether its hash was verified on load."""
    check = getattr(model, "weights_check", None)
    if not isinstance(check, dict):
        return {}
    return {"weights_file_sha256": check.get("sha256"), "weights_verified": bool(check.get("verified"))}


def engine_record(request, prepared, model, *, fingerprint: str, view, slices: Sequence[int], labels, mappings,
                  policy, runs: Sequence, merged, timings: dict[str, float],
                  roi: dict[str, Any] | None = None) -> dict[str, Any]:
    """The engine's record of one run (``merged``: the passes combined; ``mappings``: target, reference;
    ``roi``: where the model looked, from :mod:`.focus`)."""
    target_map, reference_map = mappings
    same = prepared.same_volume
    return {
        "software": {"name": "KnowledgeSAM", "version": __version__},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": getattr(model.config, "name", type(model).__name__),
                  "image_size": int(model.config.image_size), "sha256": fingerprint,
                  "base_sha256": getattr(model.config, "sam_checkpoint_sha256", None),
                  **_weights_file(model)},
        "target": request.target.source, "reference": request.reference.source,
        "reference_labels": prepared.reference_labels.source,
        "same_volume": same, "mode": prepared.mode, "requested_mode": request.mode, "axis": request.axis,
        "slice_axis_index": view.slice_axis, "slices": [slices[0], slices[-1] + 1] if slices else [],
        "reference_slices": _labelled_slices(merged, prepared.segments),
        "roi": roi or {"mode": "none"},
        "segments": [{"name": s.name, "label_value": s.label_value, "layer": s.layer} for s in labels.segments],
        "intensity": {"preset": request.preset, "target": target_map.to_dict(), "reference": reference_map.to_dict()},
        "device": str(policy.device), "precision": policy.precision, "batch_size": policy.batch_size,
        "options": dataclasses.asdict(request.options),
        "counts": {"target_slices_encoded": sum(run.targets.encoded for run in runs),
                   "reference_slices_encoded": 0 if same else sum(run.bank.cache.encoded for run in runs),
                   "reference_prompts_built": sum(run.bank.prompts_built for run in runs),
                   "heads_run": sum(run.heads_run for run in runs)},
        "timings": timings,
        "notes": list(dict.fromkeys(list(getattr(prepared, "notes", [])) + policy.notes
                                    + [note for run in [merged, *runs] for note in run.notes])),
    }


def with_sources(provenance: dict[str, Any] | None, request, sources: Sources | None,
                 wall_s: float) -> dict[str, Any]:
    """A copy of an engine record with the front-end's names for the inputs and the wall time of the call.

    ``mode`` and ``axis`` fall back to the request's (a stand-in engine may record nothing)."""
    record = dict(provenance or {})
    record.setdefault("mode", request.mode)
    record.setdefault("axis", request.axis)
    sources = sources or Sources()
    for key in ("target", "reference", "reference_labels", "knowledge_prompt"):
        if getattr(sources, key) is not None:
            record[key] = getattr(sources, key)
    if sources.model is not None and isinstance(record.get("model"), dict):
        record["model"] = {**record["model"], "source": sources.model}
    record["wall_s"] = round(wall_s, 3)
    return record


def headline(provenance: dict[str, Any]) -> dict[str, str]:
    """What a user looks for first: ``Model`` (weights hash), ``Reference`` (the knowledge prompt),
    ``Mode``, and the whole record as ``Provenance`` (JSON); absent values are left out."""
    lines = {"Provenance": json.dumps(provenance, sort_keys=True, default=str)}
    model = provenance.get("model")
    model_hash = model.get("sha256") if isinstance(model, dict) else (model or provenance.get("model_hash"))
    if model_hash:
        lines["Model"] = str(model_hash)
    reference = provenance.get("knowledge_prompt") or provenance.get("reference")
    if reference is not None:
        lines["Reference"] = reference if isinstance(reference, str) else json.dumps(reference, default=str)
    if provenance.get("mode") is not None:
        lines["Mode"] = str(provenance["mode"])
    return lines
