"""BASNet (Qin et al., "Boundary-Aware Segmentation Network"): predict, then refine.

The prediction module is a U-Net over a ResNet-34 encoder without the strided stem, two
extra 512-channel stages, a dilated bridge and six decoder stages with a side output each.
The residual refinement module adds a correction to the finest side output.

Attribute names follow the official release, so its state dicts load with ``strict=True``.
"""

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import SegmentationModel

# Keys only BASNet's layout has together: its bridge, its coarsest side output and its refiner.
_SIGNATURE_KEYS = frozenset({
    "inconv.weight", "convbg_1.weight", "outconvb.weight", "refunet.conv_d0.weight"})

# Conv+BN+ReLU layers named ``conv{tag}``/``bn{tag}``: (tag, in, out, dilation), in the
# official registration order, which fixes the state-dict key order.
_BRIDGE = (("bg_1", 512, 512, 2), ("bg_m", 512, 512, 2), ("bg_2", 512, 512, 2))
_DECODER = (
    (("6d_1", 1024, 512, 1), ("6d_m", 512, 512, 2), ("6d_2", 512, 512, 2)),
    (("5d_1", 1024, 512, 1), ("5d_m", 512, 512, 1), ("5d_2", 512, 512, 1)),
    (("4d_1", 1024, 512, 1), ("4d_m", 512, 512, 1), ("4d_2", 512, 256, 1)),
    (("3d_1", 512, 256, 1), ("3d_m", 256, 256, 1), ("3d_2", 256, 128, 1)),
    (("2d_1", 256, 128, 1), ("2d_m", 128, 128, 1), ("2d_2", 128, 64, 1)),
    (("1d_1", 128, 64, 1), ("1d_m", 64, 64, 1), ("1d_2", 64, 64, 1)),
)
# Side-output heads from the bridge down to stage 1d: (name, in channels).
_SIDE_HEADS = (("outconvb", 512), ("outconv6", 512), ("outconv5", 512), ("outconv4", 256),
               ("outconv3", 128), ("outconv2", 64), ("outconv1", 64))


def _add_conv_bn(module: nn.Module, tag: str, cin: int, cout: int, dilation: int = 1) -> None:
    module.add_module(f"conv{tag}", nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation))
    module.add_module(f"bn{tag}", nn.BatchNorm2d(cout))


def _conv_bn_relu(module: nn.Module, tag: str, x: Tensor) -> Tensor:
    return F.relu(module.get_submodule(f"bn{tag}")(module.get_submodule(f"conv{tag}")(x)))


def _pool(x: Tensor) -> Tensor:
    return F.max_pool2d(x, 2, 2, ceil_mode=True)


def _upsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN on a residual path, 1x1 conv+BN shortcut on a
    change of stride or width. ``[B,cin,H,W] -> [B,cout,H/stride,W/stride]``."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + shortcut)


def _stage(cin: int, cout: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(cin, cout, stride),
                         *(BasicBlock(cout, cout) for _ in range(blocks - 1)))


class RefUNet(nn.Module):
    """Residual refinement: a 4-level U-Net of 64-channel conv+BN+ReLU layers predicting a
    correction that is added to its input. ``[B,1,H,W]`` logits -> ``[B,1,H,W]`` logits."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.conv0 = nn.Conv2d(1, width, 3, padding=1)
        for level in range(1, 6):
            _add_conv_bn(self, str(level), width, width)
        for level in range(4, 0, -1):
            _add_conv_bn(self, f"_d{level}", 2 * width, width)
        self.conv_d0 = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv0(x)
        skips = []
        for level in range(1, 5):
            h = _conv_bn_relu(self, str(level), h)
            skips.append(h)
            h = _pool(h)
        h = _conv_bn_relu(self, "5", h)
        for level in range(4, 0, -1):
            skip = skips[level - 1]
            h = _conv_bn_relu(self, f"_d{level}", torch.cat((_upsample(h, skip.shape[-2:]), skip), 1))
        return x + self.conv_d0(h)


class BASNet(SegmentationModel):
    """BASNet for one foreground channel, in the official state-dict layout.

    Input ``[B,3,H,W]``, already normalised (see ``normalise_basnet_input``), with H and W
    multiples of 32. ``forward`` gives the refined logits ``[B,1,H,W]``; the prediction is
    their sigmoid.
    """

    architecture = "basnet"
    native_resolution = (256, 256)
    size_multiple = 32
    input_normalisation = "max"

    def __init__(self):
        super().__init__()
        self.inconv = nn.Conv2d(3, 64, 3, padding=1)
        self.inbn = nn.BatchNorm2d(64)
        # ResNet-34 layer1..4, kept at full input resolution because the stem is gone.
        self.encoder1 = _stage(64, 64, 3, 1)
        self.encoder2 = _stage(64, 128, 4, 2)
        self.encoder3 = _stage(128, 256, 6, 2)
        self.encoder4 = _stage(256, 512, 3, 2)
        self.resb5_1, self.resb5_2, self.resb5_3 = (BasicBlock(512, 512) for _ in range(3))
        self.resb6_1, self.resb6_2, self.resb6_3 = (BasicBlock(512, 512) for _ in range(3))
        for layer in _BRIDGE:
            _add_conv_bn(self, *layer)
        for stage in _DECODER:
            for layer in stage:
                _add_conv_bn(self, *layer)
        for name, cin in _SIDE_HEADS:
            self.add_module(name, nn.Conv2d(cin, 1, 3, padding=1))
        self.refunet = RefUNet()

    def forward(self, x: Tensor) -> Tensor:
        """``[B,3,H,W]`` -> refined logits ``[B,1,H,W]``."""
        return self.refunet(self.outconv1(self._features(x)[-1]))

    def forward_all(self, x: Tensor) -> tuple[Tensor, ...]:
        """``[B,3,H,W]`` -> 8 logit maps ``[B,1,H,W]`` in the official order: refined, then the
        side outputs d1 (finest) .. d6, then the bridge's."""
        features = self._features(x)
        size = x.shape[-2:]
        bridge, *coarse_to_fine = (_upsample(self.get_submodule(name)(h), size)
                                   for (name, _), h in zip(_SIDE_HEADS, features))
        d1 = coarse_to_fine[-1]
        return (self.refunet(d1), *reversed(coarse_to_fine), bridge)

    def training_outputs(self, x: Tensor, coarse: Tensor | None = None) -> tuple[Tensor, ...]:
        """Every output, for the hybrid loss's deep supervision (see :meth:`forward_all`)."""
        return self.forward_all(x)

    def _features(self, x: Tensor) -> list[Tensor]:
        """Bridge output, then decoder stages 6d..1d (strides 32, 32, 16, 8, 4, 2, 1)."""
        self.check_input(x)
        h1 = self.encoder1(F.relu(self.inbn(self.inconv(x))))
        h2 = self.encoder2(h1)
        h3 = self.encoder3(h2)
        h4 = self.encoder4(h3)
        h5 = self.resb5_3(self.resb5_2(self.resb5_1(_pool(h4))))
        h6 = self.resb6_3(self.resb6_2(self.resb6_1(_pool(h5))))
        h = h6
        for tag, *_ in _BRIDGE:
            h = _conv_bn_relu(self, tag, h)
        features = [h]
        for stage, skip in zip(_DECODER, (h6, h5, h4, h3, h2, h1)):
            h = torch.cat((_upsample(h, skip.shape[-2:]), skip), 1)
            for tag, *_ in stage:
                h = _conv_bn_relu(self, tag, h)
            features.append(h)
        return features


def is_basnet_state_dict(state_dict: Mapping[str, Tensor]) -> bool:
    """Whether ``state_dict`` has BASNet's official key layout (key names only)."""
    return _SIGNATURE_KEYS <= state_dict.keys()
