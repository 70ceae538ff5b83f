"""SAM's mask decoder, run with one prompt set per image.

Upstream ``MaskDecoder.predict_masks`` repeats the image embedding once per prompt set
(``repeat_interleave``): it is built for one image with many prompts and breaks for B images with B
prompt sets (B² rows). KSAM needs one prompt set per image, so this subclass re-implements
``predict_masks`` with the same pretrained submodules and parameter names (SAM checkpoints load as is).
"""

from __future__ import annotations

import torch

from ._sam_import import MaskDecoder


class BatchedMaskDecoder(MaskDecoder):
    def predict_batched(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                        prompt_tokens: torch.Tensor, dense_prompt: torch.Tensor,
                        mask_index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """B×C×G×G embeddings, 1×C×G×G PE, B×K×C tokens, B×C×G×G dense → (B×1×4G×4G logits, B IoU).

        ``mask_index`` 0 is SAM's single-mask output, the one trained for unambiguous prompts.
        """
        masks, iou = self.predict_masks(image_embeddings, image_pe, prompt_tokens, dense_prompt)
        return masks[:, mask_index : mask_index + 1], iou[:, mask_index]

    def predict_masks(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor,
                      sparse_prompt_embeddings: torch.Tensor,
                      dense_prompt_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = image_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.to(sparse_prompt_embeddings.dtype).unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(batch, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        b, c, h, w = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, c, h * w)).reshape(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_token_out)
