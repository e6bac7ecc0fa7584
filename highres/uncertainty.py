"""Where a coarse prediction is unsure, and which pixels deserve a closer look.

Two selection rules from the literature are available:

- ``"mos"`` (Meticulous Object Segmentation): the ``fraction`` of pixels whose probability is
  closest to 0.5, i.e. the smallest ``|p - 0.5|``. The paper refines 10 % and found no gain
  from 15 % or 20 %.
- ``"hrsod"`` (HRSOD's Attended Patch Sampling): the pixels with ``50 < 255·p < 200``.

Both rules are applied on a *grid*: the logits of the prediction being refined, at their own
resolution (the model's input size for a coarse pass) or shrunk to at most ``max_side`` when a
prediction is already at image size. A coarse prediction is a smooth upsampling of that grid,
so the grid tells where the full-resolution image is uncertain without building any
full-resolution map.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..inference.prediction import Prediction

RULES = ("mos", "hrsod")


def _check_prob(prob: torch.Tensor) -> torch.Tensor:
    """A float ``[B,h,w]`` or ``[h,w]`` map, returned as ``[B,h,w]``."""
    if not isinstance(prob, torch.Tensor) or not prob.is_floating_point():
        raise InputError("probabilities must be a float tensor [B,h,w] with values in 0..1")
    if prob.ndim not in (2, 3) or prob.numel() == 0:
        raise InputError(f"probabilities must be [B,h,w] or [h,w], got shape {list(prob.shape)}")
    return prob.reshape(-1, *prob.shape[-2:])


def uncertainty_map(prob: torch.Tensor) -> torch.Tensor:
    """``1 - |2p - 1|``: 1 where ``p = 0.5``, 0 where the prediction is certain. Same shape as ``prob``."""
    return 1 - (2 * prob - 1).abs()


def select_mos(prob: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """The ``round(fraction·h·w)`` pixels of each image with the smallest ``|p - 0.5|``.

    ``prob`` is ``[B,h,w]`` or ``[h,w]``; returns a bool map of the same shape. Exactly that many
    pixels are selected per image, ties at the cut broken arbitrarily.
    """
    images = _check_prob(prob)
    if not 0 <= fraction <= 1:
        raise InputError(f"fraction must be between 0 and 1, got {fraction}")
    flat = (images - 0.5).abs().reshape(images.shape[0], -1)
    selected = torch.zeros(flat.shape, dtype=torch.bool, device=prob.device)
    k = round(fraction * flat.shape[1])
    if k > 0:
        selected.scatter_(1, flat.topk(k, dim=1, largest=False).indices, True)
    return selected.view(prob.shape)


def select_hrsod(prob: torch.Tensor, low: float = 50 / 255, high: float = 200 / 255) -> torch.Tensor:
    """Pixels with ``low < p < high`` (HRSOD: ``50 < 255·p < 200``). Bool, same shape as ``prob``.

    The paper compares an 8-bit saliency map; we compare the continuous probability, so a pixel
    at exactly ``50/255`` is out and anything above it is in.
    """
    _check_prob(prob)
    if not 0 <= low < high <= 1:
        raise InputError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    return (prob > low) & (prob < high)


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square dilation of a float ``[B,1,h,w]`` mask."""
    if radius == 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def _box_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a ``(2r+1)²`` box; at the image border only the pixels inside count, so a
    constant map stays exactly constant."""
    if radius == 0:
        return x
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


@dataclass(frozen=True)
class UncertainBand:
    """The band of a prediction where a local refinement may replace it.

    ``rule`` picks the pixels (``"mos"`` with ``fraction``, ``"hrsod"`` with ``low``/``high``);
    the selection is grown by ``dilation`` grid pixels, because a pixel just outside the
    uncertain set (a faint strand, the far side of an edge) is usually wrong in the same way.
    The band weight is 1 on that grown selection and falls smoothly to 0 over ``2·feather``
    grid pixels, so a blend with it has no visible edge. Distances are in grid pixels: at a
    4K image and a 1024² model one grid pixel is about four image pixels.
    """

    rule: str = "mos"
    fraction: float = 0.1
    low: float = 50 / 255
    high: float = 200 / 255
    dilation: int = 2
    feather: int = 4
    max_side: int = 2048

    def __post_init__(self):
        if self.rule not in RULES:
            raise InputError(f"unknown uncertainty rule {self.rule!r}; expected one of {RULES}")
        if not 0 <= self.fraction <= 1:
            raise InputError(f"fraction must be between 0 and 1, got {self.fraction}")
        if not 0 <= self.low < self.high <= 1:
            raise InputError(f"need 0 <= low < high <= 1, got low={self.low}, high={self.high}")
        if self.dilation < 0 or self.feather < 0:
            raise InputError("band dilation and feather must be >= 0")
        if self.max_side < 16:
            raise InputError(f"max_side must be at least 16, got {self.max_side}")

    def grid_logits(self, prediction: Prediction) -> torch.Tensor:
        """The prediction's logits ``[B,1,h,w]`` on the grid the band is computed on."""
        logits = prediction.logits
        h, w = logits.shape[-2:]
        if max(h, w) <= self.max_side:
            return logits
        scale = self.max_side / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False, antialias=True)

    def uncertainty(self, prediction: Prediction) -> torch.Tensor:
        """Uncertainty ``[B,h,w]`` (0..1) on the grid."""
        return uncertainty_map(torch.sigmoid(self.grid_logits(prediction).squeeze(1)))

    def select(self, prediction: Prediction) -> torch.Tensor:
        """The selected pixels grown by ``dilation``: bool ``[B,h,w]`` on the grid."""
        prob = torch.sigmoid(self.grid_logits(prediction).squeeze(1))
        if self.rule == "mos":
            selected = select_mos(prob, self.fraction)
        else:
            selected = select_hrsod(prob, self.low, self.high)
        return _dilate(selected.unsqueeze(1).float(), self.dilation).squeeze(1) > 0

    def weight(self, prediction: Prediction) -> torch.Tensor:
        """Band weight ``[B,1,h,w]`` on the grid: exactly 1 on :meth:`select`, 0 beyond ``2·feather``."""
        core = self.select(prediction).unsqueeze(1).float()
        # Dilating by `feather` and then blurring with a kernel of the same reach keeps the
        # weight at exactly 1 on the selection; two box passes give a C1 (quadratic) ramp.
        grown = _dilate(core, self.feather)
        first = self.feather // 2
        return _box_blur(_box_blur(grown, first), self.feather - first)
