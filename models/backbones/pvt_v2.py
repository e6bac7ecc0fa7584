"""Pyramid Vision Transformer v2 (Wang et al., 2022) as a dense-prediction backbone.

Four stages, each an overlapping strided convolution (patch embedding) followed by
transformer blocks whose attention reads keys and values from a spatially reduced copy of
the map, and whose MLP holds a 3x3 depthwise convolution. Key names follow the official
release (``patch_embed{i}``, ``block{i}.{j}``, ``norm{i}``, i = 1..4), as stored in BiRefNet
checkpoints under ``bb.``.

Feature maps run through the blocks as ``[B,H,W,C]``.
"""

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

# LayerNorm eps of the official model: 1e-6 in the blocks and stage outputs, torch's
# default 1e-5 in the patch embeddings and the spatial-reduction norms.
BLOCK_EPS = 1e-6


@dataclass(frozen=True)
class PvtV2Config:
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    mlp_ratios: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Output widths at strides 4/8/16/32."""
        return self.embed_dims


def _to_nchw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)


def _to_nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows, then LayerNorm: ``[B,Cin,H,W] -> [B,H/s,W/s,C]``."""

    def __init__(self, cin: int, cout: int, patch: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, patch, stride=stride, padding=patch // 2)
        self.norm = nn.LayerNorm(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(_to_nhwc(self.proj(x)))


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values come from the map shrunk ``sr_ratio`` times
    per side by a strided conv (no reduction when ``sr_ratio == 1``). ``[B,H,W,C] -> same``."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        else:
            self.sr = None

    def forward(self, x: Tensor) -> Tensor:
        b, height, width, dim = x.shape
        q = self.q(x).view(b, height * width, self.num_heads, -1).transpose(1, 2)
        source = x if self.sr is None else self.norm(_to_nhwc(self.sr(_to_nchw(x))))
        kv = self.kv(source).reshape(b, -1, 2, self.num_heads, dim // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, height, width, dim))


class DepthwiseConv(nn.Module):
    """3x3 depthwise conv on a ``[B,H,W,C]`` map."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return _to_nhwc(self.dwconv(_to_nchw(x)))


class ConvMlp(nn.Module):
    """``fc2(GELU(dwconv(fc1(x))))``: the depthwise conv gives the MLP positional cues."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x))))


class PvtBlock(nn.Module):
    """Pre-norm attention and MLP, both residual. ``[B,H,W,C] -> same``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_EPS)
        self.mlp = ConvMlp(dim, mlp_ratio * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PyramidVisionTransformerV2(nn.Module):
    """``[B,3,H,W] -> 4 maps [B,C_i,H/2^(i+2),W/2^(i+2)]``, each after its stage norm."""

    def __init__(self, config: PvtV2Config):
        super().__init__()
        self.config = config
        dims = config.embed_dims
        # Registration order fixes the state-dict order: all embeddings, then blocks + norms.
        for i, (cin, cout) in enumerate(zip((3, *dims[:3]), dims), start=1):
            patch, stride = (7, 4) if i == 1 else (3, 2)
            self.add_module(f"patch_embed{i}", OverlapPatchEmbed(cin, cout, patch, stride))
        stages = zip(dims, config.depths, config.num_heads, config.mlp_ratios, config.sr_ratios)
        for i, (dim, depth, heads, mlp_ratio, sr_ratio) in enumerate(stages, start=1):
            self.add_module(f"block{i}", nn.ModuleList(
                PvtBlock(dim, heads, mlp_ratio, sr_ratio) for _ in range(depth)))
            self.add_module(f"norm{i}", nn.LayerNorm(dim, eps=BLOCK_EPS))

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for i in range(1, 5):
            x = self.get_submodule(f"patch_embed{i}")(x)
            for block in self.get_submodule(f"block{i}"):
                x = block(x)
            x = _to_nchw(self.get_submodule(f"norm{i}")(x)).contiguous()
            features.append(x)
        return features
