"""Building blocks of the BiRefNet decoder, named as in the released weights."""

import torch
import torch.nn.functional as F
from torch import nn

from .deform_conv import DeformableConv2d


def resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True``, the mode used everywhere inside BiRefNet."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def folded_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one conv equal to ``bn(conv(x))`` with ``bn`` in eval mode.

    Computed on every call from the live parameters (a few thousand multiplications), so loading,
    ``.to()`` and partial offloading need nothing refreshed and the state dict keeps its keys.
    """
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """``bn(conv(x))``: one folded convolution in eval mode, the two modules while training."""
    if bn.training:
        return bn(conv(x))
    weight, bias = folded_conv_bn(conv, bn)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class _DeformableBranch(nn.Module):
    """Deformable conv -> BN -> ReLU, one branch of :class:`ASPPDeformable`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.atrous_conv = DeformableConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        if self.bn.training:
            return F.relu(self.bn(self.atrous_conv(x)))
        # The batch norm rides in the deformable convolution's weight and bias.
        return F.relu_(self.atrous_conv(x, *folded_conv_bn(self.atrous_conv.regular_conv, self.bn)))


class ASPPDeformable(nn.Module):
    """Atrous-pyramid attention with deformable 1×1 / 1×1 / 3×3 / 7×7 branches and image pooling.

    ``[B, C, H, W] -> [B, C, H, W]``; the five 256-channel branches are concatenated and fused
    by a 1×1 conv.
    """

    def __init__(self, channels: int = 64, inter: int = 256, kernel_sizes=(1, 3, 7)):
        super().__init__()
        self.aspp1 = _DeformableBranch(channels, inter, 1)
        self.aspp_deforms = nn.ModuleList(_DeformableBranch(channels, inter, k) for k in kernel_sizes)
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, inter, 1, bias=False), nn.BatchNorm2d(inter), nn.ReLU())
        self.conv1 = nn.Conv2d(inter * (2 + len(kernel_sizes)), channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)

    def forward(self, x):
        if self.training:
            branches = [self.aspp1(x), *(branch(x) for branch in self.aspp_deforms)]
            branches.append(resize(self.global_avg_pool(x), x.shape[-2:]))
            return F.relu(self.bn1(self.conv1(torch.cat(branches, dim=1))))
        # The 1×1 fusion of the concatenation is the sum of each branch's slice of it: every
        # 256-channel branch is reduced as soon as it exists, and the pooled branch, constant
        # over the map, becomes a per-image bias instead of being spread to full size.
        weight, bias = folded_conv_bn(self.conv1, self.bn1)
        slices = weight.split(self.conv1.in_channels // (2 + len(self.aspp_deforms)), dim=1)
        out = F.conv2d(self.global_avg_pool(x), slices[-1], bias)
        for branch, part in zip((self.aspp1, *self.aspp_deforms), slices[:-1]):
            out = out + F.conv2d(branch(x), part)
        return F.relu_(out)


class BasicDecBlk(nn.Module):
    """conv3×3 -> BN -> ReLU -> ASPPDeformable -> conv3×3 -> BN (no final activation)."""

    def __init__(self, in_channels: int, out_channels: int, inter: int = 64):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, inter, 3, padding=1)
        self.dec_att = ASPPDeformable(inter)
        self.conv_out = nn.Conv2d(inter, out_channels, 3, padding=1)
        self.bn_in = nn.BatchNorm2d(inter)
        self.bn_out = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        x = F.relu(conv_bn(x, self.conv_in, self.bn_in))
        return conv_bn(self.dec_att(x), self.conv_out, self.bn_out)


class SimpleConvs(nn.Module):
    """Two 3×3 convs without activation: the image-reference (patch) branches."""

    def __init__(self, in_channels: int, out_channels: int, inter: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, inter, 3, padding=1)
        self.conv_out = nn.Conv2d(inter, out_channels, 3, padding=1)

    def forward(self, x):
        return self.conv_out(self.conv1(x))


class BasicLatBlk(nn.Module):
    """1×1 lateral projection of an encoder stage."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x):
        return self.conv(x)
