"""Conversion of ComfyUI-layout images (``[B,H,W,C]`` in 0..1) into network inputs (``[B,3,H,W]``)."""

import torch
import torch.nn.functional as F

from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalise(x: torch.Tensor, mode: str = "imagenet") -> torch.Tensor:
    """Normalise ``[B,3,H,W]`` RGB in 0..1 for a network.

    ``imagenet``: ImageNet mean/std (BiRefNet). ``max``: divide each image by its own maximum
    first, as BASNet's official test pipeline does, then ImageNet mean/std.
    """
    if mode == "max":
        peak = x.amax(dim=(1, 2, 3), keepdim=True)
        x = x / torch.where(peak > 0, peak, torch.ones_like(peak))
    elif mode != "imagenet":
        raise InputError(f"unknown input normalisation {mode!r}; expected 'imagenet' or 'max'")
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B,H,W,3]`` -> ``[B,3,h,w]``, bilinear with antialiasing when shrinking (like PIL's resize)."""
    x = images.permute(0, 3, 1, 2)
    if tuple(x.shape[-2:]) == tuple(size):
        return x.contiguous()
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
