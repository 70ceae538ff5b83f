"""Model inputs from volumes, slice by slice, and the caches that make volume inference cheap.

* :class:`SliceSource` turns slice ``k`` of a volume into a ``3×S×S`` model input (intensity mapping, then
  :class:`~KnowledgeSAMLib.data.resize.SquareFit`) only when asked, so no full-volume float copy at model
  size ever exists; it also maps ``S×S`` probabilities back onto the slice grid.
* :class:`EmbeddingCache` encodes each slice once (batched, through the device policy) and keeps the
  embeddings in fp16 — the only per-slice state worth keeping (KSAM_SPEC §5.12).
* :class:`ReferenceBank` knows, per structure, which reference slices are labelled, their relative
  positions and descriptors, and builds (and caches) the :class:`ReferencePrompt` of a (structure, slice).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from ..data.volume import Image, Labels, Segment
from .cancel import Progress
from .device import DevicePolicy
from .request import labelled_slices
from .slicing import AxisView

__all__ = ["SliceSource", "EmbeddingCache", "ReferenceBank", "Descriptors", "ReferenceCache"]


class SliceSource:
    """One volume seen through an axis view, an intensity mapping and a square fit to the model size.

    ``crop`` (rows ``r0:r1``, columns ``c0:c1`` of the canonical slice; ``fit`` is then built for the crop's
    shape) makes the model look only at a region of interest; :meth:`to_slice` pastes results back into the
    whole slice. ``mirrored`` flips every model-size image and mask left-right and flips probabilities back in
    :meth:`to_slice`: the engine's flip test-time augmentation runs the same modes on a mirrored target
    and reference and averages the two results on the unmirrored grid.
    """

    def __init__(self, image: Image, view: AxisView, mapping, fit, mirrored: bool = False,
                 crop: tuple[int, int, int, int] | None = None) -> None:
        self.image, self.view, self.mapping, self.fit = image, view, mapping, fit
        self.mirrored = bool(mirrored)
        self.crop = crop

    def _plane(self, array: np.ndarray, k: int) -> np.ndarray:
        plane = self.view.get(array, k)
        if self.crop is not None:
            r0, r1, c0, c1 = self.crop
            plane = plane[r0:r1, c0:c1]
        return np.ascontiguousarray(plane)

    def _model_space(self, square: np.ndarray) -> np.ndarray:
        """Mirror an ``S×S[×C]`` model-size array when this source is mirrored (its own inverse)."""
        return square[:, ::-1] if self.mirrored else square

    @property
    def n(self) -> int:
        return self.view.n

    def model_image(self, k: int) -> np.ndarray:
        """Slice ``k`` as a ``3×S×S`` float32 array in [0, 1]."""
        plane = self._plane(self.image.array, k)
        rgb = np.asarray(self.mapping.apply(plane), dtype=np.float32)
        square = self._model_space(np.asarray(self.fit.to_model(rgb, 1), dtype=np.float32))
        if square.ndim == 2:
            square = np.repeat(square[..., None], 3, axis=-1)
        return np.ascontiguousarray(square.transpose(2, 0, 1))

    def images(self, ks: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.model_image(int(k)) for k in ks]))

    def model_mask(self, labels: Labels, segment: Segment, k: int) -> np.ndarray:
        """The segment's mask on slice ``k`` as an ``S×S`` float32 {0, 1} array."""
        plane = self._plane(labels.layers[segment.layer], k) == segment.label_value
        square = self._model_space(np.asarray(self.fit.to_model(plane.astype(np.float32), 0), dtype=np.float32))
        return np.ascontiguousarray(square > 0.5, dtype=np.float32)

    def masks(self, labels: Labels, segment: Segment, ks: Sequence[int]) -> torch.Tensor:
        return torch.from_numpy(np.stack([self.model_mask(labels, segment, int(k)) for k in ks]))[:, None]

    def to_slice(self, square: np.ndarray) -> np.ndarray:
        """An ``S×S`` probability map back onto the slice grid ``(h, w)``."""
        square = np.ascontiguousarray(self._model_space(np.asarray(square, dtype=np.float32)))
        plane = np.asarray(self.fit.to_original(square), dtype=np.float32)
        if self.crop is None:
            return plane
        r0, r1, c0, c1 = self.crop
        whole = np.zeros(self.view.slice_shape, dtype=np.float32)
        whole[r0:r1, c0:c1] = plane
        return whole


class EmbeddingCache:
    """Slice index → fp16 embedding on the compute device; each slice is encoded once.

    Pinned slices (e.g. the labelled slices of a same-volume reference) survive :meth:`release`.
    """

    def __init__(self, model, source: SliceSource, policy: DevicePolicy, dtype: torch.dtype = torch.float16,
                 progress: Progress | None = None, store: dict[int, torch.Tensor] | None = None,
                 retain: bool = False) -> None:
        """``store``: a dict shared with later calls (see :class:`ReferenceCache`); ``retain``: never drop an
        embedding (release/keep_only do nothing), for a store that must serve the next call too."""
        self.model, self.source, self.policy, self.dtype = model, source, policy, dtype
        self.retain = retain
        self.progress = progress
        self._store: dict[int, torch.Tensor] = store if store is not None else {}
        self._pinned: Counter[int] = Counter()  # pins are counted: a slice may be pinned twice
        self.encoded = 0  # slices passed through the encoder (tests check "once per slice")

    def __contains__(self, k: int) -> bool:
        return int(k) in self._store

    def __len__(self) -> int:
        return len(self._store)

    def ensure(self, ks: Iterable[int], count_progress: bool = False) -> None:
        missing = [int(k) for k in dict.fromkeys(int(k) for k in ks) if int(k) not in self._store]

        def encode(start: int, stop: int) -> None:
            idx = missing[start:stop]
            images = self.policy.to_device(self.source.images(idx))
            embeddings = self.model.encode(images)
            for k, emb in zip(idx, embeddings):
                self._store[k] = emb.detach().to(dtype=self.dtype, copy=True)
            self.encoded += len(idx)
            if count_progress and self.progress is not None:
                self.progress.advance(len(idx))

        self.policy.run_chunks(len(missing), encode)

    def get(self, ks: Sequence[int]) -> torch.Tensor:
        """Embeddings of slices ``ks`` as one float32 ``B×C×G×G`` batch on the current device."""
        self.ensure(ks)
        return torch.stack([self._store[int(k)] for k in ks]).to(self.policy.device, torch.float32)

    def move_to(self, device: torch.device) -> None:
        """Move every cached embedding (e.g. to the CPU after a GPU ran out of memory)."""
        for k in list(self._store):
            self._store[k] = self._store[k].to(device)

    def pin(self, ks: Iterable[int]) -> None:
        self._pinned.update(int(k) for k in ks)

    def unpin(self, ks: Iterable[int]) -> None:
        self._pinned.subtract(int(k) for k in ks)
        self._pinned = +self._pinned  # drop non-positive counts

    def release(self, ks: Iterable[int]) -> None:
        if self.retain:
            return
        for k in ks:
            if int(k) not in self._pinned:
                self._store.pop(int(k), None)

    def keep_only(self, wanted: Iterable[int]) -> None:
        if self.retain:
            return
        keep = set(int(k) for k in wanted) | set(self._pinned)
        for k in [k for k in self._store if k not in keep]:
            del self._store[k]

    def descriptors(self, ks: Sequence[int]) -> torch.Tensor:
        """L2-normalised global-average-pooled embeddings (``B×C`` float32, on the CPU)."""
        self.ensure(ks)
        pooled = torch.stack([self._store[int(k)].float().mean(dim=(-1, -2)).cpu() for k in ks])
        return F.normalize(pooled, dim=1)


@dataclass
class Descriptors:
    """Per structure: labelled reference slices, their descriptors and relative positions."""

    slices: np.ndarray  # (m,) reference slice indices
    vectors: torch.Tensor  # (m, C) L2-normalised
    in_extent: np.ndarray  # (m,) position within the structure's extent along the axis, [0, 1]
    in_scan: np.ndarray  # (m,) position within the scan along the axis, [0, 1]


def relative(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map positions to [0, 1] over [low, high]; a one-slice range maps to 0.5 there."""
    values = np.asarray(values, dtype=np.float64)
    if high <= low:
        return 0.5 + (values - low)
    return (values - low) / (high - low)


class ReferenceBank:
    """The labelled reference: which slices carry each structure, their embeddings and prompts."""

    def __init__(self, model, source: SliceSource, labels: Labels, segments: Sequence[Segment],
                 policy: DevicePolicy, reference_slices: Sequence[int] | None = None,
                 cache: EmbeddingCache | None = None, prompt_cache_size: int = 64,
                 embedding_dtype: torch.dtype = torch.float16, progress: Progress | None = None,
                 shared: "ReferenceCache | None" = None, shared_key: tuple[tuple, tuple] | None = None) -> None:
        self.model, self.source, self.labels, self.policy = model, source, labels, policy
        entry = shared.entry(*shared_key) if shared is not None and shared_key is not None else None
        self.cache = cache if cache is not None else EmbeddingCache(
            model, source, policy, embedding_dtype, progress, store=entry["embeddings"] if entry else None)
        self._prompts: OrderedDict[tuple[str, int], object] = entry["prompts"] if entry else OrderedDict()
        self._scan: dict[str, torch.Tensor] = entry["scan"] if entry else {}  # every slice's descriptor
        self._prompt_cache_size = max(1, int(prompt_cache_size))
        self.prompts_built = 0
        self.segments = list(segments)
        where = source.image.source or labels.source or "the reference"
        self._slices = labelled_slices(labels, self.segments, source.view.slice_has, reference_slices, where)
        self.cache.pin(self.all_slices())

    def move_to(self, device: torch.device) -> None:
        self.cache.move_to(device)
        for key in list(self._prompts):
            self._prompts[key] = self._prompts[key].to(device)

    def labelled_slices(self, segment: Segment) -> np.ndarray:
        return self._slices[segment.name]

    def all_slices(self) -> list[int]:
        return sorted(set(int(k) for v in self._slices.values() for k in v))

    def ensure_embeddings(self, count_progress: bool = False) -> None:
        self.cache.ensure(self.all_slices(), count_progress=count_progress)

    def descriptors(self, segment: Segment) -> Descriptors:
        ks = self._slices[segment.name]
        view = self.source.view
        ordered = np.asarray(view.ordered(ks), dtype=np.float64)
        return Descriptors(
            slices=ks,
            vectors=self.cache.descriptors(ks.tolist()),
            in_extent=relative(ordered, ordered.min(), ordered.max()),
            in_scan=relative(ordered, 0, view.n - 1) if view.n > 1 else np.full(ks.shape, 0.5),
        )

    def scan_descriptors(self) -> torch.Tensor:
        """Descriptors of *every* reference slice (``n×C``, for stack alignment), computed once.

        The unlabelled slices are encoded batch by batch and their embeddings dropped again (the
        labelled ones stay pinned), so only the small descriptors are kept.
        """
        if "all" not in self._scan:
            every = list(range(self.source.view.n))
            missing = [k for k in every if k not in self.cache]
            if self.cache.progress is not None:
                self.cache.progress.add_total(len(missing))
            parts = []
            size = max(1, self.policy.batch_size)
            for start in range(0, len(every), size):
                chunk = every[start:start + size]
                self.cache.ensure(chunk, count_progress=True)
                parts.append(self.cache.descriptors(chunk))
                self.cache.release(chunk)
            self._scan["all"] = torch.cat(parts)
        return self._scan["all"]

    def prompts(self, segment: Segment, ks: Sequence[int]):
        """The :class:`ReferencePrompt` batch for (segment, slice k) pairs, built once per pair (LRU)."""
        keys = [(segment.name, int(k)) for k in ks]
        missing = [k for k in dict.fromkeys(keys) if k not in self._prompts]
        if missing:
            slices = [k for _, k in missing]
            images = self.policy.to_device(self.source.images(slices))
            masks = self.policy.to_device(self.source.masks(self.labels, segment, slices))
            built = self.model.encode_reference(images, masks, embeddings=self.cache.get(slices))
            self.prompts_built += len(missing)
            for i, key in enumerate(missing):
                self._prompts[key] = built[i].detach().to(self.policy.device, copy=True)  # not a view of the batch
        for key in keys:
            self._prompts.move_to_end(key)
        batch = [self._prompts[key].to(self.policy.device) for key in keys]
        while len(self._prompts) > max(self._prompt_cache_size, len(set(keys))):
            self._prompts.popitem(last=False)
        return batch[0] if len(batch) == 1 else type(batch[0]).cat(batch)


class ReferenceCache:
    """Keeps reference embeddings and prompts across ``segment`` calls that share one reference.

    The engine keys an entry by everything the cached tensors depend on (reference voxels and labels,
    axis, intensity mapping, model weights, model size, dtype), so a stale entry is never reused. Pass one
    instance to every call of a batch (the Segmenter does for every front-end).

    Entries are grouped by volume: ``entry(volume, variant)``, where ``variant`` is what one pass looks at
    (mirrored or not, a crop). ``max_volumes`` bounds the memory of a long session by whole volumes, the least
    recently used going first (``None``: keep all). Why by volume: one ``roi="auto"`` run looks at a volume
    through several crops (a window scan, then a fine pass over the same reference region); a bound counted in
    crops evicted the scan's reference embeddings before the fine pass could reuse them.
    """

    def __init__(self, max_volumes: int | None = None) -> None:
        self._volumes: OrderedDict[tuple, dict[tuple, dict]] = OrderedDict()
        self.max_volumes = max_volumes

    def entry(self, volume: tuple, variant: tuple = ()) -> dict:
        """The cached state of ``volume`` seen as ``variant``, made empty on first use."""
        if volume in self._volumes:
            self._volumes.move_to_end(volume)
        else:
            while self.max_volumes is not None and len(self._volumes) >= max(1, self.max_volumes):
                self._volumes.popitem(last=False)
            self._volumes[volume] = {}
        return self._volumes[volume].setdefault(variant, {"embeddings": {}, "prompts": OrderedDict(), "scan": {}})

    def __len__(self) -> int:
        """The number of volumes held."""
        return len(self._volumes)

    def clear(self) -> None:
        self._volumes.clear()
