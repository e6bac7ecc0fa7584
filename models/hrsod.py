"""HRSOD (Zeng et al., "Towards High-Resolution Salient Object Detection"): GSN, LRN and GLFN.

The Global Semantic Network (GSN) and the Local Refinement Network (LRN) share one fully
convolutional network: VGG-16 up to conv5_3 (pool1-pool4, no pool5; conv5_3 batch-normalised
with a leaky ReLU), a head on conv3_3, conv4_3 and conv5_3 made of four parallel 3x3 branches
(32 channels, dilations 1/3/5/7) and a 3x3 two-class score conv, and an FCN-style decoder of
three deconvolutions (x2, x2, x4) that adds the stride-8 and stride-4 scores on the way. The LRN
also takes the GSN guidance: it is concatenated to the fused scores at strides 8 and 4 and mixed
back to two channels by a 3x3 conv before the next deconvolution.

The Global-Local Fusion Network (GLFN) sees the image and the combined global/local map at full
working resolution: three dense layers of growth rate 2 (BN-ReLU-1x1 to 8, BN-ReLU-3x3 to 2),
BN-ReLU, four parallel dilated 3x3 convs (rates 1/6/12/18, 2 channels each) and a final 3x3 conv.

Layers, widths and biases follow the released network definitions, so the value count matches
the paper's 129.6 MB. Every network ends in two class scores, as the softmax of the released
models does; ``forward`` returns their difference, the foreground logit (``softmax[1] ==
sigmoid(s1 - s0)``). Our BatchNorm keeps ``4c`` values plus a step counter per layer, exactly
as many as Caffe's BatchNorm (mean, variance, moving-average factor) and Scale (gamma, beta).

Choices where no weights constrain us (none are public): inputs are ImageNet-normalised RGB, as
everywhere in this package, instead of Caffe's BGR mean subtraction; mask inputs (the LRN's
guidance, the GLFN's map) are probabilities in 0..1, given to ``forward`` as logits of any
resolution; deconvolutions start as per-channel bilinear upsampling.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .base import SegmentationModel, resize_mask

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_DEPTHS = (2, 2, 3, 3, 3)
HEAD_DILATIONS = (1, 3, 5, 7)
GLFN_DILATIONS = (1, 6, 12, 18)


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.01)


def _bilinear_deconv_(deconv: nn.ConvTranspose2d) -> None:
    """Initialise ``deconv`` as per-channel bilinear upsampling by its stride."""
    k = deconv.kernel_size[0]
    centre = (k - 1) / 2 if k % 2 else k / 2 - 0.5
    taps = 1 - (torch.arange(k, dtype=torch.float32) - centre).abs() / ((k + 1) // 2)
    with torch.no_grad():
        deconv.weight.zero_()
        for channel in range(min(deconv.in_channels, deconv.out_channels)):
            deconv.weight[channel, channel] = taps[:, None] * taps[None, :]


class VGG16Trunk(nn.Module):
    """VGG-16 conv1_1..conv5_3 (3x3, bias, ReLU) with 2x2 max-pooling after blocks 1-4.

    ``[B,3,H,W] -> (conv3_3 [B,w3,H/4,W/4], conv4_3 [B,w4,H/8,W/8], conv5_3 [B,w5,H/16,W/16])``;
    conv5_3 goes through BatchNorm and a leaky ReLU (slope 0.01) instead of a plain ReLU.
    """

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS):
        super().__init__()
        self.blocks = nn.ModuleList()
        cin = 3
        for width, depth in zip(widths, VGG16_DEPTHS):
            self.blocks.append(nn.ModuleList(nn.Conv2d(cin if i == 0 else width, width, 3, padding=1)
                                             for i in range(depth)))
            cin = width
        self.norm5 = nn.BatchNorm2d(widths[4])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = []
        for index, block in enumerate(self.blocks):
            if index > 0:
                # Caffe rounds pooled sizes up; inputs are multiples of 16, so this never pads.
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for layer_index, conv in enumerate(block):
                x = conv(x)
                last = index == 4 and layer_index == len(block) - 1
                x = _lrelu(self.norm5(x)) if last else F.relu(x)
            outputs.append(x)
        return outputs[2], outputs[3], outputs[4]


class ScoreHead(nn.Module):
    """Four parallel dilated 3x3 convs (ReLU), concatenated, then a 3x3 two-class score conv,
    BatchNorm and a leaky ReLU. ``[B,cin,h,w] -> [B,2,h,w]``."""

    def __init__(self, cin: int, width: int = 32, dilations: tuple[int, ...] = HEAD_DILATIONS, bias: bool = True):
        super().__init__()
        self.branches = nn.ModuleList(nn.Conv2d(cin, width, 3, padding=d, dilation=d) for d in dilations)
        self.score = nn.Conv2d(width * len(dilations), 2, 3, padding=1, bias=bias)
        self.norm = nn.BatchNorm2d(2)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([F.relu(branch(x)) for branch in self.branches], 1)
        return _lrelu(self.norm(self.score(x)))


class _Deconv(nn.Module):
    """Transposed conv on two-class scores (no bias) followed by BatchNorm."""

    def __init__(self, kernel: int, stride: int, padding: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(2, 2, kernel, stride=stride, padding=padding, bias=False)
        self.norm = nn.BatchNorm2d(2)
        _bilinear_deconv_(self.deconv)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.deconv(x))


class _Guidance(nn.Module):
    """LRN only: scores and one guidance channel -> 3x3 conv (no bias) -> BN -> leaky ReLU."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(2)

    def forward(self, scores: Tensor, guidance: Tensor) -> Tensor:
        return _lrelu(self.norm(self.conv(torch.cat([scores, guidance], 1))))


class SaliencyFCN(SegmentationModel):
    """The GSN/LRN network; ``guided`` adds the LRN's guidance convs at strides 8 and 4.

    ``widths`` are the five VGG block widths, ``branch_width`` and ``dilations`` those of the
    dilated heads; the defaults are the paper's.
    """

    size_multiple = 16
    native_resolution = (384, 384)
    input_normalisation = "imagenet"

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS, branch_width: int = 32,
                 dilations: tuple[int, ...] = HEAD_DILATIONS, guided: bool = False):
        super().__init__()
        self.config = {"widths": list(widths), "branch_width": branch_width, "dilations": list(dilations)}
        if guided != self.takes_coarse:
            raise InputError(f"{type(self).__name__} is {'not ' if self.takes_coarse else ''}a guided network")
        self.trunk = VGG16Trunk(tuple(widths))
        # The released definitions give the conv5_3 score no bias and the other two one.
        self.score5 = ScoreHead(widths[4], branch_width, tuple(dilations), bias=False)
        self.score4 = ScoreHead(widths[3], branch_width, tuple(dilations))
        self.score3 = ScoreHead(widths[2], branch_width, tuple(dilations))
        self.up1 = _Deconv(8, 2, 3)
        self.up2 = _Deconv(8, 2, 3)
        self.up3 = _Deconv(8, 4, 2)
        if guided:
            self.guide8 = _Guidance()
            self.guide4 = _Guidance()

    def scores(self, x: Tensor, coarse: Tensor | None = None) -> Tensor:
        """Two-class scores ``[B,2,H,W]`` for images ``[B,3,H,W]`` (and guidance logits)."""
        c3, c4, c5 = self.trunk(x)
        fused = _lrelu(self.up1(self.score5(c5))) + self.score4(c4)
        if self.takes_coarse:
            fused = self.guide8(fused, resize_mask(coarse, fused.shape[-2:]).to(fused.dtype))
        fused = _lrelu(self.up2(fused)) + self.score3(c3)
        if self.takes_coarse:
            fused = self.guide4(fused, resize_mask(coarse, fused.shape[-2:]).to(fused.dtype))
        return self.up3(fused)


class GSN(SaliencyFCN):
    """Global Semantic Network: ``[B,3,H,W]`` (H, W multiples of 16) -> logits ``[B,1,H,W]``."""

    architecture = "gsn"

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS, branch_width: int = 32,
                 dilations: tuple[int, ...] = HEAD_DILATIONS):
        super().__init__(widths, branch_width, dilations, guided=False)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        scores = self.scores(x)
        return scores[:, 1:] - scores[:, :1]


class LRN(SaliencyFCN):
    """Local Refinement Network: image ``[B,3,H,W]`` and GSN guidance logits ``[B,1,h,w]`` (any
    size; resized to strides 8 and 4) -> refined logits ``[B,1,H,W]``."""

    architecture = "lrn"
    role = "refiner"
    takes_coarse = True

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS, branch_width: int = 32,
                 dilations: tuple[int, ...] = HEAD_DILATIONS):
        super().__init__(widths, branch_width, dilations, guided=True)

    def forward(self, x: Tensor, coarse: Tensor) -> Tensor:
        self.check_input(x, coarse)
        scores = self.scores(x, coarse)
        return scores[:, 1:] - scores[:, :1]


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv to ``bottleneck·growth``, BN-ReLU-3x3 conv to ``growth`` (no biases); the
    output is concatenated to the input. ``[B,c,H,W] -> [B,c+growth,H,W]``."""

    def __init__(self, cin: int, growth: int, bottleneck: int):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bottleneck * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bottleneck * growth)
        self.conv2 = nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        return torch.cat([x, self.conv2(F.relu(self.norm2(y)))], 1)


class GLFN(SegmentationModel):
    """Global-Local Fusion Network: image ``[B,3,H,W]`` and the combined map's logits
    ``[B,1,h,w]`` (resized to ``H x W``) -> fused logits ``[B,1,H,W]``.

    No pooling and no stride, so it runs at any size and a pixel depends only on inputs within
    :attr:`receptive_radius`; that is what lets :func:`run_in_stripes` process a 4K image in
    bands of rows with identical results.
    """

    architecture = "glfn"
    role = "fusion"
    size_multiple = 1
    native_resolution = (1024, 1024)
    input_normalisation = "imagenet"
    takes_coarse = True

    def __init__(self, growth: int = 2, layers: int = 3, bottleneck: int = 4,
                 dilations: tuple[int, ...] = GLFN_DILATIONS, branch_width: int = 2, residual: bool = False):
        super().__init__()
        self.config = {"growth": growth, "layers": layers, "bottleneck": bottleneck,
                       "dilations": list(dilations), "branch_width": branch_width, "residual": residual}
        self.residual = residual
        channels = 4
        self.dense = nn.Sequential()
        for _ in range(layers):
            self.dense.append(DenseLayer(channels, growth, bottleneck))
            channels += growth
        self.norm = nn.BatchNorm2d(channels)
        self.branches = nn.ModuleList(nn.Conv2d(channels, branch_width, 3, padding=d, dilation=d)
                                      for d in dilations)
        self.final = nn.Conv2d(branch_width * len(dilations), 2, 3, padding=1)
        if residual:
            # Start as the identity on the combined map; training learns the correction.
            nn.init.zeros_(self.final.weight)
            nn.init.zeros_(self.final.bias)

    @property
    def receptive_radius(self) -> int:
        """How far (pixels) an output pixel sees: 1 per dense layer, the widest branch, the final conv."""
        return len(self.dense) + max(branch.dilation[0] for branch in self.branches) + 1

    def forward(self, x: Tensor, coarse: Tensor) -> Tensor:
        self.check_input(x, coarse)
        prob = resize_mask(coarse, x.shape[-2:])
        h = torch.cat([x, prob.to(x.dtype)], 1)
        h = F.relu(self.norm(self.dense(h)))
        h = torch.cat([F.relu(branch(h)) for branch in self.branches], 1)
        scores = self.final(h)
        logits = scores[:, 1:] - scores[:, :1]
        if self.residual:
            logits = logits + torch.logit(prob, eps=1e-4).to(logits.dtype)
        return logits


def run_in_stripes(model: SegmentationModel, x: Tensor, coarse: Tensor, rows: int = 512) -> Tensor:
    """``model(x, coarse)`` computed ``rows`` output rows at a time (eval mode), each stripe with
    the model's ``receptive_radius`` rows of context, so peak memory follows the stripe, not the
    image. ``coarse`` must already be at the size of ``x``."""
    if tuple(coarse.shape[-2:]) != tuple(x.shape[-2:]):
        raise InputError("run_in_stripes needs the coarse logits at the image size")
    if model.training:
        raise InputError("run_in_stripes is for inference; call model.eval() first")
    height, halo = x.shape[-2], model.receptive_radius
    stripes = []
    for start in range(0, height, rows):
        stop = min(height, start + rows)
        low, high = max(0, start - halo), min(height, stop + halo)
        out = model(x[:, :, low:high], coarse[:, :, low:high])
        stripes.append(out[:, :, start - low:stop - low])
    return torch.cat(stripes, 2)
