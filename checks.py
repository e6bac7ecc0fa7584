"""Checks of user-supplied tensors and numbers, raising :class:`InputError` with what was seen.

ComfyUI passes IMAGE as float ``[B,H,W,C]`` in 0..1 and MASK as ``[B,H,W]``; every entry point
checks its inputs here, so a bad input reads the same wherever it enters.
"""

import math

import torch
from torch import Tensor

from .errors import InputError

# 16384² is beyond any source a user is likely to feed; larger is almost certainly a mistake
# (e.g. a video batch flattened into one frame) and would exhaust host memory.
MAX_SIDE = 16384


def _shape(t: Tensor) -> str:
    return "[" + ",".join(str(s) for s in t.shape) + "]"


def _require_float(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor):
        raise InputError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise InputError(
            f"{name} must be a floating-point tensor with values in 0..1, got {t.dtype}; "
            f"convert 8-bit data with .float() / 255")


def as_mask(mask: Tensor, name: str = "mask") -> Tensor:
    """``[B,H,W]`` or ``[H,W]`` float -> ``[B,H,W]`` (a view, not a copy)."""
    _require_float(mask, name)
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim != 3 or mask.shape[-1] == 0 or mask.shape[-2] == 0:
        raise InputError(f"{name} must be [B,H,W] or [H,W], got {_shape(mask)}")
    return mask


def check_image(image: Tensor, name: str = "image", channels: int = 3) -> Tensor:
    """Checks a ComfyUI image ``[B,H,W,channels]`` float and returns it unchanged."""
    _require_float(image, name)
    if image.ndim != 4 or image.shape[-1] != channels or 0 in image.shape[1:3]:
        raise InputError(f"{name} must be [B,H,W,{channels}], got {_shape(image)}")
    return image


def check_pair(image: Tensor, mask: Tensor, image_name: str = "image",
               mask_name: str = "alpha") -> None:
    """Image ``[B,H,W,C]`` and mask ``[B,H,W]`` must describe the same frames at the same size."""
    if image.shape[:3] != mask.shape:
        raise InputError(
            f"{image_name} {_shape(image)} and {mask_name} {_shape(mask)} must have the same "
            f"batch size, height and width")
    if image.device != mask.device:
        raise InputError(
            f"{image_name} is on {image.device} but {mask_name} is on {mask.device}; "
            f"move both to the same device")


def check_number(value, name: str, *, minimum: float | None = None,
                 maximum: float | None = None) -> float:
    """A finite real number within the closed range given; returns it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        low = "-inf" if minimum is None else f"{minimum:g}"
        high = "inf" if maximum is None else f"{maximum:g}"
        raise InputError(f"{name} must be in [{low}, {high}], got {value!r}")
    return float(value)


def working_dtype(t: Tensor) -> torch.dtype:
    """Half-precision inputs are processed in float32: the solvers and sums need the mantissa."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


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
