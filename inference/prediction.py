"""The value that flows between the coarse, refine and fuse blocks."""

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..errors import InputError


@dataclass(frozen=True)
class Prediction:
    """Segmentation logits covering a whole image batch.

    ``logits`` is ``[B,1,h,w]`` float32 at whatever resolution the producing block worked at
    (the model's input size for a coarse pass, up to the image size after refinement); it always
    spans the full image, so mapping back is a resize. It stays on the compute device so chained
    blocks do not round-trip through host memory.

    ``support`` (``[B,1,h,w]`` in 0..1, or None for "everywhere") says where the logits carry
    evidence: a local refiner only looked at some windows, and fusion weighs it by this map.
    """

    logits: torch.Tensor
    image_size: tuple[int, int]
    support: torch.Tensor | None = None

    def __post_init__(self):
        if self.logits.ndim != 4 or self.logits.shape[1] != 1:
            raise InputError(f"Prediction logits must be [B,1,h,w], got {list(self.logits.shape)}")

    @property
    def batch(self) -> int:
        return self.logits.shape[0]

    def logits_at(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Logits ``[B,1,H,W]`` resized (bilinear) to ``size``, the image size by default."""
        size = tuple(size or self.image_size)
        if tuple(self.logits.shape[-2:]) == size:
            return self.logits
        return F.interpolate(self.logits, size=size, mode="bilinear", align_corners=False)

    def probabilities(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Foreground probabilities ``[B,H,W]`` at ``size`` (the image size by default).

        Resizing happens on logits, before the sigmoid, so edges stay sharp when upsampled.
        """
        return torch.sigmoid(self.logits_at(size)).squeeze(1)

    def to(self, device: torch.device | str) -> "Prediction":
        support = None if self.support is None else self.support.to(device)
        return replace(self, logits=self.logits.to(device), support=support)
