"""MeticulousNet (Yang et al., "Meticulous Object Segmentation"): hierarchical point-wise
refinement (HierPR) in a recursive coarse-to-fine decoder.

A :class:`HierPR` block predicts a coarse map from decoder features (two 1x1 convs), upsamples
it x2 and re-predicts only the 10 % of output pixels whose probability is closest to 0.5, with a
small MLP over point features sampled from the stride-4 encoder features plus the coarse logit
(PointRend's point head). Every other pixel keeps the upsampled coarse value, so the block's
cost and its effect are confined to the selected points.

The recursive decoder (:class:`MeticulousNet`) first refines stride-8 features once into a
stride-4 mask (S8_0), then runs three cycles that end at strides 4, 2 and 1::

    cycle 1: S8_1                 -> stride 4
    cycle 2: S8_2 -> S4_2         -> stride 2
    cycle 3: S8_3 -> S4_3 -> S2_3 -> stride 1 (the output)

Before each cycle, a mask-encoding layer reads the masks produced so far and conditions the
cycle's stride-8 features. Where a block also has a previous prediction at its input stride,
its coarse map is the average of that prediction and its own coarse head.

Choices where the paper is silent (no code or weights were released):

- Weight sharing: the cycles' stride-8 blocks share one set of weights, the two stride-4 blocks
  another (the paper's "vertically aligned" blocks); S8_0, S2_3, the decoder convs and the mask
  encoder each have their own. That is four HierPR blocks in all.
- Point MLP: PointRend's head: 3 hidden layers of ``point_width`` (256) with ReLU and a linear
  predictor, the coarse logit appended to every layer's input; the coarse head is 1x1 conv to
  ``head_width`` (64), ReLU, 1x1 conv to 1. Points are the top ``fraction`` of the block's
  *output* grid, chosen deterministically in training as at inference.
- Averaging: of logits, with equal weights.
- Mask encoding: three fixed input slots (the S8_0 mask, then the ends of cycles 1 and 2, zeros
  until produced), each probability map area-pooled to stride 8, then 3x3 conv-BN-ReLU and a
  3x3 conv to the stride-8 width, added to the stride-8 decoder features before their ReLU.
- Deconvolution branch: stride-8 features from a 3x3 conv on the encoder output; stride 4 and 2
  from a 4x4 transposed conv (x2) concatenated with a 1x1 projection of the encoder's skip
  (first block, then first conv) and a 3x3 conv, all with BN and ReLU.
- Refiner input (MeticulousNet H): the image and ``2p - 1`` of the coarse mask as a fourth
  channel, so an undecided coarse pixel reads as 0.
- Encoders written here: a dilated ResNet-50 (output stride 8) with PSPNet's pyramid pooling
  (bins 1/2/3/6, 1024 channels), as in CascadePSP whose training recipe MOS reuses, and a
  MobileNetV3-Large's blocks with the last two strided stages dilated instead. Neither loads
  ImageNet weights (no runtime dependency ships them).
- Decoder widths follow the encoder: 256/128/64 with 256-wide point heads after the ResNet-50,
  128/64/32 with 128-wide heads (coarse heads 32) after the MobileNetV3, which puts the light
  model near the paper's 3.33 M parameters.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from .base import SegmentationModel, resize_mask

BLOCK_NAMES = ("S8_0", "S8_1", "S8_2", "S4_2", "S8_3", "S4_3", "S2_3")
# Output stride of each block: the input stride halved.
BLOCK_STRIDES = {"S8_0": 4, "S8_1": 4, "S8_2": 4, "S4_2": 2, "S8_3": 4, "S4_3": 2, "S2_3": 1}


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, dilation * (kernel // 2), dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


# --------------------------------------------------------------------------- encoders


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1 x4, each with BN; projection shortcut
    on a change of shape. ``[B,cin,H,W] -> [B,4·width,H/stride,W/stride]``."""

    def __init__(self, cin: int, width: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, 4 * width, 1, stride, bias=False), nn.BatchNorm2d(4 * width))
                           if stride != 1 or cin != 4 * width else None)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + shortcut)


def _res_stage(cin: int, width: int, blocks: int, stride: int, dilation: int) -> nn.Sequential:
    # The first block of a dilated stage uses half the dilation, as dilated ResNets do, to avoid gridding.
    first = Bottleneck(cin, width, stride, max(1, dilation // 2))
    return nn.Sequential(first, *(Bottleneck(4 * width, width, 1, dilation) for _ in range(blocks - 1)))


class PyramidPooling(nn.Module):
    """PSPNet pyramid pooling: average-pool to each ``bins`` grid, 1x1 conv to ``cin/len(bins)``,
    upsample, concatenate with the input, 1x1 conv-BN-ReLU to ``cout``."""

    def __init__(self, cin: int, cout: int, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(nn.Conv2d(cin, cin // len(bins), 1, bias=False) for _ in bins)
        self.bottleneck = _conv_bn_relu(cin + len(bins) * (cin // len(bins)), cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(F.adaptive_avg_pool2d(x, b)), size=size, mode="bilinear", align_corners=False)
                  for b, stage in zip(self.bins, self.stages)]
        return self.bottleneck(torch.cat([x, *pooled], 1))


class ResNet50Encoder(nn.Module):
    """Dilated ResNet-50 with pyramid pooling. ``[B,cin,H,W]`` -> features at strides 2, 4 and 8
    (``channels`` = (base, 4·base, out_channels)). ``base`` scales every width; ``blocks`` the depth."""

    def __init__(self, in_channels: int = 3, base: int = 64, blocks: tuple[int, ...] = (3, 4, 6, 3),
                 out_channels: int = 1024, bins: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.layer1 = _res_stage(base, base, blocks[0], 1, 1)
        self.layer2 = _res_stage(4 * base, 2 * base, blocks[1], 2, 1)
        self.layer3 = _res_stage(8 * base, 4 * base, blocks[2], 1, 2)
        self.layer4 = _res_stage(16 * base, 8 * base, blocks[3], 1, 4)
        self.psp = PyramidPooling(32 * base, out_channels, bins)
        self.channels = (base, 4 * base, out_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s2 = F.relu(self.bn1(self.conv1(x)))
        s4 = self.layer1(F.max_pool2d(s2, 3, 2, 1))
        return s2, s4, self.psp(self.layer4(self.layer3(self.layer2(s4))))


# MobileNetV3-Large (Howard et al., Table 1): kernel, expansion, out, squeeze-excite, hard-swish, stride.
MOBILENETV3_LARGE = (
    (3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1),
)


def _divisible(value: float, divisor: int = 8) -> int:
    """Round to a multiple of ``divisor`` without losing more than 10 % (MobileNet's width rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    """Channel gating: global average, 1x1 to ``channels/4`` (ReLU), 1x1 back, hard sigmoid."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, _divisible(channels / 4), 1)
        self.fc2 = nn.Conv2d(_divisible(channels / 4), channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block: 1x1 expansion, depthwise kxk (stride, dilation), optional squeeze-excite,
    1x1 projection, residual when the shape is kept."""

    def __init__(self, cin: int, kernel: int, expand: int, cout: int, se: bool, hswish: bool,
                 stride: int, dilation: int):
        super().__init__()
        act = nn.Hardswish if hswish else nn.ReLU
        layers = []
        if expand != cin:
            layers += [nn.Conv2d(cin, expand, 1, bias=False), nn.BatchNorm2d(expand), act()]
        layers += [nn.Conv2d(expand, expand, kernel, stride, dilation * (kernel // 2), dilation, groups=expand,
                             bias=False), nn.BatchNorm2d(expand), act()]
        if se:
            layers.append(SqueezeExcite(expand))
        layers += [nn.Conv2d(expand, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Encoder(nn.Module):
    """MobileNetV3-Large's inverted-residual blocks, kept at output stride 8 by dilation (without
    the classifier's 1x1 960-channel conv). ``[B,cin,H,W]`` -> features at strides 2, 4 and 8
    (``channels``); ``width_mult`` scales every width."""

    def __init__(self, in_channels: int = 3, width_mult: float = 1.0):
        super().__init__()
        stem = _divisible(16 * width_mult)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem),
                                  nn.Hardswish())
        self.blocks = nn.ModuleList()
        cin, stride, dilation, taps = stem, 2, 1, {}
        for kernel, expand, cout, se, hswish, step in MOBILENETV3_LARGE:
            if step == 2 and stride == 8:
                dilation *= 2
                step = 1
            stride *= step
            expand, cout = _divisible(expand * width_mult), _divisible(cout * width_mult)
            self.blocks.append(InvertedResidual(cin, kernel, expand, cout, se, hswish, step, dilation))
            taps[stride] = len(self.blocks) - 1
            cin = cout
        # The last block at each stride gives that stride's feature.
        self.tap2, self.tap4 = taps[2], taps[4]
        self.channels = (self.blocks[self.tap2].block[-1].num_features,
                         self.blocks[self.tap4].block[-1].num_features, cin)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stem(x)
        s2 = s4 = x
        for index, block in enumerate(self.blocks):
            x = block(x)
            if index == self.tap2:
                s2 = x
            if index == self.tap4:
                s4 = x
        return s2, s4, x


ENCODERS = {"resnet50": ResNet50Encoder, "mobilenetv3": MobileNetV3Encoder}
# Decoder widths (stride 8, 4, 2), coarse-head and point-head widths for each encoder.
DECODER_DEFAULTS = {"resnet50": ((256, 128, 64), 64, 256), "mobilenetv3": ((128, 64, 32), 32, 128)}


# --------------------------------------------------------------------------- HierPR


def select_uncertain(logits: Tensor, fraction: float) -> Tensor:
    """Flat indices ``[B,k]`` of the ``k = max(1, round(fraction·h·w))`` pixels of each
    ``[B,1,h,w]`` map with the smallest ``|sigmoid(logit) - 0.5|`` (equivalently ``|logit|``)."""
    flat = logits.detach().flatten(1).abs()
    k = max(1, round(fraction * flat.shape[1]))
    return flat.topk(k, dim=1, largest=False).indices


def point_coordinates(index: Tensor, size: tuple[int, int]) -> Tensor:
    """``grid_sample`` coordinates ``[B,1,k,2]`` (x, y in -1..1) of the centres of flat pixel
    ``index`` ``[B,k]`` on a grid of ``size``."""
    h, w = size
    x = ((index % w).float() + 0.5) / w * 2 - 1
    y = ((index // w).float() + 0.5) / h * 2 - 1
    return torch.stack([x, y], -1).unsqueeze(1)


class PointHead(nn.Module):
    """PointRend-style MLP over points: ``[B,cin,k]`` features and ``[B,1,k]`` coarse logits ->
    ``[B,1,k]`` logits; the coarse logit is appended to every layer's input."""

    def __init__(self, cin: int, width: int = 256, layers: int = 3):
        super().__init__()
        self.hidden = nn.ModuleList(nn.Conv1d((cin if i == 0 else width) + 1, width, 1) for i in range(layers))
        self.predictor = nn.Conv1d(width + 1, 1, 1)

    def forward(self, features: Tensor, coarse: Tensor) -> Tensor:
        h = features
        for layer in self.hidden:
            h = F.relu(layer(torch.cat([h, coarse], 1)))
        return self.predictor(torch.cat([h, coarse], 1))


class HierPR(nn.Module):
    """One hierarchical point-wise refinement: stride-n features -> stride-n/2 logits.

    ``forward(features [B,c,h,w], fine [B,f,H4,W4], previous [B,1,h,w] | None)`` returns
    ``(coarse [B,1,h,w], refined [B,1,2h,2w])``: the coarse head's map (averaged with
    ``previous`` when given), and its x2 bilinear upsampling with the ``fraction`` most uncertain
    pixels replaced by :class:`PointHead` predictions from ``fine`` sampled there.
    """

    def __init__(self, channels: int, fine_channels: int, head_width: int = 64, point_width: int = 256,
                 point_layers: int = 3, fraction: float = 0.1):
        super().__init__()
        if not 0 < fraction <= 1:
            raise InputError(f"HierPR fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction
        self.head = nn.Sequential(nn.Conv2d(channels, head_width, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(head_width, 1, 1))
        self.points = PointHead(fine_channels, point_width, point_layers)

    def forward(self, features: Tensor, fine: Tensor, previous: Tensor | None = None) -> tuple[Tensor, Tensor]:
        coarse = self.head(features)
        if previous is not None:
            coarse = 0.5 * (coarse + previous)
        return coarse, self.refine(coarse, fine)

    def refine(self, coarse: Tensor, fine: Tensor) -> Tensor:
        """``coarse`` ``[B,1,h,w]`` -> ``[B,1,2h,2w]``: upsampled, selected points re-predicted."""
        up = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
        index = select_uncertain(up, self.fraction)
        grid = point_coordinates(index, up.shape[-2:]).to(fine.dtype)
        features = F.grid_sample(fine, grid, mode="bilinear", align_corners=False).squeeze(2)
        flat = up.flatten(2)
        at_points = flat.gather(2, index.unsqueeze(1))
        new = self.points(features, at_points).to(flat.dtype)
        return flat.scatter(2, index.unsqueeze(1), new).view_as(up)


class _Up(nn.Module):
    """x2 transposed conv, concatenated with a 1x1 projection of the encoder skip, 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, skip: int, cout: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
        self.skip = _conv_bn_relu(skip, cout, 1)
        self.fuse = _conv_bn_relu(2 * cout, cout)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.deconv(x), self.skip(skip)], 1))


class MaskEncoder(nn.Module):
    """The masks produced so far (``slots`` probability maps, missing ones zero) at stride 8 ->
    a ``[B,width,h8,w8]`` conditioning added to the stride-8 features."""

    def __init__(self, width: int, slots: int = 3):
        super().__init__()
        self.slots = slots
        self.encode = nn.Sequential(_conv_bn_relu(slots, width), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, masks: list[Tensor], size: tuple[int, int]) -> Tensor:
        maps = [F.adaptive_avg_pool2d(torch.sigmoid(m), size) for m in masks]
        maps += [maps[0].new_zeros(maps[0].shape)] * (self.slots - len(maps))
        return self.encode(torch.cat(maps, 1))


class MeticulousNet(SegmentationModel):
    """Encoder, deconvolution branch and recursive HierPR decoder.

    ``in_channels=3``: MeticulousNet L, ``forward(x)``. ``in_channels=4`` (default): MeticulousNet
    H, a refiner, ``forward(x, coarse)`` with coarse logits ``[B,1,h,w]`` of any size. ``x`` is
    ``[B,3,H,W]`` with H, W multiples of 8; the output is logits ``[B,1,H,W]``. Widths left as
    None take the encoder's defaults (:data:`DECODER_DEFAULTS`).
    """

    architecture = "hierpr"
    size_multiple = 8
    native_resolution = (224, 224)
    input_normalisation = "imagenet"

    def __init__(self, encoder: str = "resnet50", in_channels: int = 4, encoder_options: dict | None = None,
                 widths: tuple[int, int, int] | None = None, head_width: int | None = None,
                 point_width: int | None = None, point_layers: int = 3, fraction: float = 0.1):
        super().__init__()
        if encoder not in ENCODERS:
            raise InputError(f"unknown MeticulousNet encoder {encoder!r}; expected one of {sorted(ENCODERS)}")
        if in_channels not in (3, 4):
            raise InputError(f"MeticulousNet takes 3 (image) or 4 (image + coarse mask) channels, got {in_channels}")
        encoder_options = dict(encoder_options or {})
        default_widths, default_head, default_point = DECODER_DEFAULTS[encoder]
        widths, head_width = tuple(widths or default_widths), head_width or default_head
        point_width = point_width or default_point
        self.config = {"encoder": encoder, "in_channels": in_channels, "encoder_options": encoder_options,
                       "widths": list(widths), "head_width": head_width, "point_width": point_width,
                       "point_layers": point_layers, "fraction": fraction}
        # MeticulousNet L predicts from the image alone; H refines a coarse mask.
        self.takes_coarse = in_channels == 4
        self.role = "refiner" if self.takes_coarse else "coarse"
        self.encoder = ENCODERS[encoder](in_channels=in_channels, **encoder_options)
        c2, c4, c8 = self.encoder.channels
        w8, w4, w2 = widths
        self.d8_init = _conv_bn_relu(c8, w8)
        self.d8 = nn.Sequential(nn.Conv2d(c8, w8, 3, padding=1, bias=False), nn.BatchNorm2d(w8))
        self.mask_encoder = MaskEncoder(w8)
        self.d4 = _Up(w8, c4, w4)
        self.d2 = _Up(w4, c2, w2)
        block = {"fine_channels": c4, "head_width": head_width, "point_width": point_width,
                 "point_layers": point_layers, "fraction": fraction}
        self.s8_init = HierPR(w8, **block)
        self.s8 = HierPR(w8, **block)
        self.s4 = HierPR(w4, **block)
        self.s2 = HierPR(w2, **block)

    def forward(self, x: Tensor, coarse: Tensor | None = None) -> Tensor:
        return self.forward_all(x, coarse)["S2_3"][1]

    def training_outputs(self, x: Tensor, coarse: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """Every block's outputs, for the per-block losses (see :meth:`forward_all`)."""
        return self.forward_all(x, coarse)

    def forward_all(self, x: Tensor, coarse: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """Every block's ``(coarse, refined)`` logits, in :data:`BLOCK_NAMES` order; refined maps
        are at strides 4, 4, 4, 2, 4, 2, 1 (see :data:`BLOCK_STRIDES`)."""
        self.check_input(x, coarse)
        if self.takes_coarse:
            x = torch.cat([x, 2 * resize_mask(coarse, x.shape[-2:]).to(x.dtype) - 1], 1)
        s2, s4, s8 = self.encoder(x)
        outputs = {"S8_0": self.s8_init(self.d8_init(s8), s4)}
        base8 = self.d8(s8)
        ends = [outputs["S8_0"][1]]
        for cycle in (1, 2, 3):
            f8 = F.relu(base8 + self.mask_encoder(ends, base8.shape[-2:]))
            outputs[f"S8_{cycle}"] = self.s8(f8, s4)
            last = outputs[f"S8_{cycle}"][1]
            if cycle >= 2:
                f4 = self.d4(f8, s4)
                outputs[f"S4_{cycle}"] = self.s4(f4, s4, last)
                last = outputs[f"S4_{cycle}"][1]
                if cycle == 3:
                    outputs["S2_3"] = self.s2(self.d2(f4, s2), s4, last)
                    last = outputs["S2_3"][1]
            ends.append(last)
        return {name: outputs[name] for name in BLOCK_NAMES}
