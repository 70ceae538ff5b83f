"""Knowledge-prompt pairs: (target, reference image, reference mask of task t, target mask of task t).

The sampling rules (spec §5.10) are what make the model follow the prompt:

* **Groups**: a batch is made of groups that share one target slice, each pair in a group asking for a
  *different* task. A model that ignores the reference mask cannot fit such a batch.
* **References**: for volumes, with probability ``same_case_prob`` a nearby slice of the same case
  (``0 < |dz| <= max_dz``); otherwise a slice of another training case at a similar relative position
  ``u`` within that structure's extent (``|du| <= max_du``, nearest if none). 2D images take any other
  training image. The reference always contains the structure.
* **Negatives**: about ``negative_fraction`` of pairs have a target slice without the structure (taken
  from the slices beyond the structure's extent, another case, or another source when a source has no
  empty slice), so that an empty prediction is learnt.

Sampling is with replacement from one ``numpy.random.Generator`` whose state is checkpointed, so a resumed
run draws exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import PairSection
from .sources import SliceCase, Source

__all__ = ["PairRef", "PairBatch", "PairSampler", "validation_pairs", "stack_embeddings"]


@dataclass(frozen=True)
class PairRef:
    """Where one pair came from: (source, task) and the target/reference (case, stored-slice row)."""

    source: str
    task: str
    target_case: str
    target_row: int
    ref_case: str
    ref_row: int
    negative: bool
    group: int
    same_case: bool

    @property
    def label(self) -> str:
        return f"{self.source}/{self.task}"


@dataclass
class PairBatch:
    """A batch as uint8 numpy arrays (images ``(B, S, S, 3)``, masks ``(B, S, S)``) plus provenance."""

    target: np.ndarray
    target_mask: np.ndarray
    ref_image: np.ndarray
    ref_mask: np.ndarray
    refs: list[PairRef] = field(default_factory=list)
    # cached frozen-encoder embeddings (B, C, G, G) float16, when every case involved has them
    target_embedding: np.ndarray | None = None
    ref_embedding: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @property
    def negative(self) -> np.ndarray:
        return np.array([r.negative for r in self.refs], dtype=bool)

    @property
    def group(self) -> np.ndarray:
        return np.array([r.group for r in self.refs], dtype=np.int64)


def _stack(items: list[tuple[SliceCase, int, SliceCase, int, int, int]]) -> tuple[np.ndarray, ...]:
    """Gather arrays for (target case, row, ref case, ref row, ref task index, target task index or -1)."""
    target = np.stack([tc.images[tr] for tc, tr, *_ in items])
    ref_image = np.stack([rc.images[rr] for _, _, rc, rr, _, _ in items])
    ref_mask = np.stack([rc.masks[rr, rt] for _, _, rc, rr, rt, _ in items])
    target_mask = np.stack([tc.masks[tr, tt] if tt >= 0 else np.zeros_like(tc.masks[tr, 0])
                            for tc, tr, _, _, _, tt in items])
    return target, target_mask, ref_image, ref_mask


def stack_embeddings(items: list[tuple[SliceCase, int, SliceCase, int]]) -> tuple[np.ndarray, np.ndarray] | None:
    """Cached embeddings of (target case, row, reference case, row) items, or None if any case has none."""
    if any(tc.embeddings is None or rc.embeddings is None for tc, _, rc, _ in items):
        return None
    return (np.stack([tc.embeddings[tr] for tc, tr, _, _ in items]),
            np.stack([rc.embeddings[rr] for _, _, rc, rr in items]))


class PairSampler:
    """Draws training batches of knowledge-prompt pairs from the training cases of ``sources``."""

    def __init__(self, sources: list[Source], config: PairSection, seed: int = 0) -> None:
        self.sources = [s for s in sources if s.train]
        if not self.sources:
            raise ValueError("no source has training cases")
        sizes = {c.size for s in self.sources for c in s.train}
        if len(sizes) != 1:
            raise ValueError(f"all cases must have one model size, got {sorted(sizes)}")
        self.config = config
        self.rng = np.random.default_rng(seed)
        weights = np.array([s.weight for s in self.sources], dtype=float)
        self.source_p = weights / weights.sum()
        # tasks that some training case shows (a task absent from every case cannot be a prompt)
        self._tasks = {s.name: [t for t in s.tasks if any(c.present[:, c.task_index(t)].any() for c in s.train)]
                       for s in self.sources}
        empty = [s.name for s in self.sources if not self._tasks[s.name]]
        if empty:
            raise ValueError(f"sources without any labelled structure in their training cases: {empty}")
        self._group_counter = 0

    # ---------------------------------------------------------------- state (for exact resume)
    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "group_counter": self._group_counter}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._group_counter = int(state["group_counter"])

    # ---------------------------------------------------------------- helpers
    def _choice(self, items: np.ndarray | list) -> int:
        return int(items[self.rng.integers(len(items))])

    def _negative_group_prob(self, source: Source) -> float:
        """Probability that a group holds one negative, so that ~negative_fraction of pairs are negative."""
        k = min(self.config.tasks_per_target, len(source.tasks))
        return min(1.0, self.config.negative_fraction * k)

    def _reference(self, source: Source, task: str, target_case: SliceCase | None, target_row: int,
                   u: float) -> tuple[SliceCase, int, bool]:
        """A training slice of ``source`` that contains ``task``: same-case nearby or cross-case at similar u."""
        cfg = self.config
        if (target_case is not None and target_case.is_volume and target_case in source.train
                and self.rng.random() < cfg.same_case_prob):
            t = target_case.task_index(task)
            dz = np.abs(target_case.slice_index - target_case.slice_index[target_row])
            rows = np.flatnonzero(target_case.present[:, t] & (dz > 0) & (dz <= cfg.max_dz))
            if len(rows):
                return target_case, self._choice(rows), True
        candidates = [c for c in source.train if c is not target_case and c.present[:, c.task_index(task)].any()]
        if not candidates:  # a single training case: fall back to itself (2D: the same image, augmented apart)
            candidates = [c for c in source.train if c.present[:, c.task_index(task)].any()]
        case = candidates[int(self.rng.integers(len(candidates)))]
        t = case.task_index(task)
        rows = np.flatnonzero(case.present[:, t])
        if case.is_volume:
            du = np.abs(case.u[rows, t] - np.clip(u, 0.0, 1.0))
            close = rows[du <= cfg.max_du]
            rows = close if len(close) else rows[[int(np.argmin(du))]]
        return case, self._choice(rows), case is target_case

    def _negative_target(self, source: Source, task: str) -> tuple[Source, SliceCase, int] | None:
        """A target slice without ``task``: same source (empty slices beyond the extent) or another source."""
        options = []
        for case in source.train:
            rows = np.flatnonzero(~case.present[:, case.task_index(task)])
            if len(rows):
                options.append((case, rows))
        if options:
            case, rows = options[int(self.rng.integers(len(options)))]
            return source, case, self._choice(rows)
        others = [s for s in self.sources if s is not source]
        if not others:
            return None
        other = others[int(self.rng.integers(len(others)))]
        case = other.train[int(self.rng.integers(len(other.train)))]
        return other, case, int(self.rng.integers(case.n))

    # ---------------------------------------------------------------- groups and batches
    def _group(self) -> list[tuple]:
        """One target slice and up to ``tasks_per_target`` pairs with different tasks."""
        cfg = self.config
        source = self.sources[int(self.rng.choice(len(self.sources), p=self.source_p))]
        group_id = self._group_counter
        self._group_counter += 1
        items: list[tuple] = []
        tasks = self._tasks[source.name]
        task0 = tasks[int(self.rng.integers(len(tasks)))]
        negative = self.rng.random() < self._negative_group_prob(source)
        target = self._negative_target(source, task0) if negative else None
        if target is not None:
            tsource, tcase, trow = target
            u = float(tcase.u[trow, tcase.task_index(task0)]) if tsource is source else float(self.rng.random())
            rcase, rrow, same = self._reference(source, task0, tcase if tsource is source else None, trow, u)
            items.append((source.name, task0, tcase, trow, rcase, rrow, rcase.task_index(task0), -1, True, same))
            others = [t for t in tsource.tasks if tcase.present[trow, tcase.task_index(t)]]
            self.rng.shuffle(others)
        else:
            tsource = source
            cases = [c for c in source.train if c.present[:, c.task_index(task0)].any()]
            tcase = cases[int(self.rng.integers(len(cases)))]
            trow = self._choice(np.flatnonzero(tcase.present[:, tcase.task_index(task0)]))
            rest = [t for t in source.tasks if t != task0 and tcase.present[trow, tcase.task_index(t)]]
            self.rng.shuffle(rest)
            others = [task0] + rest
        for task in others[: cfg.tasks_per_target - len(items)]:
            t = tcase.task_index(task)
            rcase, rrow, same = self._reference(tsource, task, tcase, trow, float(tcase.u[trow, t]))
            items.append((tsource.name, task, tcase, trow, rcase, rrow, rcase.task_index(task), t, False, same))
        return [(group_id, *item) for item in items]

    def sample(self, batch_size: int) -> PairBatch:
        """Draw ``batch_size`` pairs (whole groups, the last one cut to fit)."""
        rows: list[tuple] = []
        while len(rows) < batch_size:
            rows.extend(self._group())
        rows = rows[:batch_size]
        arrays = _stack([(r[3], r[4], r[5], r[6], r[7], r[8]) for r in rows])
        refs = [PairRef(source=r[1], task=r[2], target_case=r[3].name, target_row=r[4], ref_case=r[5].name,
                        ref_row=r[6], negative=r[9], group=r[0], same_case=r[10]) for r in rows]
        embeddings = stack_embeddings([(r[3], r[4], r[5], r[6]) for r in rows])
        target_emb, ref_emb = embeddings if embeddings is not None else (None, None)
        return PairBatch(*arrays, refs=refs, target_embedding=target_emb, ref_embedding=ref_emb)


def validation_pairs(sources: list[Source], max_slices_per_case: int = 8) -> list[tuple]:
    """Deterministic held-out pairs: every val case, task and (evenly spread) slice, with the reference
    taken from a training case (rotating over cases) at the nearest relative position.

    Returns ``(source, task, val case, row, ref case, ref row)`` tuples; the validation Dice per
    structure accumulates over each case's listed slices (a 3D-like Dice per case).
    """
    items = []
    for source in sources:
        for ci, case in enumerate(source.val):
            rows = np.arange(case.n)
            if max_slices_per_case and case.n > max_slices_per_case:
                rows = np.unique(np.linspace(0, case.n - 1, max_slices_per_case).round().astype(int))
            for task in source.tasks:
                t = case.task_index(task)
                refs = [c for c in source.train if c.present[:, c.task_index(task)].any()]
                if not refs or not case.present[:, t].any():
                    continue
                ref = refs[ci % len(refs)]
                rt = ref.task_index(task)
                ref_rows = np.flatnonzero(ref.present[:, rt])
                for row in rows:
                    u = float(np.clip(case.u[row, t], 0.0, 1.0))
                    ref_row = int(ref_rows[int(np.argmin(np.abs(ref.u[ref_rows, rt] - u)))]) if ref.is_volume \
                        else int(ref_rows[0])
                    items.append((source.name, task, case, int(row), ref, ref_row))
    return items
