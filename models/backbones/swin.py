"""Swin Transformer v1 (Liu et al., 2021) as a dense-prediction backbone.

Self-attention runs inside non-overlapping windows whose grid is shifted by half a window
on every other block; a patch-merging layer halves the resolution between stages. The
layout is the object-detection variant of the official release (``patch_embed``,
``layers.{i}.blocks.{j}``, ``layers.{i}.downsample``, one output norm ``norm{i}`` per
stage), which is the one BiRefNet checkpoints hold under ``bb.``.

Feature maps run through the network as ``[B,H,W,C]``; any input size works: the patch
embedding pads to a multiple of 4 and every block pads to a multiple of the window.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PATCH_SIZE = 4
MLP_RATIO = 4
# Shifted-window masks kept per stage; BiRefNet alternates between two input sizes.
_MASK_CACHE_SIZE = 4


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_size: int

    @property
    def channels(self) -> tuple[int, int, int, int]:
        """Output widths at strides 4/8/16/32."""
        return tuple(self.embed_dim * 2**i for i in range(4))


def relative_position_index(window: int) -> Tensor:
    """``[w²,w²]`` int64: row of the bias table for each (query, key) token pair.

    For tokens a = (ya, xa) and b = (yb, xb) in row-major window order the index is
    ``(ya - yb + w - 1) * (2w - 1) + (xa - xb + w - 1)``.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def window_partition(x: Tensor, window: int) -> Tensor:
    """``[B,H,W,C] -> [B*nW, w², C]`` with windows in row-major order (H, W multiples of w)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def window_merge(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``[B*nW, w², C] -> [B,H,W,C]``."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, height, width, c)


def shifted_window_mask(height: int, width: int, window: int, shift: int,
                        device: torch.device, dtype: torch.dtype) -> Tensor:
    """``[nW,1,w²,w²]`` additive mask for the cyclically shifted ``height x width`` map.

    After the roll, a window at the bottom/right edge holds pixels from up to four image
    regions that are not neighbours; attention between different regions is set to -inf.
    Padding tokens are not masked, as in the official model.
    """
    def bands(n: int) -> Tensor:
        label = torch.zeros(n, dtype=torch.long, device=device)
        label[n - window:n - shift] = 1
        label[n - shift:] = 2
        return label

    region = bands(height)[:, None] * 3 + bands(width)[None, :]
    region = window_partition(region[None, :, :, None], window).squeeze(-1)
    crossing = region[:, :, None] != region[:, None, :]
    mask = torch.zeros(crossing.shape, dtype=dtype, device=device)
    return mask.masked_fill(crossing, float("-inf"))[:, None]


class WindowAttention(nn.Module):
    """Multi-head self-attention within each window, with a learned relative-position bias.

    ``[B*nW, w², C] -> [B*nW, w², C]``.
    """

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self, dtype: torch.dtype) -> Tensor:
        """``[1,heads,w²,w²]``, gathered from the table on every call.

        The gather is tiny next to the attention it feeds, and keeping nothing derived from the
        table means nothing can go stale: loads, ``.to()``, partial offloading and in-place
        updates are all seen, and ``torch.compile`` traces it without guards on storage.
        """
        n = self.relative_position_index.shape[0]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).unsqueeze(0).to(dtype)

    def forward(self, x: Tensor, shift_mask: Tensor | None = None) -> Tensor:
        """``shift_mask``: ``[nW,1,w²,w²]`` from :func:`shifted_window_mask`, or None."""
        windows, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(windows, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        mask = self.relative_position_bias(x.dtype)
        if shift_mask is not None:
            # Summed per call: a cached sum would hold nW·heads·w⁴ values per block.
            # SDPA's fused kernels need a 4-D mask aligned with q's batch of B·nW windows.
            per_image = shift_mask + mask
            mask = per_image.expand(windows // per_image.shape[0], *per_image.shape)
            mask = mask.reshape(windows, *per_image.shape[1:])
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(windows, tokens, dim))


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` on the last dimension."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, both residual. ``[B,H,W,C] -> same``."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int):
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, MLP_RATIO * dim)

    def forward(self, x: Tensor, shift_mask: Tensor | None) -> Tensor:
        _, height, width, _ = x.shape
        w, s = self.window, self.shift
        # Padding after the norm: padded tokens are exact zeros and take part in attention.
        y = F.pad(self.norm1(x), (0, 0, 0, -width % w, 0, -height % w))
        padded_h, padded_w = y.shape[1:3]
        if s:
            y = torch.roll(y, (-s, -s), dims=(1, 2))
        y = self.attn(window_partition(y, w), shift_mask if s else None)
        y = window_merge(y, w, padded_h, padded_w)
        if s:
            y = torch.roll(y, (s, s), dims=(1, 2))
        x = x + y[:, :height, :width]
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """Concatenate each 2x2 neighbourhood and project: ``[B,H,W,C] -> [B,⌈H/2⌉,⌈W/2⌉,2C]``."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        _, height, width, _ = x.shape
        x = F.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        # Order fixed by the trained weights: (even,even), (odd,even), (even,odd), (odd,odd).
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """Blocks of one resolution, alternating plain and shifted windows, then an optional
    patch merging. ``[B,H,W,C] -> (features [B,H,W,C], input of the next stage)``."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, downsample: bool):
        super().__init__()
        self.window = window
        self.shift = window // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, 0 if i % 2 == 0 else self.shift)
            for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None
        self._mask_cache: dict[tuple, Tensor] = {}

    def shift_mask(self, height: int, width: int, device: torch.device,
                   dtype: torch.dtype) -> Tensor:
        """The cached :func:`shifted_window_mask` for a feature map of this size."""
        w = self.window
        key = (height + -height % w, width + -width % w, device, dtype)
        if key not in self._mask_cache:
            if len(self._mask_cache) >= _MASK_CACHE_SIZE:
                self._mask_cache.pop(next(iter(self._mask_cache)))
            self._mask_cache[key] = shifted_window_mask(*key[:2], w, self.shift, device, dtype)
        return self._mask_cache[key]

    def _apply(self, fn, recurse=True):
        # .to()/.cuda()/.half() and partial offloading: masks made for the old device or dtype
        # would only hold memory there; the next forward makes them where the input is.
        self._mask_cache.clear()
        return super()._apply(fn, recurse)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if torch.compiler.is_compiling():
            # A compiled graph computes the mask once per input size itself; a dict of tensors
            # mutated from inside it would break the graph.
            w = self.window
            mask = shifted_window_mask(x.shape[1] + -x.shape[1] % w, x.shape[2] + -x.shape[2] % w, w,
                                       self.shift, x.device, x.dtype)
        else:
            mask = self.shift_mask(x.shape[1], x.shape[2], x.device, x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x, (x if self.downsample is None else self.downsample(x))


class PatchEmbed(nn.Module):
    """4x4 patches to tokens: ``[B,3,H,W] -> [B,⌈H/4⌉,⌈W/4⌉,C]`` (input zero-padded to /4)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH_SIZE, stride=PATCH_SIZE)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % PATCH_SIZE, 0, -height % PATCH_SIZE))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinTransformer(nn.Module):
    """``[B,3,H,W] -> 4 maps [B,C_i,H/2^(i+2),W/2^(i+2)]``, each after its stage norm."""

    def __init__(self, config: SwinConfig):
        super().__init__()
        self.config = config
        self.patch_embed = PatchEmbed(config.embed_dim)
        self.layers = nn.ModuleList(
            SwinStage(dim, depth, heads, config.window_size, downsample=i < 3)
            for i, (dim, depth, heads) in enumerate(
                zip(config.channels, config.depths, config.num_heads)))
        for i, dim in enumerate(config.channels):
            self.add_module(f"norm{i}", nn.LayerNorm(dim))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed(x)
        features = []
        for i, layer in enumerate(self.layers):
            out, x = layer(x)
            features.append(self.get_submodule(f"norm{i}")(out).permute(0, 3, 1, 2).contiguous())
        return features
