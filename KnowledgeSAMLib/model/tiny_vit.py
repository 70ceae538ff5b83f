"""TinyViT, the image encoder of LiteMedSAM (MedSAM distilled into a 5.7 M-parameter network).

Written here from the published architecture (TinyViT: Wu et al., ECCV 2022; MobileSAM's SAM variant with the
LiteMedSAM changes) so that no ``timm`` / ``torchvision`` import is needed: PyPI's torchvision does not import
beside the local CPU torch build. Parameter names follow the LiteMedSAM checkpoint (``image_encoder.*``), so its
weights load strictly.

Shape of the network at 256 px (the LiteMedSAM setting)::

    patch_embed   two 1×1 conv+BN (3 → 32 → 64), full resolution 256²
    layers[0]     2 MBConv blocks (64 ch, 256²)          → merge, stride 2 → 128 ch, 128²
    layers[1]     2 window-attention blocks (128, w 7)   → merge, stride 2 → 160 ch, 64²
    layers[2]     6 window-attention blocks (160, w 14)  → merge, stride 1 → 320 ch, 64²
    layers[3]     2 window-attention blocks (320, w 7)
    neck          1×1 conv → LayerNorm2d → 3×3 conv → LayerNorm2d: 256 ch, 64² (SAM's embedding)

Nothing here depends on the absolute input size except through the grid: the attention biases are relative
to a window, so the same weights run at other sizes (the grid is always ``image_size / 4``).
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm (children ``c`` and ``bn``, as in the checkpoint)."""

    def __init__(self, *, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1) -> None:
        """Arguments:
          in_channels: channels of the input map.
          out_channels: channels of the output map.
          kernel_size: square kernel; padding keeps the size ("same") for odd kernels.
          stride: convolution stride.
          groups: ``in_channels`` for a depthwise convolution.
        """
        super().__init__()
        self.add_module("c", nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2,
                                       groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_channels))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a B×C×H×W map (SAM's neck normalisation)."""

    def __init__(self, *, channels: int, eps: float = 1e-6) -> None:
        """Arguments:
          channels: channels of the map (the size of the learnt scale and shift).
          eps: added to the variance before the square root.
        """
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - mean) / torch.sqrt(var + self.eps)) + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    """Two pointwise conv+BN layers with a GELU between: LiteMedSAM keeps the full input resolution here."""

    def __init__(self, *, in_channels: int, embed_dim: int) -> None:
        """Arguments:
          in_channels: image channels.
          embed_dim: channels of the output map (the first stage's width; the hidden layer has half).
        """
        super().__init__()
        self.seq = nn.Sequential(ConvBN(in_channels=in_channels, out_channels=embed_dim // 2), nn.GELU(),
                                 ConvBN(in_channels=embed_dim // 2, out_channels=embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: pointwise expand → depthwise 3×3 → pointwise project, residual, GELU after the sum."""

    def __init__(self, *, channels: int, expand_ratio: float) -> None:
        """Arguments:
          channels: channels of the input and output map.
          expand_ratio: hidden channels of the depthwise convolution relative to ``channels``.
        """
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = ConvBN(in_channels=channels, out_channels=hidden)
        self.conv2 = ConvBN(in_channels=hidden, out_channels=hidden, kernel_size=3, groups=hidden)
        self.conv3 = ConvBN(in_channels=hidden, out_channels=channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv1(x))
        y = self.act(self.conv2(y))
        return self.act(self.conv3(y) + x)


class PatchMerging(nn.Module):
    """Pointwise → depthwise 3×3 (stride 2, or 1 for the last stage of the SAM variant) → pointwise.

    Takes a B×C×H×W map or B×N×C tokens on an ``H×W`` grid, returns B×N'×C' tokens.
    """

    def __init__(self, *, in_dim: int, out_dim: int, stride: int) -> None:
        """Arguments:
          in_dim: channels of the input.
          out_dim: channels of the output tokens.
          stride: stride of the depthwise 3×3 convolution (2 halves the grid, 1 keeps it).
        """
        super().__init__()
        self.conv1 = ConvBN(in_channels=in_dim, out_channels=out_dim)
        self.conv2 = ConvBN(in_channels=out_dim, out_channels=out_dim, kernel_size=3, stride=stride, groups=out_dim)
        self.conv3 = ConvBN(in_channels=out_dim, out_channels=out_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if x.ndim == 3:
            x = x.transpose(1, 2).reshape(x.shape[0], -1, *grid)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a ``window×window`` window with a learnt bias per head and offset.

    The bias depends only on the absolute offset (|dy|, |dx|) between two positions of the window, so the
    table has one entry per distinct offset. q, k and v are interleaved per head in ``qkv``'s output
    (``[q_h, k_h, v_h]`` for each head h), the layout of the pretrained weights.
    """

    def __init__(self, *, dim: int, num_heads: int, window: int) -> None:
        """Arguments:
          dim: token width.
          num_heads: attention heads (must divide dim).
          window: side of the square attention window, in tokens.
        """
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        points = list(itertools.product(range(window), range(window)))
        offsets: dict[tuple[int, int], int] = {}
        index = [offsets.setdefault((abs(a[0] - b[0]), abs(a[1] - b[1])), len(offsets)) for a in points for b in points]
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, len(offsets)))
        self.register_buffer("bias_index", torch.tensor(index).view(len(points), len(points)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×N×C tokens of whole windows (N = window²) → B×N×C."""
        b, n, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3 * self.head_dim).permute(0, 2, 1, 3)
        q, k, v = qkv.split(self.head_dim, dim=-1)
        bias = self.attention_biases[:, self.bias_index].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, n, -1))


class MLP(nn.Module):
    """LayerNorm → Linear → GELU → Linear (the norm lives inside, as in TinyViT)."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        """Arguments:
          dim: token width (input and output).
          hidden: width of the hidden layer.
        """
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Window attention (residual) → depthwise 3×3 conv+BN on the grid → MLP (residual)."""

    def __init__(self, *, dim: int, num_heads: int, window: int, mlp_ratio: float, local_conv: int) -> None:
        """Arguments:
          dim: token width.
          num_heads: attention heads.
          window: side of the square attention window; the grid is zero-padded to a multiple of it.
          mlp_ratio: hidden width of the MLP relative to ``dim``.
          local_conv: kernel of the depthwise convolution between attention and MLP.
        """
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim=dim, num_heads=num_heads, window=window)
        self.local_conv = ConvBN(in_channels=dim, out_channels=dim, kernel_size=local_conv, groups=dim)
        self.mlp = MLP(dim=dim, hidden=int(dim * mlp_ratio))

    def _windows(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Attention over non-overlapping windows of the (zero-padded) grid."""
        b, _, c = x.shape
        h, w = grid
        s = self.window
        if (h, w) == (s, s):
            return self.attn(x)
        pad_h, pad_w = (s - h % s) % s, (s - w % s) % s
        x = F.pad(x.view(b, h, w, c), (0, 0, 0, pad_w, 0, pad_h))
        nh, nw = (h + pad_h) // s, (w + pad_w) // s
        x = x.view(b, nh, s, nw, s, c).transpose(2, 3).reshape(b * nh * nw, s * s, c)
        x = self.attn(x).view(b, nh, nw, s, s, c).transpose(2, 3).reshape(b, nh * s, nw * s, c)
        return x[:, :h, :w].reshape(b, h * w, c)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        x = x + self._windows(x, grid)
        x = self.local_conv(x.transpose(1, 2).reshape(b, c, *grid)).view(b, c, n).transpose(1, 2)
        return x + self.mlp(x)


class ConvStage(nn.Module):
    """The first stage: MBConv blocks on the full-resolution map, then a merge."""

    def __init__(self, *, dim: int, depth: int, expand_ratio: float, out_dim: int, stride: int) -> None:
        """Arguments:
          dim: channels of the stage.
          depth: number of :class:`MBConv` blocks.
          expand_ratio: expansion of each MBConv block.
          out_dim: channels after the merge (the next stage's width).
          stride: stride of the merge.
        """
        super().__init__()
        self.blocks = nn.ModuleList(MBConv(channels=dim, expand_ratio=expand_ratio) for _ in range(depth))
        self.downsample = PatchMerging(in_dim=dim, out_dim=out_dim, stride=stride)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        for block in self.blocks:
            x = block(x)
        grid = (x.shape[-2], x.shape[-1])
        out_grid = (-(-grid[0] // self.downsample.conv2.c.stride[0]), -(-grid[1] // self.downsample.conv2.c.stride[1]))
        return self.downsample(x, grid), out_grid


class AttentionStage(nn.Module):
    """Window-attention blocks on tokens, then an optional merge."""

    def __init__(self, *, dim: int, depth: int, num_heads: int, window: int, mlp_ratio: float, local_conv: int,
                 out_dim: int | None, stride: int) -> None:
        """Arguments:
          dim: token width of the stage.
          depth: number of :class:`TinyViTBlock` s.
          num_heads, window, mlp_ratio, local_conv: of each block (see :class:`TinyViTBlock`).
          out_dim: channels after the merge (the next stage's width); None: no merge (the last stage).
          stride: stride of the merge (unused without one).
        """
        super().__init__()
        self.blocks = nn.ModuleList(
            TinyViTBlock(dim=dim, num_heads=num_heads, window=window, mlp_ratio=mlp_ratio, local_conv=local_conv)
            for _ in range(depth))
        self.downsample = PatchMerging(in_dim=dim, out_dim=out_dim, stride=stride) if out_dim is not None else None

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        for block in self.blocks:
            x = block(x, grid)
        if self.downsample is None:
            return x, grid
        stride = self.downsample.conv2.c.stride[0]
        return self.downsample(x, grid), (-(-grid[0] // stride), -(-grid[1] // stride))


class TinyViT(nn.Module):
    """TinyViT image encoder with SAM's neck: B×3×S×S normalised images → B×``out_chans``×S/4×S/4."""

    def __init__(self, *, embed_dims: Sequence[int] = (64, 128, 160, 320), depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (2, 4, 5, 10), windows: Sequence[int] = (7, 7, 14, 7),
                 merge_strides: Sequence[int] = (2, 2, 1), mlp_ratio: float = 4.0, mbconv_expand: float = 4.0,
                 local_conv: int = 3, out_chans: int = 256, in_chans: int = 3) -> None:
        """Arguments:
          embed_dims: channels of the four stages (the first is convolutional).
          depths: blocks per stage.
          num_heads: attention heads per stage (the first stage's entry is unused).
          windows: attention window side per stage (the first stage's entry is unused).
          merge_strides: strides of the three merges between stages; LiteMedSAM: 2, 2, 1 (grid = input / 4).
          mlp_ratio: hidden width of the MLPs relative to the stage width.
          mbconv_expand: expansion of the MBConv blocks.
          local_conv: kernel of the depthwise convolution between attention and MLP.
          out_chans: channels of the embedding (SAM's prompt dimension, 256).
          in_chans: image channels.
        """
        super().__init__()
        if not (len(embed_dims) == len(depths) == len(num_heads) == len(windows) == len(merge_strides) + 1):
            raise ValueError("TinyViT needs one embed_dim, depth, head count and window per stage and one merge "
                             "stride between stages")
        self.patch_embed = PatchEmbed(in_channels=in_chans, embed_dim=embed_dims[0])
        stages: list[nn.Module] = [ConvStage(dim=embed_dims[0], depth=depths[0], expand_ratio=mbconv_expand,
                                             out_dim=embed_dims[1], stride=merge_strides[0])]
        for i in range(1, len(depths)):
            last = i == len(depths) - 1
            stages.append(AttentionStage(
                dim=embed_dims[i], depth=depths[i], num_heads=num_heads[i], window=windows[i], mlp_ratio=mlp_ratio,
                local_conv=local_conv, out_dim=None if last else embed_dims[i + 1],
                stride=1 if last else merge_strides[i]))
        self.layers = nn.ModuleList(stages)
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm2d(channels=out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(channels=out_chans),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        """TinyViT's init: truncated-normal linear weights; the last BN of each MBConv starts at zero (identity)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, MBConv):
                nn.init.zeros_(module.conv3.bn.weight)

    def train(self, mode: bool = True) -> "TinyViT":
        """Batch norms stay in eval mode: their pretrained statistics are part of the frozen base (LoRA
        fine-tuning must not drift them with small, single-domain batches)."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x, grid = self.layers[0](x)
        for stage in self.layers[1:]:
            x, grid = stage(x, grid)
        b, _, c = x.shape
        return self.neck(x.transpose(1, 2).reshape(b, c, *grid))
