"""Propagate mode: every slice the annotator labelled (or marked empty) prompts the slices around it.

From each labelled slice two walkers go outward, one slice at a time, each taking the previous slice and its own
prediction there as the next reference (that slice's embedding is already computed: no extra encoder pass); near
the labelled slice the prediction is averaged with the labelled slice itself as an anchor. A walker stops at the
next labelled slice, at a slice the annotator marked "structure absent" (negative knowledge), at the end of the
requested range, or when its prediction empties or its confidence (the IoU head) falls below the threshold.

Between two labelled slices both walkers cover the gap and **meet in the middle**: every slice gets the two
predictions fused with weights ``confidence / distance``, so each labelled slice counts most where it is closest,
and a correction of one slice changes only the slab between its labelled neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.volume import Segment
from .context import RunContext

__all__ = ["run_propagate", "territories"]


def territories(seeds: list[int], barriers: list[int], lo: int, hi: int) -> list[tuple[int, int, int]]:
    """For each seed, its two walks ``(seed, step, limit)``: up to (not onto) the next seed or "absent" slice on
    each side, or the end of ``[lo, hi]``. Walks with nothing to cover are left out."""
    stops = sorted(set(seeds) | set(barriers))
    walks = []
    for seed in seeds:
        below = [b for b in stops if b < seed]
        above = [b for b in stops if b > seed]
        down_limit = max(lo, below[-1] + 1) if below else lo
        up_limit = min(hi, above[0] - 1) if above else hi
        if down_limit < seed:
            walks.append((seed, -1, down_limit))
        if up_limit > seed:
            walks.append((seed, +1, up_limit))
    return walks


@dataclass
class _Walker:
    segment: Segment
    seed: int
    step: int  # +1 or -1
    limit: int  # last slice of this walk (inclusive)
    current: int  # last slice done
    mask: torch.Tensor  # 1×1×S×S {0, 1} of ``current``
    alive: bool = True
    results: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)  # slice -> (S×S prob, IoU)

    def ahead(self, depth: int) -> int | None:
        k = self.current + self.step * depth
        return k if (self.limit - k) * self.step >= 0 else None


def _absent(ctx: RunContext, segment: Segment) -> list[int]:
    return sorted(int(k) for k in ctx.absent.get(segment.name, ()))


def _start(ctx: RunContext) -> list[_Walker]:
    """The seeds' own slices (heads with the seed as reference: their confidence and the anchor) and the walkers."""
    lo, hi = min(ctx.slices), max(ctx.slices)
    wanted = set(ctx.slices)
    walkers: list[_Walker] = []
    for seg in ctx.segments:
        seeds = sorted(int(k) for k in ctx.bank.labelled_slices(seg))
        probs, ious = ctx.decode_pairs(seg, seeds, seeds)
        for i, seed in enumerate(seeds):
            # every seed's own prediction, in the requested range or not: the self-check compares it with the
            # drawing (engine._between_labelled), and an update of one slab must decide as the whole run does
            ctx.store(seg, seed, probs[i], float(ious[i]) if seed in wanted else float("nan"))
        for seed, step, limit in territories(seeds, _absent(ctx, seg), min(lo, *seeds), max(hi, *seeds)):
            if not wanted.intersection(range(seed + step, limit + step, step)):
                continue  # it would cover only slices outside the range (an update's other gaps): nothing to keep
            limit = min(limit, hi) if step > 0 else max(limit, lo)  # nor walk on past the range's far end
            mask = ctx.bank.source.masks(ctx.bank.labels, seg, [seed]).to(ctx.policy.device)
            walkers.append(_Walker(seg, seed, step, limit, seed, mask))
    return walkers


def _prefetch(ctx: RunContext, active: list[_Walker]) -> None:
    """Encode the next slices of every walker in full batches (each slice once, shared by all walkers)."""
    size = max(1, ctx.policy.batch_size)
    nexts = [w.ahead(1) for w in active]
    ahead = list(nexts)
    depth = 2
    while len(set(ahead)) < size and depth < ctx.target.n:
        ahead += [k for w in active if (k := w.ahead(depth)) is not None]
        depth += 1
    ctx.targets.ensure([k for k in dict.fromkeys(ahead) if k not in ctx.targets][:size] + nexts)


def _step(ctx: RunContext, active: list[_Walker]) -> None:
    """Every active walker predicts its next slice with its previous slice as the reference; near its seed the
    prediction is averaged with the seed itself as the anchor.

    The walks' rows and the anchors' rows share the heads calls, in chunks of the policy's batch size (rows, not
    walkers): an anchor in a call of its own cost an annotator's update a third of its time on the CPU."""
    opts = ctx.options
    nexts = [w.ahead(1) for w in active]
    rows = [(i, False) for i in range(len(active))]  # (walker, anchor?)
    rows += [(i, True) for i, w in enumerate(active) if abs(nexts[i] - w.seed) <= opts.hybrid_slices]
    out: list[tuple[torch.Tensor, float] | None] = [None] * len(rows)

    def run(start: int, stop: int) -> None:
        chunk = rows[start:stop]
        walks = [i for i, anchor in chunk if not anchor]
        prompts = []
        if walks:
            previous = [active[i].current for i in walks]
            prompts.append(ctx.model.encode_reference(
                ctx.target.images(previous).to(ctx.policy.device),
                torch.cat([active[i].mask.to(ctx.policy.device) for i in walks]),
                embeddings=ctx.targets.get(previous)))
        prompts += [ctx.bank.prompts(active[i].segment, [active[i].seed]) for i, anchor in chunk if anchor]
        prompt = prompts[0] if len(prompts) == 1 else type(prompts[0]).cat(prompts)
        probs, ious = ctx.decode(ctx.targets.get([nexts[i] for i, _ in chunk]), prompt)
        for j in range(len(chunk)):
            out[start + j] = (probs[j], float(ious[j]))

    ctx.policy.run_chunks(len(rows), run)
    results: list[tuple[torch.Tensor, float]] = [out[i] for i in range(len(active))]  # type: ignore[misc]
    for (i, _), (prob, iou) in zip(rows[len(active):], out[len(active):]):  # type: ignore[misc]
        walk_prob, walk_iou = results[i]
        results[i] = (0.5 * (walk_prob + prob), 0.5 * (walk_iou + iou))
    for walker, k, (prob, iou) in zip(active, nexts, results):  # type: ignore[misc]
        binary = prob > opts.threshold
        if int(binary.sum()) < opts.propagate_min_pixels or iou < opts.propagate_min_confidence:
            walker.alive = False  # the structure ends here (or the model is unsure): this walk stops
            walker.results[k] = (np.zeros_like(prob.numpy()), iou)
            continue
        walker.results[k] = (prob.numpy(), iou)
        walker.current = k
        walker.mask = binary.float()[None, None].to(ctx.policy.device)
        walker.alive = walker.current != walker.limit


def _fuse(ctx: RunContext, walkers: list[_Walker]) -> None:
    """Per slice, the walkers' predictions weighted by confidence / distance from their seed."""
    wanted = set(ctx.slices)
    by_slice: dict[tuple[str, int], list[tuple[np.ndarray, float, float]]] = {}
    segments = {}
    for w in walkers:
        segments[w.segment.name] = w.segment
        for k, (prob, iou) in w.results.items():
            weight = max(float(iou), 1e-3) / abs(k - w.seed)
            by_slice.setdefault((w.segment.name, k), []).append((prob, float(iou), weight))
    for (name, k), parts in by_slice.items():
        if k not in wanted:
            continue
        total = sum(weight for *_, weight in parts)
        fused = sum(prob * (weight / total) for prob, _, weight in parts)
        confidence = sum(iou * (weight / total) for _, iou, weight in parts)
        ctx.store(segments[name], k, fused, confidence)


def run_propagate(ctx: RunContext) -> None:
    """Propagate mode over ``ctx.slices`` (see the module docstring); absent slices (``ctx.absent``) stay empty."""
    total = len(ctx.slices) * len(ctx.segments)
    ctx.progress.add_total(total)
    wanted = set(ctx.slices)
    walkers = _start(ctx)
    seeds = sum(1 for seg in ctx.segments for k in ctx.bank.labelled_slices(seg) if k in wanted)
    reported = 0
    while True:
        active = [w for w in walkers if w.alive]
        if not active:
            break
        _prefetch(ctx, active)
        _step(ctx, active)
        done = min(total, seeds + len({(w.segment.name, k) for w in walkers for k in w.results if k in wanted}))
        ctx.progress.advance(max(0, done - reported))
        reported = max(reported, done)
        keep = {k for w in walkers if w.alive for k in range(min(w.current, w.limit), max(w.current, w.limit) + 1)}
        ctx.targets.keep_only(keep)
    _fuse(ctx, walkers)
    ctx.progress.advance(max(0, total - reported))  # walks that stopped early leave nothing more to do
    # absent slices are cleared by the engine after every mode (engine._clear_absent)
