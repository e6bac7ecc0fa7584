"""Where a refiner's or fusion's coarse input comes from during training.

A coarse source maps a batch of images ``[B,3,H,W]`` (0..1, on the training device), their
ground truth ``[B,1,H,W]`` and a seeded ``torch.Generator`` to coarse logits ``[B,1,h,w]`` of
any resolution covering the whole images. Two are provided:

- :class:`PerturbedTruth`: the ground truth degraded the way a low-resolution segmenter
  degrades it (MeticulousNet H and CascadePSP train on perturbed ground truth). No model needed.
- :class:`FrozenModel`: a frozen segmentation model (BiRefNet, BASNet), either its one-shot
  prediction or, for training a fusion, the training-free high-resolution pipeline's fused
  result, which is what a learned fusion sees at inference.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..highres import HighResOptions, segment_highres
from ..inference import predict_logits


@dataclass(frozen=True)
class PerturbedTruth:
    """The ground truth with its boundary moved by up to ``shift`` of the image side (dilated or
    eroded), seen at ``1/scale`` of its size (``scale`` drawn per batch from ``scales``, the low
    side kept at 16 px or more), with smooth logit noise of amplitude ``noise`` and soft edges of
    a slope drawn from ``sharpness``. Thin strands vanish and corners round off, as in a
    prediction made at a quarter to a twelfth of the resolution."""

    scales: tuple[int, ...] = (4, 6, 8, 12)
    shift: float = 0.006
    noise: float = 1.5
    sharpness: tuple[float, float] = (6.0, 12.0)

    def __call__(self, images: Tensor, masks: Tensor, generator: torch.Generator) -> Tensor:
        def uniform(*shape) -> Tensor:
            return torch.rand(shape, generator=generator).to(masks.device)

        b, _, h, w = masks.shape
        reach = max(1, round(self.shift * max(h, w)))
        radius = int(torch.randint(-reach, reach + 1, (1,), generator=generator))
        truth = masks.float()
        if radius > 0:
            truth = F.max_pool2d(truth, 2 * radius + 1, 1, radius)
        elif radius < 0:
            truth = -F.max_pool2d(-truth, -2 * radius + 1, 1, -radius)
        scale = self.scales[int(torch.randint(len(self.scales), (1,), generator=generator))]
        scale = max(1, min(scale, min(h, w) // 16))
        low = F.adaptive_avg_pool2d(truth, (max(1, h // scale), max(1, w // scale)))
        slope = self.sharpness[0] + (self.sharpness[1] - self.sharpness[0]) * uniform(b, 1, 1, 1)
        blobs = F.interpolate(uniform(b, 1, 4, 4) * 2 - 1, size=low.shape[-2:], mode="bicubic", align_corners=False)
        return slope * (low - 0.5) + self.noise * blobs


class FrozenModel:
    """A frozen segmentation model as the coarse source: its prediction at its own input size
    (``highres=False``) or the high-resolution pipeline's fused prediction (``highres=True``)."""

    def __init__(self, model: nn.Module, highres: bool = False, resolution: int | None = None,
                 options: HighResOptions | None = None):
        self.model = model.eval().requires_grad_(False)
        self.highres, self.resolution, self.options = highres, resolution, options or HighResOptions()

    def __call__(self, images: Tensor, masks: Tensor, generator: torch.Generator) -> Tensor:
        batch = images.permute(0, 2, 3, 1)
        if self.highres:
            return segment_highres(self.model, batch, self.options).prediction.logits.to(images.device)
        return predict_logits(self.model, batch, resolution=self.resolution, batch_size=batch.shape[0]).logits
