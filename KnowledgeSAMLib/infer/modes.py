"""The three ways of choosing, per target slice, which reference the heads see (KSAM_SPEC §5.12).

* ``anchor``: the labelled slice(s) are the reference for every slice (the nearest one; in another
  volume, the nearest by relative position in the scan);
* ``propagate``: walk outward from each labelled slice, the previous slice and its prediction being
  the next reference (its embedding is the already-computed target embedding: no extra encoder pass),
  averaged with the anchor near the labelled slice, stopping on an empty or low-confidence prediction;
* ``volume``: a labelled volume (another patient) is a bank of candidate slices; each target slice
  takes the top-k by descriptor similarity and relative position and fuses them with softmax weights.

All three share :class:`RunContext`: one target embedding per slice for all structures, heads run per
(target slice, structure, reference slice), probabilities stored as uint8 on the target grid.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..data.volume import Labels, Segment
from .context import RunContext
from .propagate import run_propagate
from .reference import relative

__all__ = ["RunContext", "RUNNERS", "run_anchor", "run_propagate", "run_volume", "average_runs",
           "largest_component", "positions_in_reference"]


def _positions(view, ks: Sequence[int] | np.ndarray) -> np.ndarray:
    ordered = np.asarray(view.ordered(np.asarray(ks)), dtype=np.float64)
    return relative(ordered, 0, view.n - 1) if view.n > 1 else np.full(len(ordered), 0.5)


def nearest_labelled(ctx: RunContext, segment: Segment, ks: Sequence[int]) -> list[int]:
    """Anchor choice: the nearest labelled slice (same volume) or nearest relative scan position."""
    labelled = ctx.bank.labelled_slices(segment)
    if ctx.same_volume:
        dist = np.abs(np.asarray(ks)[:, None] - labelled[None, :])
    else:
        dist = np.abs(_positions(ctx.target.view, ks)[:, None] - _positions(ctx.bank.source.view, labelled)[None, :])
    return [int(labelled[i]) for i in np.argmin(dist, axis=1)]


def _chunks(items: Sequence[int], size: int):
    for start in range(0, len(items), max(1, size)):
        yield list(items[start:start + max(1, size)])


# ----------------------------------------------------------------------------------------- anchor

def run_anchor(ctx: RunContext) -> None:
    ctx.progress.add_total(len(ctx.slices))
    choice = {seg.name: dict(zip(ctx.slices, nearest_labelled(ctx, seg, ctx.slices))) for seg in ctx.segments}
    position = 0
    while position < len(ctx.slices):
        chunk = ctx.slices[position:position + max(1, ctx.policy.batch_size)]
        ctx.targets.ensure(chunk)  # one encoder pass per target slice, shared by every structure
        for seg in ctx.segments:
            probs, ious = ctx.decode_pairs(seg, chunk, [choice[seg.name][k] for k in chunk])
            for k, p, q in zip(chunk, probs, ious):
                ctx.store(seg, k, p, float(q))
        ctx.targets.release(chunk)
        position += len(chunk)
        ctx.progress.advance(len(chunk))


# ----------------------------------------------------------------------------------------- volume

def _softmax(x: np.ndarray, temperature: float) -> np.ndarray:
    z = (x - x.max(axis=-1, keepdims=True)) / temperature
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _volume_pass(ctx: RunContext, k_refs: int, priors: dict[str, str],
                 extents: dict[str, tuple[float, float]], target_pos: np.ndarray | None = None) -> None:
    """One pass over the target slices: score the candidates, fuse the top-k, store probabilities.

    ``priors[name]`` is ``"extent"`` (position within ``extents[name]``, slices outside stay empty),
    ``"scan"`` (position within the scan; ``target_pos`` gives the target slices' positions in the
    reference scan when they are known better than by their own relative position) or ``"none"``
    (similarity only).
    """
    opts = ctx.options
    descriptors = {seg.name: ctx.bank.descriptors(seg) for seg in ctx.segments}
    if target_pos is None:
        target_pos = _positions(ctx.target.view, ctx.slices)
    position = 0
    while position < len(ctx.slices):
        chunk = ctx.slices[position:position + max(1, ctx.policy.batch_size)]
        chunk_pos = target_pos[position:position + len(chunk)]
        g_target = ctx.targets.descriptors(chunk)  # (B, C); encodes the chunk once for all structures
        for seg in ctx.segments:
            d = descriptors[seg.name]
            scores = (g_target @ d.vectors.T).numpy().astype(np.float64)  # cosine similarities (B, m)
            inside = np.ones(len(chunk), dtype=bool)
            prior = priors.get(seg.name, "none")
            if prior == "extent":
                low, high = extents[seg.name]
                ordered = np.asarray(ctx.target.view.ordered(np.asarray(chunk)), dtype=np.float64)
                inside = (ordered >= low) & (ordered <= high)
                u = relative(ordered, low, high)
                scores = scores - opts.position_weight * np.abs(u[:, None] - d.in_extent[None, :])
            elif prior == "scan":
                scores = scores - opts.position_weight * np.abs(chunk_pos[:, None] - d.in_scan[None, :])
            k = min(k_refs, scores.shape[1])
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            top_scores = np.take_along_axis(scores, top, axis=1)
            weights = _softmax(top_scores, opts.temperature)
            keep = inside.copy()
            if opts.min_similarity is not None:
                keep &= top_scores[:, 0] >= opts.min_similarity
            rows = [i for i in range(len(chunk)) if keep[i]]
            pairs_t = [chunk[i] for i in rows for _ in range(k)]
            pairs_r = [int(d.slices[top[i, j]]) for i in rows for j in range(k)]
            if rows:
                probs, ious = ctx.decode_pairs(seg, pairs_t, pairs_r)
                probs = probs.reshape(len(rows), k, *probs.shape[1:])
                ious = ious.reshape(len(rows), k)
            for row, i in enumerate(rows):
                w = torch.from_numpy(weights[i]).float()
                fused = (probs[row] * w[:, None, None]).sum(0)
                ctx.store(seg, chunk[i], fused, float((ious[row] * w).sum()))
            for i in range(len(chunk)):
                if not keep[i]:
                    ctx.clear(seg, chunk[i])
        ctx.targets.release(chunk)  # pinned (kept) in a two-pass run
        position += len(chunk)
        ctx.progress.advance(len(chunk))


def aligned_positions(ctx: RunContext, margin: int = 2) -> np.ndarray:
    """The target slices' positions in the reference scan (``[0, 1]`` over its slices, possibly beyond).

    The reference's labelled slab (every requested structure, ``margin`` slices either side) is placed
    inside the target by a 1D affine alignment of the slice descriptors (:mod:`.alignment`), each scan's
    descriptors centred on its own mean; the map is then inverted for the target slices.
    """
    from .alignment import align_stacks, centred

    rview, tview = ctx.bank.source.view, ctx.target.view
    every = ctx.bank.scan_descriptors().numpy()
    labelled = np.asarray(ctx.bank.all_slices())
    slab = np.arange(max(0, labelled.min() - margin), min(rview.n, labelled.max() + margin + 1))
    target = ctx.targets.descriptors(ctx.slices).numpy()  # embeddings stay cached for the pass
    target_mm = tview.positions_mm(np.asarray(ctx.slices))
    fit = align_stacks(centred(every[slab], every.mean(axis=0)), rview.positions_mm(slab), centred(target),
                       target_mm, min_overlap=1.0)
    ctx.alignment = fit
    ctx.notes.append(f"placed the reference's labelled slices in the target: target mm = {fit.scale:.3f} x "
                     f"reference mm {fit.shift:+.1f} (mean similarity {fit.similarity:.3f})")
    return positions_in_reference(fit, tview, rview, ctx.slices)


def positions_in_reference(fit, tview, rview, slices) -> np.ndarray:
    """Target slices' positions in the reference scan (``[0, 1]`` over its slices) through a fitted alignment.

    The fit maps the reference slab into the target, so the target slices go back through its inverse."""
    target_mm = tview.positions_mm(np.asarray(slices))
    return relative(fit.invert(target_mm), 0.0, (rview.n - 1) * rview.slice_spacing)  # the scan's span in mm


def run_volume(ctx: RunContext, target_pos: np.ndarray | None = None,
               extent: tuple[float, float] | None = None) -> None:
    """Volume mode. ``target_pos`` (the target slices' positions in the reference scan, from an earlier pass's
    alignment) or ``extent`` (where, in the target's canonical slice order, the structures lie — a user's box)
    replace the configured position prior."""
    opts = ctx.options
    prior = opts.position_prior if ctx.target.n > 1 else "none"
    passes = 2 if prior == "two-pass" and target_pos is None and extent is None else 1
    ctx.progress.add_total(len(ctx.bank.all_slices()) + passes * len(ctx.slices))
    ctx.bank.ensure_embeddings(count_progress=True)  # each reference slice encoded once
    if extent is not None and ctx.target.n > 1:
        _volume_pass(ctx, opts.top_k, {seg.name: "extent" for seg in ctx.segments},
                     {seg.name: extent for seg in ctx.segments})
        return
    if target_pos is not None:
        _volume_pass(ctx, opts.top_k, {seg.name: "scan" for seg in ctx.segments}, {}, target_pos)
        return
    if prior == "aligned":  # the scan prior, with target positions mapped into the reference's scan
        _volume_pass(ctx, opts.top_k, {seg.name: "scan" for seg in ctx.segments}, {}, aligned_positions(ctx))
        return
    if passes == 1:
        _volume_pass(ctx, opts.top_k, {seg.name: prior for seg in ctx.segments}, {})
        return
    # pass 1: similarity only, to find the structure's extent in the target
    ctx.targets.pin(ctx.slices)  # keep target embeddings for pass 2 (fp16: 0.5 MiB/slice at 512)
    try:
        _volume_pass(ctx, opts.first_pass_k, {}, {})
        priors: dict[str, str] = {}
        extents: dict[str, tuple[float, float]] = {}
        threshold = opts.byte_threshold
        for seg in ctx.segments:
            mask = largest_component(ctx.probabilities[seg.name] > threshold)
            present = np.flatnonzero(ctx.target.view.slice_has(mask))
            if present.size:
                ordered = np.asarray(ctx.target.view.ordered(present), dtype=np.float64)
                extents[seg.name] = (float(ordered.min()), float(ordered.max()))
                priors[seg.name] = "extent"
            else:
                priors[seg.name] = "scan"
                ctx.notes.append(f"{seg.name}: the first pass found nothing; the second pass used the scan prior")
            ctx.probabilities[seg.name][...] = 0
        # pass 2: similarity + position within the predicted extent (slices outside it stay empty)
        _volume_pass(ctx, opts.top_k, priors, extents)
    finally:
        ctx.targets.unpin(ctx.slices)
        ctx.targets.keep_only([])


# ------------------------------------------------------------------------------ test-time flips

# Every mode's runner by the name a request uses; a new mode is a runner here plus its name in
# KnowledgeSAMLib/choices.py MODES (the list the front-ends offer; Testing/test_infer_request.py checks both agree).
RUNNERS = {"anchor": run_anchor, "propagate": run_propagate, "volume": run_volume}


def average_runs(runs: Sequence[RunContext]) -> RunContext:
    """Average the probabilities and confidences of runs over the same slices (flip test-time augmentation).

    Each run's maps are already on the unmirrored target grid (``SliceSource.to_slice`` flips back). A
    confidence that is NaN in one run (e.g. a propagation that stopped earlier) takes the other run's value.
    The first run carries the merged result and every run's notes.
    """
    first = runs[0]
    if len(runs) == 1:
        return first
    for name in first.probabilities:
        total = sum(run.probabilities[name].astype(np.uint16) for run in runs)
        first.probabilities[name] = ((total + len(runs) // 2) // len(runs)).astype(np.uint8)
        stacked = np.stack([run.confidence[name] for run in runs])
        seen = (~np.isnan(stacked)).sum(axis=0)
        first.confidence[name] = np.where(seen > 0, np.nansum(stacked, axis=0) / np.maximum(seen, 1),
                                          np.nan).astype(np.float32)
    first.notes = list(dict.fromkeys(note for run in runs for note in run.notes))
    return first


# ---------------------------------------------------------------------------------- post-process

def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component (face+edge+corner connectivity) of a boolean volume."""
    if not mask.any():
        return mask
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    components = sitk.RelabelComponent(sitk.ConnectedComponent(image, True), sortByObjectSize=True)
    return sitk.GetArrayViewFromImage(components) == 1


def labelled_override(ctx: RunContext, labels: Labels, reference_slices: Sequence[int] | None = None
                      ) -> dict[str, dict[int, np.ndarray]]:
    """Same volume: the slices the user labelled keep exactly the user's labels (``reference_slices``: only
    those of them that were given as the reference). Written into the probabilities even outside the requested
    slice range — smoothing across slices then sees the same neighbours as a run over every slice — and
    returned per structure (``{name: {slice: plane}}``) so that they can be imposed again after post-processing.
    """
    allowed = None if reference_slices is None else set(int(k) for k in reference_slices)
    view = ctx.target.view
    drawn: dict[str, dict[int, np.ndarray]] = {}
    for seg in ctx.segments:
        drawn[seg.name] = {}
        for k in np.flatnonzero(view.slice_has(labels.layers[seg.layer] == seg.label_value)):
            if allowed is None or int(k) in allowed:
                plane = np.ascontiguousarray(view.get(labels.layers[seg.layer], int(k))) == seg.label_value
                view.put(ctx.probabilities[seg.name], int(k), plane.astype(np.uint8) * 255)
                drawn[seg.name][int(k)] = plane
    return drawn
