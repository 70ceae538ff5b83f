"""Prompt-free SAM (SAMed-style): the same encoder and decoder, one output mask per fixed structure.

Why: it is what a user would train for a *known* set of structures — no prompt at all. SAMed drops the
prompts (empty sparse tokens, SAM's "no mask" dense embedding) and widens the decoder to one mask token
per class. Here each structure gets its own mask token and its own sigmoid (multi-label, so nested
structures such as disc ⊃ cup are both representable), trained with the same BCE + Dice loss as KSAM.
Its limit is the point of the comparison: it can only output structures that were in its head at
training time.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from KnowledgeSAMLib.model.config import KSAMConfig, get_config

from .prompted_sam import SAMBase

__all__ = ["PromptFreeSAM", "build_prompt_free_sam"]


class PromptFreeSAM(SAMBase):
    """``forward(images) -> B×T×S×S`` logits, channel t = ``structures[t]``."""

    kind = "prompt_free"

    def __init__(self, config: KSAMConfig, structures: Sequence[str]) -> None:
        structures = list(dict.fromkeys(structures))
        if not structures:
            raise ValueError("a prompt-free model needs at least one structure")
        # SAM's decoder has num_multimask_outputs + 1 mask tokens: one per structure
        super().__init__(config.replace(decoder_multimask_outputs=len(structures) - 1))
        self.structures = structures

    def channel(self, structure: str) -> int:
        """The output channel of ``structure``; KeyError for a structure the head does not have."""
        try:
            return self.structures.index(structure)
        except ValueError:
            raise KeyError(f"structure {structure!r} is not in this prompt-free model's head "
                           f"({', '.join(self.structures)})") from None

    def decode(self, embeddings: torch.Tensor) -> torch.Tensor:
        batch = embeddings.shape[0]
        sparse = embeddings.new_zeros(batch, 0, embeddings.shape[1])  # no prompt tokens
        g = self.config.grid_size
        dense = self.prompt_encoder.no_mask_embed.weight.to(embeddings.dtype).reshape(1, -1, 1, 1)
        masks, _ = self.mask_decoder.predict_masks(
            embeddings, self.prompt_encoder.get_dense_pe().to(embeddings.dtype), sparse,
            dense.expand(batch, -1, g, g))
        return self._upscale(masks)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def metadata(self) -> dict[str, Any]:
        meta = super().metadata()
        meta["config"]["decoder_multimask_outputs"] = self.config.decoder_multimask_outputs
        return {**meta, "structures": list(self.structures)}


def build_prompt_free_sam(config: str | KSAMConfig, structures: Sequence[str]) -> PromptFreeSAM:
    return PromptFreeSAM(get_config(config) if isinstance(config, str) else config, structures)
