"""A documented test double of the KSAM model contract, for fast engine tests on the CPU.

Why a fake: the engine's job is plumbing (slicing, caching, batching, fusion, geometry, output); a
randomly initialised KSAM predicts noise, so "the engine recovers the labelled structure" can only be
tested with a model that actually uses its knowledge prompt. ``ThresholdModel`` follows the contract
of ``KnowledgeSAMLib.model`` (``config.image_size``, ``encode``, ``encode_reference`` →
prompt with ``[i]``/``cat``/``expand``/``to``, ``decode`` → (logits, iou)) and segments by intensity:
the reference mask tells it which intensity range the wanted structure has, and it marks the target
pixels in that range. It counts its calls so tests can check "each slice encoded once".

The integration tests use the real ``build_model("tiny")`` as well; this module's own tests check that
the fake keeps the same contract as the real model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment


@dataclass
class FakePrompt:
    """Per reference: the intensity range of the wanted structure, where it may be (its mask, dilated),
    and the reference embedding."""

    low: torch.Tensor  # (B,)
    high: torch.Tensor  # (B,)
    region: torch.Tensor  # (B, 1, S, S) {0, 1}
    embedding: torch.Tensor  # (B, C, G, G)

    def _map(self, fn) -> "FakePrompt":
        return FakePrompt(*(fn(getattr(self, f.name)) for f in fields(self)))

    def __len__(self) -> int:
        return int(self.low.shape[0])

    def __getitem__(self, index) -> "FakePrompt":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda t: t[index])

    def expand(self, batch: int) -> "FakePrompt":
        assert len(self) == 1
        return self._map(lambda t: t.expand(batch, *t.shape[1:]))

    def to(self, *args, **kwargs) -> "FakePrompt":
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "FakePrompt":
        return self._map(lambda t: t.detach())

    @staticmethod
    def cat(prompts) -> "FakePrompt":
        prompts = list(prompts)
        return FakePrompt(*(torch.cat([getattr(p, f.name) for p in prompts]) for f in fields(FakePrompt)))


class ThresholdModel(nn.Module):
    """Segments target pixels whose intensity lies in the reference structure's intensity range and
    that lie near where the structure is in the reference (``reach`` model pixels; None: anywhere) —
    appearance plus a spatial-correspondence prior, the two cues KSAM's heads use.

    The embedding is (grey, grey², 1 - grey, 1) at full resolution (G = S, which the contract's C×G×G
    allows), so decoding is pixel-exact. ``max_batch`` makes calls with a larger
    batch raise ``torch.OutOfMemoryError`` (to test the out-of-memory policy).
    """

    def __init__(self, image_size: int = 32, max_batch: int | None = None, confidence: float = 0.9,
                 reach: int | None = None) -> None:
        super().__init__()
        self.reach = reach
        self.config = SimpleNamespace(image_size=image_size, name="fake-threshold")
        self.scale = nn.Parameter(torch.tensor(400.0))  # logit steepness; a parameter so .to()/hashing work
        self.max_batch = max_batch
        self.confidence = confidence
        self.encoded_images = 0
        self.encode_calls = 0
        self.reference_calls = 0
        self.decoded_items = 0
        self.batch_sizes: list[int] = []

    def _check_batch(self, n: int) -> None:
        self.batch_sizes.append(n)
        if self.max_batch is not None and n > self.max_batch:
            raise torch.OutOfMemoryError(f"CUDA out of memory (fake): batch {n} > {self.max_batch}")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        s = self.config.image_size
        assert images.ndim == 4 and images.shape[1:] == (3, s, s), images.shape
        assert images.min() >= 0 and images.max() <= 1
        self._check_batch(images.shape[0])
        self.encode_calls += 1
        self.encoded_images += images.shape[0]
        grey = images.mean(dim=1, keepdim=True)
        return torch.cat([grey, grey ** 2, 1 - grey, torch.ones_like(grey)], dim=1) * (self.scale / 400.0)

    def encode_reference(self, ref_images, ref_masks, embeddings=None) -> FakePrompt:
        s = self.config.image_size
        assert ref_masks.shape == (ref_images.shape[0], 1, s, s), ref_masks.shape
        self.reference_calls += 1
        if embeddings is None:
            embeddings = self.encode(ref_images)
        grey = embeddings[:, 0]
        lows, highs = [], []
        for g, m in zip(grey, ref_masks[:, 0]):
            values = g[m > 0.99]
            if values.numel() == 0:
                lows.append(torch.tensor(2.0))
                highs.append(torch.tensor(-1.0))
                continue
            # robust range (a mask spilling over a boundary does not widen it) plus a fixed tolerance
            lo, hi = torch.quantile(values.float(), 0.1), torch.quantile(values.float(), 0.9)
            margin = 0.05
            lows.append(lo - margin)
            highs.append(hi + margin)
        region = (ref_masks > 0.5).to(grey.dtype)
        if self.reach is None:
            region = torch.ones_like(region)
        elif self.reach > 0:
            region = torch.nn.functional.max_pool2d(region, 2 * self.reach + 1, stride=1, padding=self.reach)
        return FakePrompt(torch.stack(lows).to(grey), torch.stack(highs).to(grey), region, embeddings)

    def decode(self, target_embeddings: torch.Tensor, reference: FakePrompt):
        batch = target_embeddings.shape[0]
        if len(reference) == 1 and batch > 1:
            reference = reference.expand(batch)
        assert len(reference) == batch
        self._check_batch(batch)
        self.decoded_items += batch
        grey = target_embeddings[:, :1] / (self.scale / 400.0)
        low = reference.low.view(-1, 1, 1, 1)
        high = reference.high.view(-1, 1, 1, 1)
        logits = self.scale * torch.minimum(grey - low, high - grey)
        logits = torch.where(reference.region > 0.5, logits, torch.full_like(logits, -20.0))
        iou = torch.full((batch,), self.confidence, dtype=logits.dtype, device=logits.device)
        iou = torch.where((logits > 0).flatten(1).any(1), iou, torch.full_like(iou, 0.05))
        return logits, iou


# ------------------------------------------------------------------------------ synthetic volumes

def blob_volume(shape=(12, 40, 48), geometry: Geometry | None = None, seed: int = 0, shift=(0, 0, 0),
                source: str = "") -> tuple[Image, Labels]:
    """A CT-like volume with two structures of distinct intensity: an off-centre, L-shaped "bright"
    (value 1) and a "dim" ellipsoid (value 3); asymmetric so any flip or transpose shows."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    nz, ny, nx = shape
    cz, cy, cx = nz / 2 + shift[0], ny / 2 + shift[1], nx / 2 + shift[2]
    labels = np.zeros(shape, np.uint8)
    bright = (np.abs(z - cz) < nz * 0.3) & (y > cy - ny * 0.35) & (y < cy - ny * 0.05) & (x > cx - nx * 0.4) & (x < cx - nx * 0.1)
    bright |= (np.abs(z - cz) < nz * 0.3) & (y > cy - ny * 0.35) & (y < cy + ny * 0.3) & (x > cx - nx * 0.4) & (x < cx - nx * 0.28)
    dim = ((z - cz) / (nz * 0.3)) ** 2 + ((y - cy - ny * 0.1) / (ny * 0.2)) ** 2 + ((x - cx - nx * 0.22) / (nx * 0.15)) ** 2 < 1
    labels[dim] = 3
    labels[bright] = 1
    hu = np.full(shape, -900.0)  # air
    body = ((y - ny / 2) / (ny * 0.48)) ** 2 + ((x - nx / 2) / (nx * 0.48)) ** 2 < 1
    hu[body] = -60.0  # fat-like background
    hu[labels == 3] = 60.0
    hu[labels == 1] = 200.0
    hu += rng.normal(0, 4, shape)
    geometry = geometry or Geometry(spacing=(0.9, 0.8, 2.0), origin=(-20.0, -15.0, 5.0))
    image = Image(hu.astype(np.int16), geometry, source=source or f"blob{seed}.nrrd")
    segs = [Segment("bright", 1, 0, (1.0, 0.2, 0.2), None, "Segment_1"), Segment("dim", 3, 0, (0.2, 0.4, 1.0))]
    return image, Labels(labels[None], geometry, segs, source=f"blob{seed}.seg.nrrd")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


# ------------------------------------------------------------------------- the fake keeps the contract

def test_fake_follows_the_model_contract():
    model = ThresholdModel(image_size=32)
    images = torch.rand(3, 3, 32, 32)
    masks = (torch.rand(3, 1, 32, 32) > 0.5).float()
    emb = model.encode(images)
    ref = model.encode_reference(images, masks, embeddings=emb)
    logits, iou = model.decode(emb, ref)
    assert logits.shape == (3, 1, 32, 32) and iou.shape == (3,)
    one = FakePrompt.cat([ref[0], ref[2]])
    assert len(one) == 2 and len(ref[1].expand(4)) == 4
    logits1, _ = model.decode(emb[:2], ref[1])  # a single reference broadcasts
    assert logits1.shape == (2, 1, 32, 32)


def test_real_model_has_the_same_interface():
    build = __import__("KnowledgeSAMLib.model.build", fromlist=["build_model"]).build_model
    model = build("tiny").eval()
    s = model.config.image_size
    images = torch.rand(2, 3, s, s)
    with torch.inference_mode():
        emb = model.encode(images)
        ref = model.encode_reference(images, (torch.rand(2, 1, s, s) > 0.5).float(), embeddings=emb)
        logits, iou = model.decode(emb, ref[0])
    assert logits.shape == (2, 1, s, s) and iou.reshape(2, -1).shape[0] == 2
    assert len(type(ref).cat([ref[0], ref[1]])) == 2


def test_fake_segments_by_reference_intensity():
    image, labels = blob_volume()
    model = ThresholdModel(image_size=48)
    grey = torch.from_numpy(np.clip((image.array[6].astype(np.float32) + 160) / 400, 0, 1))
    x = torch.zeros(1, 3, 48, 48)
    x[0, :, 4:44, :] = grey[None]
    m = torch.zeros(1, 1, 48, 48)
    m[0, 0, 4:44, :] = torch.from_numpy((labels.layers[0, 6] == 1).astype(np.float32))
    logits, _ = model.decode(model.encode(x), model.encode_reference(x, m))
    assert dice(logits[0, 0, 4:44].detach().numpy() > 0, labels.layers[0, 6] == 1) > 0.97
