"""KSAM configuration: every size and every open design choice of the paper in one dataclass.

The paper fixes SAM ViT-B at 512×512 with LoRA r=4 and says little else; each unresolved choice
(KSAM_SPEC.md §5.8) is a field here so ablations can probe it. Named configs:

* ``vit_b`` — the paper's setting: SAM ViT-B at 512 px (load the official checkpoint with
  ``build_model("vit_b", sam_checkpoint=PATH)``), LoRA r=4 on qkv + MLP, ≈87.3 M frozen encoder parameters.
* ``small`` — a from-scratch model that a CPU can train in tens of minutes (the embedded default model).
* ``tiny`` — for fast tests (a forward + backward pass in well under a second).

Measured per-slice forward times (``python bench/speed.py``, 2 CPU threads of an x86_64 VM, torch 2.13 CPU,
batch 4, random weights): encoder / heads on cached embeddings / whole KSAM pass (target + reference
encoder + heads) — ``tiny`` 0.7 / 2.4 / 3.6 ms, ``small`` 6.7 / 10.7 / 18.9 ms, ``vit_b`` at 512 px
1,866 / 324 / 4,024 ms. Training ``small``: 0.92 steps/s with 2 processes × batch 8 (1 thread each).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Literal

EncoderTraining = Literal["lora", "full", "frozen"]


@dataclass
class KSAMConfig:
    """All hyper-parameters of a KSAM model (serialised to ``config.json`` next to the weights)."""

    name: str = "vit_b"
    image_size: int = 512  # S: model input is S×S, output logits S×S

    # --- SAM image encoder (ViT) -------------------------------------------------------------
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_mlp_ratio: float = 4.0
    encoder_window_size: int = 14
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    prompt_dim: int = 256  # C: neck output channels = prompt/decoder width
    # How the encoder learns: "lora" (frozen base + peft LoRA, the paper), "full" (all weights train —
    # for small models trained from scratch), "frozen".
    encoder_training: EncoderTraining = "lora"
    lora_rank: int = 4
    lora_alpha: float = 4.0  # scaling = alpha / rank; 4/4 = 1 (SAMed); MedSA's loralib default is 1/4
    lora_dropout: float = 0.0
    # peft regex (re.fullmatch on module names inside the image encoder). Default: MedSA-like qkv + MLP.
    lora_target_modules: str = r"blocks\.\d+\.(attn\.qkv|mlp\.lin1|mlp\.lin2)"
    ref_encoder_grad: bool = True  # False: reference embedding under no_grad (lighter, LoRA learns from target only)

    # --- SAM prompt encoder (reused for the reference: DE_0, DE_1) ----------------------------
    mask_in_chans: int = 16
    train_prompt_encoder: bool = True

    # --- PrAdaptor ---------------------------------------------------------------------------
    adaptor_hidden: int = 16
    adaptor_instance_mode: Literal["image", "image+mask"] = "image"

    # --- Knowledge Merge ---------------------------------------------------------------------
    use_km: bool = True
    km_widths: tuple[int, int, int] = (128, 128, 128)
    km_norm_groups: int = 1

    # --- Prompt Merge ------------------------------------------------------------------------
    use_pm: bool = True
    pm_depth: int = 4
    pm_num_heads: int = 8
    pm_attention_downsample: int = 2
    pm_mlp_dim: int = 1024
    pm_tokens: int = 16  # prompt tokens handed to the decoder (a square number, or grid² for "all")
    pm_query: Literal["image", "merged"] = "image"  # PM query stream: IE (default) or mergedE
    mask_attention: Literal["key_gate", "none"] = "key_gate"  # Eq. 3: sigmoid(DE_1) gate on attention
    parser_normalise: bool = True  # divide the parser output by C and LayerNorm it (stability)
    parser_mix_hidden: int = 12

    # --- Mask decoder ------------------------------------------------------------------------
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    decoder_iou_hidden: int = 256
    decoder_multimask_outputs: int = 3
    freeze_decoder: bool = False
    # Dense prompt added to the image embedding in the decoder: SAM's "no mask" embedding (default), or
    # the reference's DE_0 + DE_1 (the paper's "KP only" ablation row).
    dense_prompt: Literal["no_mask", "reference"] = "no_mask"

    # --- Pre-processing (SAM's, applied by the model to [0, 1] inputs) -----------------------
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)

    # --- Provenance ----------------------------------------------------------------------------
    # SHA256 of the SAM checkpoint the frozen encoder weights come from (None: no pretrained SAM).
    sam_checkpoint_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (e.g. intensity preset)

    def __post_init__(self) -> None:
        self.encoder_global_attn_indexes = tuple(int(i) for i in self.encoder_global_attn_indexes)
        self.km_widths = tuple(int(w) for w in self.km_widths)  # type: ignore[assignment]
        self.pixel_mean = tuple(float(v) for v in self.pixel_mean)  # type: ignore[assignment]
        self.pixel_std = tuple(float(v) for v in self.pixel_std)  # type: ignore[assignment]
        self.validate()

    # ------------------------------------------------------------------------------------------
    @property
    def grid_size(self) -> int:
        """G: side of the embedding grid (image_size / patch_size)."""
        return self.image_size // self.patch_size

    @property
    def mask_input_size(self) -> int:
        """Side of the mask fed to SAM's mask_downscaling (4·G)."""
        return 4 * self.grid_size

    def validate(self) -> None:
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.use_km and self.grid_size % 4:
            problems.append(f"Knowledge Merge halves the {self.grid_size}² grid twice: it must be divisible by 4")
        tokens_side = round(self.pm_tokens ** 0.5)
        if tokens_side ** 2 != self.pm_tokens or tokens_side > self.grid_size:
            problems.append(f"pm_tokens {self.pm_tokens} must be a square number of at most {self.grid_size}²")
        if self.encoder_training not in ("lora", "full", "frozen"):
            problems.append(f"encoder_training must be lora, full or frozen, not {self.encoder_training!r}")
        if any(i >= self.encoder_depth for i in self.encoder_global_attn_indexes):
            problems.append("encoder_global_attn_indexes must be < encoder_depth")
        if self.prompt_dim % self.pm_num_heads or self.prompt_dim % self.decoder_num_heads:
            problems.append("prompt_dim must be divisible by pm_num_heads and decoder_num_heads")
        if problems:
            raise ValueError("Invalid KSAMConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "KSAMConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown KSAMConfig fields: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "KSAMConfig":
        return dataclasses.replace(self, **changes)


def _vit_b() -> KSAMConfig:
    return KSAMConfig(name="vit_b")


def _small() -> KSAMConfig:
    # 128 px, 16×16 grid: a 4-block ViT trained from scratch ("full"), narrow heads. Sized so a CPU
    # trains it in tens of minutes (the default model: 2400 steps × 16 pairs in 44 min on 2 cores) and
    # segments a slice in ~19 ms; the ROI crops it is made for (kidney, hippocampus, optic disc) fit 128 px.
    return KSAMConfig(
        name="small",
        image_size=128,
        patch_size=8,
        encoder_embed_dim=128,
        encoder_depth=4,
        encoder_num_heads=4,
        encoder_window_size=8,
        encoder_global_attn_indexes=(1, 3),
        prompt_dim=64,
        encoder_training="full",
        # SAM's mask_downscaling LayerNorms over mask_in_chans/4 channels; with 2 channels a random init
        # can map a 0 and a 1 patch to the same sign pattern and hide the mask entirely, so use >= 16.
        mask_in_chans=32,
        km_widths=(64, 64, 64),
        km_norm_groups=1,
        pm_depth=4,
        pm_num_heads=4,
        pm_mlp_dim=128,
        pm_tokens=16,
        decoder_depth=2,
        decoder_mlp_dim=256,
        decoder_num_heads=4,
        decoder_iou_hidden=64,
    )


def _tiny() -> KSAMConfig:
    # KSAM_SPEC §5.1 tiny column: 64 px, 8×8 grid, LoRA on a 2-block ViT (exercises peft in tests).
    return KSAMConfig(
        name="tiny",
        image_size=64,
        patch_size=8,
        encoder_embed_dim=32,
        encoder_depth=2,
        encoder_num_heads=2,
        encoder_window_size=4,
        encoder_global_attn_indexes=(1,),
        prompt_dim=32,
        encoder_training="lora",
        mask_in_chans=16,
        km_widths=(16, 16, 16),
        pm_depth=4,
        pm_num_heads=2,
        pm_mlp_dim=64,
        pm_tokens=4,
        decoder_depth=2,
        decoder_mlp_dim=64,
        decoder_num_heads=2,
        decoder_iou_hidden=32,
    )


NAMED_CONFIGS = {"vit_b": _vit_b, "small": _small, "tiny": _tiny}


def get_config(name: str) -> KSAMConfig:
    """A fresh copy of a named configuration (``vit_b``, ``small``, ``tiny``)."""
    try:
        return NAMED_CONFIGS[name]()
    except KeyError:
        raise ValueError(f"Unknown model config {name!r}; choose one of {', '.join(NAMED_CONFIGS)}") from None

