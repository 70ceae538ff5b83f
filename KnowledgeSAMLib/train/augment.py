"""Batched, on-device augmentation of knowledge-prompt pairs.

Reference and target get *independent* small affine transforms (rotation, zoom, shift) and intensity
jitter: at inference the reference comes from another patient or slice and is never aligned, and
Knowledge Merge fuses the two at the same location, so the model must learn to tolerate misalignment
(spec §5.10). Each image and its mask share one transform. Flips are joint by default (see
``AugmentSection.flip``).

Random numbers are drawn on the CPU from the sampler's numpy generator (so resuming reproduces them) and
the warping runs with ``grid_sample`` on the training device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import AugmentSection

__all__ = ["random_affines", "warp", "jitter", "augment_pair_batch"]


def random_affines(rng: np.random.Generator, n: int, cfg: AugmentSection, flips: np.ndarray) -> np.ndarray:
    """``n`` 2×3 ``affine_grid`` matrices (output → input, normalised coordinates)."""
    angle = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg, n))
    zoom = rng.uniform(1.0 - cfg.scale, 1.0 + cfg.scale, n)
    shift = rng.uniform(-cfg.shift, cfg.shift, (n, 2)) * 2.0  # normalised coordinates span 2
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos, -sin, shift[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin, cos, shift[:, 1]
    theta[:, :, 0] *= np.where(flips, -1.0, 1.0)[:, None]  # mirror x of the sampling grid
    return theta


def warp(images: torch.Tensor, masks: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply one affine per sample to B×3×S×S images (bilinear) and B×1×S×S masks (bilinear, then > 0.5)."""
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    masks = F.grid_sample(masks.to(images.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return images, (masks > 0.5).to(images.dtype)


def jitter(images: torch.Tensor, rng: np.random.Generator, cfg: AugmentSection) -> torch.Tensor:
    """Per-sample gamma, contrast, brightness and Gaussian noise on images in [0, 1]."""
    n = images.shape[0]

    def col(values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(values, dtype=images.dtype, device=images.device).view(n, 1, 1, 1)

    gamma = col(np.exp(rng.uniform(-cfg.gamma, cfg.gamma, n)))
    contrast = col(rng.uniform(1.0 - cfg.contrast, 1.0 + cfg.contrast, n))
    brightness = col(rng.uniform(-cfg.brightness, cfg.brightness, n))
    out = images.clamp(0, 1).pow(gamma)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean + brightness
    if cfg.noise > 0:
        seed = int(rng.integers(2**62))
        generator = torch.Generator(device=images.device).manual_seed(seed)
        out = out + cfg.noise * torch.randn(out.shape, generator=generator, device=images.device, dtype=out.dtype)
    return out.clamp(0, 1)


def augment_pair_batch(target: torch.Tensor, target_mask: torch.Tensor, ref_image: torch.Tensor,
                       ref_mask: torch.Tensor, rng: np.random.Generator, cfg: AugmentSection
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a batch (float images B×3×S×S in [0, 1], masks B×1×S×S) with independent draws for
    reference and target; returns tensors of the same shapes."""
    if not cfg.enabled:
        return target, target_mask, ref_image, ref_mask
    n = target.shape[0]
    flip_t = rng.random(n) < cfg.flip_prob if cfg.flip != "none" else np.zeros(n, bool)
    if cfg.flip == "joint":
        flip_r = flip_t
    elif cfg.flip == "independent":
        flip_r = rng.random(n) < cfg.flip_prob
    else:
        flip_r = np.zeros(n, bool)
    device = target.device
    theta_t = torch.as_tensor(random_affines(rng, n, cfg, flip_t), dtype=torch.float32, device=device)
    theta_r = torch.as_tensor(random_affines(rng, n, cfg, flip_r), dtype=torch.float32, device=device)
    target, target_mask = warp(target, target_mask, theta_t)
    ref_image, ref_mask = warp(ref_image, ref_mask, theta_r)
    return jitter(target, rng, cfg), target_mask, jitter(ref_image, rng, cfg), ref_mask

