"""The model contract: what every network of this package declares about itself.

Inference, high-resolution refinement, training, video and the nodes read these attributes
directly; a network declares them once, as class attributes (or, where they depend on its
constructor arguments, in ``__init__``). :class:`SegmentationModel` gives the defaults.

- ``architecture``: its id in :mod:`.registry`.
- ``role``: ``"coarse"`` (image -> mask), ``"refiner"`` (image + coarse mask -> better mask) or
  ``"fusion"`` (image + a combined global/local mask -> fused mask).
- ``takes_coarse``: whether ``forward`` takes coarse logits ``[B,1,h,w]`` after the image.
- ``native_resolution``: ``(h, w)`` it was trained at, or None for a dynamic-size model, which
  runs near the image's own size within ``resolution_range`` ``(min side, max side)``.
- ``size_multiple``: input sides must be multiples of it; ``min_resolution``: smallest side.
- ``input_normalisation``: ``"imagenet"`` (mean/std) or ``"max"`` (divided by the image maximum,
  then ImageNet mean/std), see :func:`~comfyui_meticulous.inference.images.normalise`.
- ``receptive_radius``: for a network without pooling or global context, how far (pixels) an
  output pixel sees, so that it can run in stripes; None otherwise.
- ``config``: its constructor arguments (JSON-serialisable), stored with trained weights.
- :meth:`check_input`: ``InputError`` for inputs it cannot take, before any work is done.
"""

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError

ROLES = ("coarse", "refiner", "fusion")
NORMALISATIONS = ("imagenet", "max")


class SegmentationModel(nn.Module):
    """Base class of every network: the contract's defaults (see the module docstring).

    ``forward(x)`` (or ``forward(x, coarse)`` when ``takes_coarse``) maps a normalised
    ``[B,3,H,W]`` image to logits ``[B,1,H,W]``.
    """

    architecture: ClassVar[str] = ""
    role: str = "coarse"
    takes_coarse: bool = False
    native_resolution: tuple[int, int] | None = None
    resolution_range: tuple[int, int] = (256, 2304)
    size_multiple: int = 32
    min_resolution: int = 1
    input_normalisation: str = "imagenet"
    receptive_radius: int | None = None

    def __init__(self):
        super().__init__()
        self.config: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.input_normalisation not in NORMALISATIONS:
            raise TypeError(f"{cls.__name__}.input_normalisation must be one of {NORMALISATIONS}")
        if cls.role not in ROLES:
            raise TypeError(f"{cls.__name__}.role must be one of {ROLES}")

    @property
    def smallest_side(self) -> int:
        """The smallest input side it accepts: ``min_resolution`` rounded up to ``size_multiple``."""
        return -(-max(self.min_resolution, self.size_multiple) // self.size_multiple) * self.size_multiple

    def check_input(self, x: Tensor, coarse: Tensor | None = None) -> None:
        """Raise :class:`InputError` unless ``x`` is ``[B,3,H,W]`` with sides multiples of
        ``size_multiple`` and, for a network that ``takes_coarse``, ``coarse`` is ``[B,1,h,w]``."""
        if self.takes_coarse and coarse is None:
            raise InputError(f"{type(self).__name__} refines a prediction: pass the coarse logits too")
        check_pair(x, coarse if self.takes_coarse else None, self.size_multiple, type(self).__name__)

    def run(self, x: Tensor, coarse: Tensor | None = None) -> Tensor:
        """Final logits ``[B,1,H,W]``: ``self(x, coarse)`` or ``self(x)`` as the network takes them."""
        return self(x, coarse) if self.takes_coarse else self(x)

    def training_outputs(self, x: Tensor, coarse: Tensor | None = None):
        """What its training loss needs: the final logits, unless a network supervises more."""
        return self.run(x, coarse)


def require_contract(model: nn.Module) -> SegmentationModel:
    """``model`` if it implements the contract; ``InputError`` saying what to use otherwise."""
    if not isinstance(model, SegmentationModel):
        raise InputError(f"{type(model).__name__} is not a segmentation model of this package; load one "
                         f"with load_model (or subclass models.base.SegmentationModel)")
    return model


def check_pair(image: Tensor, mask: Tensor | None, multiple: int, name: str) -> None:
    """Raise :class:`InputError` unless ``image`` is ``[B,3,H,W]`` with sides multiple of
    ``multiple`` and ``mask`` (if given) is ``[B,1,h,w]`` of the same batch."""
    if image.ndim != 4 or image.shape[1] != 3:
        raise InputError(f"{name} expects images shaped [B,3,H,W]; got {list(image.shape)}")
    if image.shape[-2] % multiple or image.shape[-1] % multiple:
        raise InputError(f"{name} needs height and width that are multiples of {multiple}; got "
                         f"{image.shape[-2]}x{image.shape[-1]}. Resize the image first.")
    if mask is not None and (mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[0] != image.shape[0]):
        raise InputError(f"{name} expects coarse logits shaped [B,1,h,w] with B={image.shape[0]}; "
                         f"got {list(mask.shape)}")


def resize_mask(logits: Tensor, size: tuple[int, int]) -> Tensor:
    """Float32 probabilities ``[B,1,h,w]`` at ``size`` from logits ``[B,1,H,W]`` (bilinear on
    logits, antialiased when shrinking; in float32, which every device supports for that)."""
    logits = logits.float()
    if tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False,
                               antialias=logits.shape[-2] > size[0] or logits.shape[-1] > size[1])
    return torch.sigmoid(logits)
