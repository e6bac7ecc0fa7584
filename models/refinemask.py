"""A RefineMask-style refiner (after Zhang et al., "RefineMask"): a coarse mask is refined in
stages, each fusing image features, the previous stage's mask and the coarse input at twice the
resolution of the last, with updates confined to the boundary band at inference.

RefineMask refines instance masks of a detector from 14x14 to 112x112; here the same stage
(its semantic fusion module) refines a whole image or crop from stride 8 to stride 1:

1. An image pyramid (two 3x3 conv-BN-ReLU per level, strides 1, 2, 4, 8) gives fine features
   at every stage's resolution; RefineMask samples one stride-4 map at every stage instead.
2. Stage input at stride 8: two 3x3 conv-ReLU on the stride-8 features and the coarse mask.
3. Each stage at width C: a 1x1 conv predicts the stage's mask; the stage features, the fine
   features (1x1 to C), that mask and the coarse mask are concatenated, mixed by a 1x1 conv,
   refined by three parallel 3x3 convs with dilations 1, 3, 5 (summed, 1x1 merge, ReLU), cut to
   C/2 - 2 channels, upsampled x2, and joined by both masks upsampled: C/2 channels at the next
   resolution.
4. The stride-1 mask comes from the last stage's output and the stride-1 image features (3x3
   conv-ReLU, 1x1 conv): RefineMask's final 1x1 conv sees no image features, but a one-pixel
   strand is only visible in full-resolution ones. Stage masks are at strides 8, 4, 2, 1.

Boundary-aware refinement (:func:`boundary_merge`): at inference the stride-8 and stride-4
predictions are taken whole; from then on a finer prediction replaces the upsampled coarser one
only on the boundary band of the latter. Training supervises the first two stages everywhere
and the last two inside the band of the previous stage's prediction and target
(:func:`~comfyui_meticulous.training.losses.refinemask_loss`).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .base import SegmentationModel, resize_mask

STAGE_STRIDES = (8, 4, 2, 1)


def boundary_band(mask: Tensor, width: int = 1) -> Tensor:
    """Pixels of a bool ``[B,1,h,w]`` mask with more than 10 % of their ``(2w+1)²`` square labelled
    differently, on either side of the contour (RefineMask's rule); pixels beyond the image edge
    do not count. Bool, same shape."""
    m = mask.float()
    k = 2 * width + 1
    same_fg = F.avg_pool2d(m, k, 1, width, count_include_pad=False)
    # A pixel's differing share is (1 - share of foreground) for foreground, the share for background.
    differing = torch.where(mask, 1 - same_fg, same_fg)
    return differing > 0.1


def _up(x: Tensor, size) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def boundary_merge(stages: list[Tensor], width: int = 1, start: int = 1) -> Tensor:
    """Boundary-aware refinement of stage logits ``[B,1,h_i,w_i]`` (coarse to fine, x2 each).

    The prediction up to stage ``start`` is the stage's own; each later stage's logits are used on
    the band (:func:`boundary_band` of ``width`` on the merged prediction so far, found at its own
    resolution and upsampled nearest) and the bilinearly upsampled merged logits elsewhere.
    """
    merged = stages[start]
    for finer in stages[start + 1:]:
        band = boundary_band(merged > 0, width)
        band = F.interpolate(band.float(), size=finer.shape[-2:], mode="nearest") > 0
        merged = torch.where(band, finer, _up(merged, finer.shape[-2:]))
    return merged


class MultiBranchFusion(nn.Module):
    """Three parallel 3x3 conv-ReLU with dilations 1, 3, 5, summed, then a 1x1 merge and ReLU."""

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 3, 5)):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in dilations)
        self.merge = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.merge(sum(F.relu(branch(x)) for branch in self.branches)))


class FusionStage(nn.Module):
    """One stage at width ``channels``: ``(features [B,C,h,w], fine [B,f,h,w], coarse prob [B,1,·,·])``
    -> ``(mask logits [B,1,h,w], next features [B,C/2,2h,2w])``."""

    def __init__(self, channels: int, fine_channels: int, dilations: tuple[int, ...] = (1, 3, 5)):
        super().__init__()
        self.mask_logits = nn.Conv2d(channels, 1, 1)
        self.fine_transform = nn.Conv2d(fine_channels, channels, 1)
        self.fuse_in = nn.Conv2d(2 * channels + 2, channels, 1)
        self.fuse = MultiBranchFusion(channels, dilations)
        self.transform_out = nn.Conv2d(channels, channels // 2 - 2, 1)

    def forward(self, x: Tensor, fine: Tensor, coarse: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.mask_logits(x)
        size = x.shape[-2:]
        mask, coarse_here = torch.sigmoid(logits), resize_mask(coarse, size).to(x.dtype)
        h = torch.cat([x, F.relu(self.fine_transform(fine)), mask, coarse_here], 1)
        h = self.fuse(F.relu(self.fuse_in(h)))
        h = F.relu(_up(F.relu(self.transform_out(h)), (2 * size[0], 2 * size[1])))
        up_size = h.shape[-2:]
        return logits, torch.cat([h, _up(mask, up_size), resize_mask(coarse, up_size).to(x.dtype)], 1)


class RefineMaskRefiner(SegmentationModel):
    """Image ``[B,3,H,W]`` (H, W multiples of 8) and coarse logits ``[B,1,h,w]`` -> refined logits.

    ``forward`` applies boundary-aware refinement (the inference rule); ``forward_all`` gives the
    four stage logits at strides 8, 4, 2, 1 for training. ``pyramid`` are the image-feature widths
    at strides 1, 2, 4, 8; ``width`` the first stage's (halved at each stage).
    """

    architecture = "refinemask"
    role = "refiner"
    size_multiple = 8
    native_resolution = (512, 512)
    input_normalisation = "imagenet"
    takes_coarse = True

    def __init__(self, pyramid: tuple[int, int, int, int] = (32, 64, 128, 256), width: int = 256,
                 dilations: tuple[int, ...] = (1, 3, 5), band_width: int = 1):
        super().__init__()
        if width // 8 < 4:
            raise InputError(f"RefineMask width must be at least 32 to halve through three stages, got {width}")
        self.config = {"pyramid": list(pyramid), "width": width, "dilations": list(dilations),
                       "band_width": band_width}
        self.band_width = band_width
        self.pyramid = nn.ModuleList()
        cin = 3
        for level, cout in enumerate(pyramid):
            stride = 1 if level == 0 else 2
            self.pyramid.append(nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)))
            cin = cout
        self.stem = nn.Sequential(nn.Conv2d(pyramid[3] + 1, width, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.stages = nn.ModuleList(FusionStage(width >> i, pyramid[3 - i], tuple(dilations)) for i in range(3))
        self.final_logits = nn.Sequential(nn.Conv2d((width >> 3) + pyramid[0], width >> 3, 3, padding=1),
                                          nn.ReLU(inplace=True), nn.Conv2d(width >> 3, 1, 1))

    def forward(self, x: Tensor, coarse: Tensor) -> Tensor:
        return boundary_merge(self.forward_all(x, coarse), self.band_width)

    def training_outputs(self, x: Tensor, coarse: Tensor | None = None) -> list[Tensor]:
        """Every stage's logits, for the stage loss (see :meth:`forward_all`)."""
        return self.forward_all(x, coarse)

    def forward_all(self, x: Tensor, coarse: Tensor) -> list[Tensor]:
        """Stage logits ``[B,1,H/s,W/s]`` for s = 8, 4, 2, 1."""
        self.check_input(x, coarse)
        features = []
        for level in self.pyramid:
            x = level(x)
            features.append(x)
        h = self.stem(torch.cat([features[3], resize_mask(coarse, features[3].shape[-2:]).to(x.dtype)], 1))
        stages = []
        for index, stage in enumerate(self.stages):
            logits, h = stage(h, features[3 - index], coarse)
            stages.append(logits)
        stages.append(self.final_logits(torch.cat([h, features[0]], 1)))
        return stages
