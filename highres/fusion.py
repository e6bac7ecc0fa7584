"""Global-local fusion: one prediction from a global pass and a local refinement.

A :class:`Fusion` is any callable ``(global, local, images) -> Prediction``. :class:`BandFusion`
is the training-free one: the local result replaces the global one only inside the uncertain
band of the global prediction, with a smooth band weight. Where the global pass is confident
it is kept as is, so a window that misreads its crop (a salient thing in the background) can
only change pixels the global pass was unsure about. A learned fusion such as HRSOD's GLFN
plugs in through the same interface; it may use the image and the local ``support``.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from ..errors import InputError
from ..inference.prediction import Prediction
from .resample import resize_rows, row_stripes
from .uncertainty import UncertainBand


class Fusion(ABC):
    """Combines ``global_pred`` and ``local_pred`` (same images) into one full-resolution prediction."""

    @abstractmethod
    def __call__(self, global_pred: Prediction, local_pred: Prediction,
                 images: torch.Tensor | None = None) -> Prediction:
        """``images`` is the ``[B,H,W,3]`` batch both predictions were made from."""


def _check_pair(global_pred: Prediction, local_pred: Prediction) -> None:
    if global_pred.batch != local_pred.batch or tuple(global_pred.image_size) != tuple(local_pred.image_size):
        raise InputError(
            f"cannot fuse predictions of different images: global is {global_pred.batch} x "
            f"{global_pred.image_size}, local is {local_pred.batch} x {local_pred.image_size}")


def blend(global_pred: Prediction, local_pred: Prediction, weight: torch.Tensor) -> Prediction:
    """``global + weight·(local - global)`` on logits, at full image resolution.

    ``weight`` ``[B,1,h,w]`` in 0..1 may be on any grid; it is resized bilinearly with the
    predictions, stripe by stripe, so only the result is ever held at full size. The result is
    on the local prediction's device.
    """
    _check_pair(global_pred, local_pred)
    if weight.ndim != 4 or weight.shape[0] != global_pred.batch or weight.shape[1] != 1:
        raise InputError(f"blend weight must be [B,1,h,w] with B={global_pred.batch}, got {list(weight.shape)}")
    size = tuple(global_pred.image_size)
    device = local_pred.logits.device
    coarse, weight = global_pred.logits.to(device), weight.to(device=device, dtype=torch.float32)
    with torch.inference_mode():
        out = torch.empty(global_pred.batch, 1, *size, device=device)
        for index in range(global_pred.batch):
            for start, stop in row_stripes(*size):
                rows = slice(index, index + 1)
                torch.lerp(resize_rows(coarse[rows], size, start, stop),
                           resize_rows(local_pred.logits[rows], size, start, stop),
                           resize_rows(weight[rows], size, start, stop),
                           out=out[rows, :, start:stop])
    return Prediction(out, size)


@dataclass(frozen=True)
class BandFusion(Fusion):
    """Local replaces global inside ``band`` of the global prediction (HRSOD's replace-and-average
    fusion, made seamless): weight 1 on the band, a smooth fall-off around it, 0 elsewhere."""

    band: UncertainBand = field(default_factory=UncertainBand)

    def __call__(self, global_pred: Prediction, local_pred: Prediction,
                 images: torch.Tensor | None = None) -> Prediction:
        _check_pair(global_pred, local_pred)
        return blend(global_pred, local_pred, self.band.weight(global_pred))
