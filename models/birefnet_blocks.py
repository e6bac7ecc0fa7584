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


class _DeformableBranch(nn.Module):
    """Deformable conv -> BN -> ReLU, one branch of :class:`ASPPDeformable`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.atrous_conv = DeformableConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.atrous_conv(x)))


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
        branches = [self.aspp1(x), *(branch(x) for branch in self.aspp_deforms)]
        branches.append(resize(self.global_avg_pool(x), x.shape[-2:]))
        return F.relu(self.bn1(self.conv1(torch.cat(branches, dim=1))))


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
        x = F.relu(self.bn_in(self.conv_in(x)))
        return self.bn_out(self.conv_out(self.dec_att(x)))


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
