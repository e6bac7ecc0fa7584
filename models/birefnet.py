"""BiRefNet (Zheng et al., 2024) in the configuration of the released weights.

Bilateral reference: the decoder looks inward at the image itself, split into patches stacked
on channels (``ipt_blk*``), and outward at gradient cues that gate each stage (``gdt_convs*``).
The backbone runs on the image and on a half-size copy, and the two feature pyramids are
concatenated (multi-scale input), then the three shallow stages are pooled into the deepest one
(context fusion) before the squeeze block.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..errors import InputError
from .backbones import BACKBONES, build_backbone
from .base import SegmentationModel
from .birefnet_blocks import BasicDecBlk, BasicLatBlk, SimpleConvs, resize

PATCH_ORDERS = {
    # Current official code: channel = c*HG*WG + row*WG + col.
    "einops": "b c (hg h) (wg w) -> b (c hg wg) h w",
    # Weights trained before the Nov 2024 rewrite: channel = (col*HG + row)*C + c.
    "legacy": "b c (hg h) (wg w) -> b (wg hg c) h w",
}


def image_to_patches(image: torch.Tensor, size, order: str = "einops") -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, C*g_h*g_w, h, w]``: the image cut into a grid of ``size`` patches."""
    h, w = size
    return rearrange(image, PATCH_ORDERS[order], hg=image.shape[-2] // h, wg=image.shape[-1] // w)


def _observed(module: nn.Module) -> bool:
    """Whether forward hooks watch ``module`` (then it must run as itself, not folded away)."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


class Decoder(nn.Module):
    """The BiRefNet decoder for encoder widths ``channels`` (deepest first, after concatenation)."""

    def __init__(self, channels: tuple[int, int, int, int], patch_order: str = "einops"):
        super().__init__()
        c4, c3, c2, c1 = channels
        ipt = (c4 // 8, c4 // 8, c3 // 8, c2 // 8, c1 // 8)
        self.patch_order = patch_order
        # In-channels 3*g*g: patch grids of 32, 16, 8, 4 and 1 cells per side at strides 32..1.
        self.ipt_blk5 = SimpleConvs(3 * 32 * 32, ipt[0])
        self.ipt_blk4 = SimpleConvs(3 * 16 * 16, ipt[1])
        self.ipt_blk3 = SimpleConvs(3 * 8 * 8, ipt[2])
        self.ipt_blk2 = SimpleConvs(3 * 4 * 4, ipt[3])
        self.ipt_blk1 = SimpleConvs(3, ipt[4])
        self.decoder_block4 = BasicDecBlk(c4 + ipt[0], c3)
        self.decoder_block3 = BasicDecBlk(c3 + ipt[1], c2)
        self.decoder_block2 = BasicDecBlk(c2 + ipt[2], c1)
        self.decoder_block1 = BasicDecBlk(c1 + ipt[3], c1 // 2)
        self.conv_out1 = nn.Sequential(nn.Conv2d(c1 // 2 + ipt[4], 1, 1))
        self.lateral_block4 = BasicLatBlk(c3, c3)
        self.lateral_block3 = BasicLatBlk(c2, c2)
        self.lateral_block2 = BasicLatBlk(c1, c1)
        # Training-only heads (multi-stage supervision, gradient prediction): unused at inference
        # but part of every released state dict, so they must exist for a strict load.
        self.conv_ms_spvn_4 = nn.Conv2d(c3, 1, 1)
        self.conv_ms_spvn_3 = nn.Conv2d(c2, 1, 1)
        self.conv_ms_spvn_2 = nn.Conv2d(c1, 1, 1)
        self.gdt_convs_4 = self._gradient_stem(c3)
        self.gdt_convs_3 = self._gradient_stem(c2)
        self.gdt_convs_2 = self._gradient_stem(c1)
        self.gdt_convs_pred_4, self.gdt_convs_pred_3, self.gdt_convs_pred_2 = (
            nn.Sequential(nn.Conv2d(16, 1, 1)) for _ in range(3))
        self.gdt_convs_attn_4, self.gdt_convs_attn_3, self.gdt_convs_attn_2 = (
            nn.Sequential(nn.Conv2d(16, 1, 1)) for _ in range(3))

    @staticmethod
    def _gradient_stem(channels: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())

    def _patches(self, image, ipt_blk, size):
        return ipt_blk(resize(image_to_patches(image, size, self.patch_order), size))

    def _gate(self, p, stem, attention):
        # Outward reference: a gradient-aware attention map gates the stage features.
        return p * torch.sigmoid(attention(stem(p)))

    def forward(self, image, x1, x2, x3, x4):
        p4 = self.decoder_block4(torch.cat([x4, self._patches(image, self.ipt_blk5, x4.shape[-2:])], 1))
        p4 = self._gate(p4, self.gdt_convs_4, self.gdt_convs_attn_4)
        p3 = resize(p4, x3.shape[-2:]) + self.lateral_block4(x3)
        p3 = self.decoder_block3(torch.cat([p3, self._patches(image, self.ipt_blk4, p3.shape[-2:])], 1))
        p3 = self._gate(p3, self.gdt_convs_3, self.gdt_convs_attn_3)
        p2 = resize(p3, x2.shape[-2:]) + self.lateral_block3(x2)
        p2 = self.decoder_block2(torch.cat([p2, self._patches(image, self.ipt_blk3, p2.shape[-2:])], 1))
        p2 = self._gate(p2, self.gdt_convs_2, self.gdt_convs_attn_2)
        p1 = resize(p2, x1.shape[-2:]) + self.lateral_block2(x1)
        p1 = self.decoder_block1(torch.cat([p1, self._patches(image, self.ipt_blk2, p1.shape[-2:])], 1))
        if _observed(self.ipt_blk1) or _observed(self.conv_out1):
            # Hooks see the real full-resolution 24-channel branch and concatenation.
            return self.conv_out1(torch.cat([resize(p1, image.shape[-2:]), self.ipt_blk1(image)], 1))
        return self._full_resolution_head(image, p1)

    def _full_resolution_head(self, image, p1):
        """``conv_out1(cat[resize(p1), ipt_blk1(image)])`` without full-resolution feature maps.

        Everything after the last nonlinearity is linear. The output conv's share of ``p1`` runs
        on the quarter-size map, and its one-channel result is resized (bilinear weights sum to
        one, so the resize commutes with it). Its share of the image branch is the 3×3 stem, a
        3×3 conv to 24 channels and a 1×1 to one: per tap ``t`` of the second 3×3 that is a vector
        ``v_t`` over the stem's 64 channels, and ``v_t`` after the stem is itself a 3×3 conv of
        the image. So one conv from 3 to 9 channels (one per tap, zero outside the image like
        the stem's output) and nine shifted sums give the branch exactly, borders included.
        """
        head, stem, last = self.conv_out1[0], self.ipt_blk1.conv1, self.ipt_blk1.conv_out
        split = p1.shape[1]
        small = F.conv2d(p1, head.weight[:, :split], head.bias)
        share = head.weight[0, split:, 0, 0]  # [ipt]
        kh, kw = last.kernel_size
        per_tap = torch.einsum("i,icab->abc", share, last.weight).reshape(kh * kw, -1)  # [taps, 64]
        taps = F.conv2d(image, torch.einsum("tc,cdij->tdij", per_tap, stem.weight), per_tap @ stem.bias,
                        padding=stem.padding)
        h, w = image.shape[-2:]
        taps = F.pad(taps, (last.padding[1], last.padding[1], last.padding[0], last.padding[0]))
        out = resize(small, (h, w)) + share @ last.bias
        for a in range(kh):
            for b in range(kw):
                out.add_(taps[:, a * kw + b:a * kw + b + 1, a:a + h, b:b + w])
        return out


class BiRefNet(SegmentationModel):
    """BiRefNet for one of the registered backbones.

    ``forward(x)``: ImageNet-normalised ``[B, 3, H, W]`` (H, W multiples of 32) -> final-mask
    logits ``[B, 1, H, W]``.
    """

    architecture = "birefnet"
    size_multiple = 32
    # The half-scale pass of a smaller input leaves PVT's spatial-reduction convs no room.
    min_resolution = 64
    input_normalisation = "imagenet"

    def __init__(self, backbone: str = "swin_v1_l", patch_order: str = "einops",
                 native_resolution: tuple[int, int] | None = (1024, 1024),
                 resolution_range: tuple[int, int] = (256, 2304)):
        super().__init__()
        if patch_order not in PATCH_ORDERS:
            raise InputError(f"patch_order must be one of {sorted(PATCH_ORDERS)}, got {patch_order!r}")
        self.backbone_name = backbone
        self.config = {"backbone": backbone, "patch_order": patch_order}
        self.native_resolution = native_resolution
        self.resolution_range = resolution_range
        # Multi-scale input doubles every encoder width; deepest first as the decoder uses them.
        channels = tuple(2 * c for c in reversed(BACKBONES[backbone].channels))
        self.bb = build_backbone(backbone)
        context = sum(channels[1:])
        self.squeeze_module = nn.Sequential(BasicDecBlk(channels[0] + context, channels[0]))
        self.decoder = Decoder(channels, patch_order)

    @property
    def patch_order(self) -> str:
        return self.decoder.patch_order

    @patch_order.setter
    def patch_order(self, order: str) -> None:
        if order not in PATCH_ORDERS:
            raise InputError(f"patch_order must be one of {sorted(PATCH_ORDERS)}, got {order!r}")
        self.decoder.patch_order = order
        self.config["patch_order"] = order

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features x1..x4 (strides 4..32), full and half-scale pyramids concatenated."""
        full = self.bb(x)
        half = self.bb(resize(x, (x.shape[-2] // 2, x.shape[-1] // 2)))
        return [torch.cat([f, resize(h, f.shape[-2:])], dim=1) for f, h in zip(full, half)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise InputError(f"BiRefNet input sides must be multiples of 32, got {h}x{w}")
        x1, x2, x3, x4 = self.encode(x)
        size = x4.shape[-2:]
        x4 = self.squeeze_module(torch.cat([resize(x1, size), resize(x2, size), resize(x3, size), x4], dim=1))
        return self.decoder(x, x1, x2, x3, x4)
