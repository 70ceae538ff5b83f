"""KSAM: SAM + PrAdaptor + Knowledge Merge + Prompt Merge, decoding with SAM's mask decoder.

Data flow (KSAM_SPEC §5.1)::

    IE = Enc(target)                      SE = Enc(ref_image)
    DE_0, DE_1 = PrEnc(PrAdaptor(ref_image, ref_mask))
    mergedE = KM(IE, SE + DE_0 + DE_1)    promptE = PM(IE, SE, DE_0, DE_1)
    logits = Decoder(mergedE, promptE)

The split into :meth:`KSAM.encode`, :meth:`KSAM.encode_reference` and :meth:`KSAM.decode` lets volume
inference encode each target slice once, cache each reference once, and run only the light heads per
(target slice, structure) pair.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .config import KSAMConfig
from .lora import inject_lora


@dataclass
class ReferencePrompt:
    """The encoded knowledge prompt: SE, DE_0 and DE_1 (each B×C×G×G) and the reference structure's box (B×4,
    x0, y0, x1, y1 in model pixels; used as a box prompt when ``config.box_prompt == "reference"``). Cache it."""

    embedding: torch.Tensor
    de0: torch.Tensor
    de1: torch.Tensor
    box: torch.Tensor

    def _map(self, fn) -> "ReferencePrompt":
        return ReferencePrompt(*(fn(getattr(self, f.name)) for f in fields(self)))

    def __len__(self) -> int:
        return int(self.embedding.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> "ReferencePrompt":
        if isinstance(index, int):
            index = slice(index, index + 1)
        return self._map(lambda t: t[index])

    def expand(self, batch: int) -> "ReferencePrompt":
        if len(self) != 1:
            raise ValueError(f"only a single reference can be expanded, this one has {len(self)}")
        return self._map(lambda t: t.expand(batch, *t.shape[1:]))

    def to(self, *args, **kwargs) -> "ReferencePrompt":
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "ReferencePrompt":
        return self._map(lambda t: t.detach())

    @staticmethod
    def cat(prompts: Iterable["ReferencePrompt"]) -> "ReferencePrompt":
        prompts = list(prompts)
        return ReferencePrompt(*(torch.cat([getattr(p, f.name) for p in prompts]) for f in fields(ReferencePrompt)))


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """B×1×S×S masks → B×4 boxes (x0, y0, x1, y1, inclusive pixel indices) of their foreground (> 0.5); an empty
    mask gives the whole frame."""
    fg = masks[:, 0] > 0.5
    size_y, size_x = fg.shape[-2:]
    rows, cols = fg.any(dim=-1), fg.any(dim=-2)  # B×S
    ys = torch.arange(size_y, device=masks.device).expand_as(rows)
    xs = torch.arange(size_x, device=masks.device).expand_as(cols)
    big = torch.tensor(1 << 30, device=masks.device)
    y0 = torch.where(rows, ys, big).amin(dim=-1)
    y1 = torch.where(rows, ys, -big).amax(dim=-1)
    x0 = torch.where(cols, xs, big).amin(dim=-1)
    x1 = torch.where(cols, xs, -big).amax(dim=-1)
    empty = ~rows.any(dim=-1)
    box = torch.stack([x0, y0, x1, y1], dim=-1)
    whole = torch.tensor([0, 0, size_x - 1, size_y - 1], device=masks.device)
    return torch.where(empty[:, None], whole, box).to(masks.dtype)


class KSAM(nn.Module):
    """The assembled model; build it with :func:`KnowledgeSAMLib.model.build.build_model`."""

    def __init__(self, *, config: KSAMConfig, image_encoder: nn.Module, prompt_encoder: nn.Module,
                 mask_decoder: nn.Module, adaptor: nn.Module, knowledge_merge: nn.Module | None = None,
                 prompt_merge: nn.Module | None = None) -> None:
        """Arguments:
          config: the configuration the parts were built from (kept for saving, engine sizes, provenance).
          image_encoder: B×3×S×S normalised images → B×C×G×G embeddings (SAM's ViT or TinyViT), with any
            pretrained weights already loaded: LoRA is injected here, after them.
          prompt_encoder: SAM's prompt encoder; its ``mask_downscaling`` is PrEnc for DE_0 and DE_1.
          mask_decoder: SAM's mask decoder able to decode one prompt set per image (``BatchedMaskDecoder``).
          adaptor: the PrAdaptor (reference image and mask → two mask-prompt maps).
          knowledge_merge: KM, or None for the ablation without it (mergedE = IE).
          prompt_merge: PM, or None for the ablation without it (no prompt tokens).
        """
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.adaptor = adaptor
        self.knowledge_merge = knowledge_merge
        self.prompt_merge = prompt_merge
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(1, 3, 1, 1) / 255.0, persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(1, 3, 1, 1) / 255.0, persistent=False)
        self._runtimes: dict[str, tuple[object, tuple]] = {}  # part -> (runtime, weight stamp): see encoder_runtime
        self._pinned: dict[str, object] | None = None  # part -> runtime checked once: see runtimes_pinned
        self._set_trainable()

    # --- construction ---------------------------------------------------------------------------
    def _set_trainable(self) -> None:
        cfg = self.config
        if cfg.encoder_training == "lora":
            inject_lora(self.image_encoder, cfg)  # freezes the base weights, LoRA trainable
        else:
            self.image_encoder.requires_grad_(cfg.encoder_training == "full")
        self.prompt_encoder.requires_grad_(cfg.train_prompt_encoder)
        self.mask_decoder.requires_grad_(not cfg.freeze_decoder)

    # --- the three stages -------------------------------------------------------------------------
    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB → SAM's mean/std normalisation."""
        return (images - self.pixel_mean.to(images.dtype)) / self.pixel_std.to(images.dtype)

    def _check_images(self, images: torch.Tensor, what: str) -> None:
        s = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (s, s):
            raise ValueError(f"{what} must be B×3×{s}×{s}, got {tuple(images.shape)}")

    # --- optional inference runtimes (e.g. OpenVINO on the CPU) for the encoder and for the heads ---------
    def _stamp(self, part: str) -> tuple:
        """Storage pointers and version counters of the tensors a runtime was built from: they change when the
        weights do (training steps, loading, in-place edits). Read from the part's own tensors: this runs on
        every encode/decode, where building the whole state dict cost about a millisecond."""
        if part == "heads":
            modules = [m for name, m in self.named_children() if name != "image_encoder"]
            own = [*self.parameters(recurse=False), *self.buffers(recurse=False)]
        else:
            modules, own = [self.image_encoder], []
        tensors = own + [t for m in modules for t in (*m.parameters(), *m.buffers())]
        return tuple((t.data_ptr(), int(getattr(t, "_version", 0))) for t in tensors)

    def _get_runtime(self, part: str):
        pinned = getattr(self, "_pinned", None)
        if pinned is not None and part in pinned:
            return pinned[part]
        runtime = self._checked_runtime(part)
        if pinned is not None:
            pinned[part] = runtime
        return runtime

    def _checked_runtime(self, part: str):
        entry = self._runtimes.get(part)
        if entry is None:
            return None
        runtime, stamp = entry
        if stamp != self._stamp(part):
            del self._runtimes[part]
            return None
        return runtime

    @contextmanager
    def runtimes_pinned(self) -> Iterator[None]:
        """Within this block each runtime's weight stamp is checked once, not on every encode/decode call.

        For inference calls, whose weights cannot change under them: reading the stamp walks every module and
        cost about 2 ms a call, 9 % of an annotator's update (25 head calls) and 0.3 s of a focused CT run.
        Re-entrant; setting a runtime inside the block takes effect at once."""
        outer = getattr(self, "_pinned", None)
        if outer is None:
            self._pinned = {}
        try:
            yield
        finally:
            if outer is None:
                self._pinned = None

    def _set_runtime(self, part: str, runtime) -> None:
        if getattr(self, "_pinned", None) is not None:
            self._pinned[part] = runtime  # built for the weights as they are now
        if runtime is None:
            self._runtimes.pop(part, None)
        else:
            self._runtimes[part] = (runtime, self._stamp(part))

    @property
    def encoder_runtime(self):
        """A callable replacing ``image_encoder`` for calls without gradients on the CPU (None: PyTorch). It is
        dropped as soon as the encoder's weights change (training, loading), so it never serves stale weights."""
        return self._get_runtime("encoder")

    @encoder_runtime.setter
    def encoder_runtime(self, runtime) -> None:
        self._set_runtime("encoder", runtime)

    @property
    def heads_runtime(self):
        """A callable ``(IE, SE, DE_0, DE_1) -> (logits, IoU)`` replacing :meth:`decode_in_torch` for calls without
        gradients on the CPU (None: PyTorch); dropped as soon as any tensor outside the encoder changes."""
        return self._get_runtime("heads")

    @heads_runtime.setter
    def heads_runtime(self, runtime) -> None:
        self._set_runtime("heads", runtime)

    def __getstate__(self) -> dict:
        """Copies and pickles run in PyTorch: a runtime session is not copyable and belongs to these weights."""
        state = self.__dict__.copy()
        state["_runtimes"] = {}
        state["_pinned"] = None
        return state

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×S×S images in [0, 1] → B×C×G×G embeddings (IE for targets, SE for references)."""
        self._check_images(images, "images")
        runtime = self.encoder_runtime if not torch.is_grad_enabled() and images.device.type == "cpu" else None
        if runtime is not None:
            return runtime(self.normalise(images))
        return self.image_encoder(self.normalise(images))

    def encode_reference(self, ref_images: torch.Tensor, ref_masks: torch.Tensor,
                         embeddings: torch.Tensor | None = None) -> ReferencePrompt:
        """The knowledge prompt (image + mask of the wanted structure) → :class:`ReferencePrompt`.

        Pass ``embeddings`` when the reference images were already encoded (e.g. a neighbouring target
        slice in propagation mode) to skip the encoder.
        """
        self._check_images(ref_images, "reference images")
        if ref_masks.ndim != 4 or ref_masks.shape[1] != 1 or ref_masks.shape[-2:] != ref_images.shape[-2:]:
            raise ValueError(f"reference masks must be B×1×S×S, got {tuple(ref_masks.shape)}")
        if embeddings is None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and self.config.ref_encoder_grad):
                embeddings = self.encode(ref_images)
        instance, mask = self.adaptor(self.normalise(ref_images), ref_masks)
        downscale = self.prompt_encoder.mask_downscaling  # shared PrEnc for both (DE_0, DE_1)
        return ReferencePrompt(embeddings, downscale(instance), downscale(mask), mask_boxes(ref_masks.float()))

    def head_inputs(self, reference: ReferencePrompt) -> tuple[torch.Tensor, ...]:
        """The reference tensors the heads read (what an exported heads graph takes after IE)."""
        tensors = (reference.embedding, reference.de0, reference.de1)
        return tensors + (reference.box,) if self.config.box_prompt == "reference" else tensors

    def decode(self, target_embeddings: torch.Tensor, reference: ReferencePrompt) -> tuple[torch.Tensor, torch.Tensor]:
        """Heads on cached embeddings → (B×1×S×S logits, B IoU-head scores)."""
        runtime = None
        if not torch.is_grad_enabled() and target_embeddings.device.type == "cpu":
            runtime = self.heads_runtime
        if runtime is None:
            return self.decode_in_torch(target_embeddings, reference)
        batch = target_embeddings.shape[0]
        if len(reference) == 1 and batch > 1:
            reference = reference.expand(batch)
        if len(reference) != batch:
            raise ValueError(f"{batch} target embeddings but {len(reference)} references")
        return runtime(target_embeddings, *self.head_inputs(reference))

    def decode_in_torch(self, target_embeddings: torch.Tensor,
                        reference: ReferencePrompt) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`decode` in PyTorch (the reference, the training path, and what the heads' runtime exports)."""
        batch = target_embeddings.shape[0]
        if len(reference) == 1 and batch > 1:
            reference = reference.expand(batch)
        if len(reference) != batch:
            raise ValueError(f"{batch} target embeddings but {len(reference)} references")
        ie, se, de0, de1 = target_embeddings, reference.embedding, reference.de0, reference.de1
        merged = self.knowledge_merge(ie, se + de0 + de1) if self.knowledge_merge is not None else ie
        dense_pe = self.prompt_encoder.get_dense_pe().to(ie.dtype)
        if self.prompt_merge is not None:
            query = merged if self.config.pm_query == "merged" else ie
            tokens = self.prompt_merge(query, se, de0, de1, dense_pe)
        else:
            tokens = ie.new_zeros(batch, 0, ie.shape[1])
        if self.config.box_prompt == "reference":  # the pretrained decoder's own prompt, from the knowledge
            box_tokens, _ = self.prompt_encoder(points=None, boxes=reference.box.to(ie.dtype), masks=None)
            tokens = torch.cat([box_tokens.to(ie.dtype), tokens], dim=1)
        if self.config.dense_prompt == "reference":
            dense = de0 + de1
        else:
            g = self.config.grid_size
            dense = self.prompt_encoder.no_mask_embed.weight.to(ie.dtype).reshape(1, -1, 1, 1).expand(batch, -1, g, g)
        low_res, iou = self.mask_decoder.predict_batched(merged, dense_pe, tokens, dense)
        size = (self.config.image_size, self.config.image_size)
        return F.interpolate(low_res, size=size, mode="bilinear", align_corners=False), iou

    def predict(self, target: torch.Tensor, ref_image: torch.Tensor,
                ref_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Like :meth:`forward`, also returning the IoU-head scores (B) that training supervises."""
        self._check_images(target, "target")
        if self.config.ref_encoder_grad and target.shape == ref_image.shape:
            both = self.encode(torch.cat([target, ref_image]))  # one encoder call for both
            ie, se = both.split(target.shape[0])
        else:
            ie, se = self.encode(target), None
        reference = self.encode_reference(ref_image, ref_mask, embeddings=se)
        return self.decode(ie, reference)

    def forward(self, target: torch.Tensor, ref_image: torch.Tensor, ref_mask: torch.Tensor) -> torch.Tensor:
        """B×3×S×S target and reference images in [0, 1], B×1×S×S reference mask → B×1×S×S logits."""
        return self.predict(target, ref_image, ref_mask)[0]

    # --- bookkeeping ------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, dict[str, int]]:
        """Total and trainable parameter counts per part (LoRA counted separately from the encoder)."""
        groups: dict[str, dict[str, int]] = {}
        for name, param in self.named_parameters():
            part = name.split(".")[0]
            if part == "image_encoder" and "lora_" in name:
                part = "lora"
            entry = groups.setdefault(part, {"total": 0, "trainable": 0})
            entry["total"] += param.numel()
            entry["trainable"] += param.numel() if param.requires_grad else 0
        return groups

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]
