"""Validation and conversion of ComfyUI-layout images and masks.

ComfyUI passes IMAGE as float ``[B,H,W,C]`` in 0..1 and MASK as ``[B,H,W]``; the networks want
``[B,3,H,W]``. These helpers are the one place where user tensors are checked, so every entry
point reports a bad input the same way.
"""

import torch
import torch.nn.functional as F

from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# 16384² is beyond any source a user is likely to feed; larger is almost certainly a mistake
# (e.g. a video batch flattened into one frame) and would exhaust host memory.
MAX_SIDE = 16384


def check_images(images: torch.Tensor, name: str = "image") -> torch.Tensor:
    """Check a ``[B,H,W,3|4]`` float image batch (``[H,W,C]`` gets a batch dim); returns RGB ``[B,H,W,3]``."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a torch tensor, got {type(images).__name__}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise InputError(
            f"{name} must be [B,H,W,3] (ComfyUI IMAGE) or [B,H,W,4], got shape {list(images.shape)}")
    if not images.is_floating_point():
        raise InputError(f"{name} must be a float tensor with values in 0..1, got {images.dtype}")
    b, h, w, _ = images.shape
    if b == 0:
        raise InputError(f"{name} batch is empty: nothing to segment")
    if h == 0 or w == 0:
        raise InputError(f"{name} has an empty side: {h}x{w}")
    if max(h, w) > MAX_SIDE:
        raise InputError(f"{name} is {w}x{h}; the largest supported side is {MAX_SIDE} px")
    return images[..., :3]


def check_masks(masks: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Check a ``[B,H,W]`` float mask batch (``[H,W]`` gets a batch dim)."""
    if not isinstance(masks, torch.Tensor):
        raise InputError(f"{name} must be a torch tensor, got {type(masks).__name__}")
    if masks.ndim == 2:
        masks = masks.unsqueeze(0)
    if masks.ndim != 3:
        raise InputError(f"{name} must be [B,H,W] (ComfyUI MASK) or [H,W], got shape {list(masks.shape)}")
    if not masks.is_floating_point():
        raise InputError(f"{name} must be a float tensor with values in 0..1, got {masks.dtype}")
    if masks.shape[0] == 0:
        raise InputError(f"{name} batch is empty")
    return masks


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
