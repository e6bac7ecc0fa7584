"""Checks of user-supplied tensors and numbers, raising :class:`InputError` with what was seen.

ComfyUI passes IMAGE as float ``[B,H,W,C]`` in 0..1 and MASK as ``[B,H,W]``; every entry point
checks its inputs here, so a bad input reads the same wherever it enters.
"""

import math

import torch
from torch import Tensor

from .errors import InputError

# 16384² is beyond any source a user is likely to feed; larger is almost certainly a mistake
# (e.g. a video batch flattened into one frame) and would exhaust host memory. The image reader
# uses the same limit, so a file is refused for the same reason a tensor is.
MAX_SIDE = 16384
# Largest side of a model input. 4096² already needs tens of GB of activations in BiRefNet; a
# larger request (a typo such as 100000) would try to allocate far more than any machine has.
MAX_MODEL_SIDE = 4096
# Values a little outside 0..1 come from resampling (bicubic/Lanczos overshoot) and are clamped;
# anything further out is not a 0..1 image (most often 0..255 data) and is refused.
RANGE_TOLERANCE = 0.25


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
    if image.shape[0] == 0:
        raise InputError(f"{name} batch is empty: there is no frame to work on")
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


def check_images(images: torch.Tensor, name: str = "image", *, batched: bool = False) -> torch.Tensor:
    """Check a ``[B,H,W,3|4]`` float image batch; returns RGB ``[B,H,W,3]`` in 0..1.

    ``[H,W,C]`` gets a batch dimension unless ``batched`` (ComfyUI's IMAGE is always 4-D, so a
    node asks for ``batched``). Refused with :class:`InputError`: channels-first layouts, empty
    batches or sides, sides above :data:`MAX_SIDE`, NaN/Inf, and values outside 0..1 by more
    than :data:`RANGE_TOLERANCE` (e.g. 0..255 data). Smaller overshoots are clamped to 0..1.
    """
    if not isinstance(images, torch.Tensor):
        raise InputError(f"{name} must be a torch tensor, got {type(images).__name__}")
    if images.ndim == 3 and not batched:
        images = images.unsqueeze(0)
    if images.ndim == 4 and images.shape[1] in (3, 4) and (
            images.shape[-1] not in (3, 4) or images.shape[2] > images.shape[1]):
        # [B,C,H,W] read as [B,H,W,C] is an image 3 or 4 pixels tall (and usually wider): not a
        # real input, but a layout mistake that would otherwise run and give a meaningless mask.
        raise InputError(
            f"{name} {_shape(images)} looks channels-first [B,C,H,W]; ComfyUI images are "
            f"[B,H,W,C]: use image.permute(0, 2, 3, 1)")
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
    return _in_unit_range(images[..., :3], name)


def _in_unit_range(images: Tensor, name: str) -> Tensor:
    low, high = (v.item() for v in torch.aminmax(images.detach()))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{name} contains NaN or infinite values; one such pixel would make the whole "
                         f"result NaN. Replace them first (e.g. torch.nan_to_num(image, 0.0, 1.0, 0.0))")
    if low < -RANGE_TOLERANCE or high > 1 + RANGE_TOLERANCE:
        hint = "; 8-bit data needs dividing by 255" if high > 2 else ""
        raise InputError(f"{name} values must be in 0..1, got {low:g}..{high:g}{hint}")
    if low < 0 or high > 1:
        return images.clamp(0.0, 1.0)
    return images


def check_model_side(value: int, name: str = "resolution") -> int:
    """A requested model input side: a whole number up to :data:`MAX_MODEL_SIDE`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a whole number of pixels >= 1, got {value!r}")
    if value > MAX_MODEL_SIDE:
        raise InputError(f"{name} {value} is above the largest model input side, {MAX_MODEL_SIDE} px; "
                         f"for large images use the high-resolution pipeline (--hires) instead")
    return value
