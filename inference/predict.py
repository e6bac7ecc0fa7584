"""One-shot inference: images of any size in, probabilities at the input size out."""

import math
from typing import Callable

import torch
from torch import nn

from ..checks import MAX_MODEL_SIDE, check_images, check_model_side
from ..errors import InputError
from .images import normalise, resize_images
from .prediction import Prediction

ProgressFn = Callable[[int, int], None]


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def inference_size(model: nn.Module, image_size: tuple[int, int], resolution: int | None = None,
                   keep_aspect: bool = False) -> tuple[int, int]:
    """The ``(h, w)`` a model runs at for an image of ``image_size`` ``(H, W)``.

    ``resolution=None`` uses the model's native size; a dynamic model (``native_resolution`` is
    None) runs near the image's own size, clamped to ``resolution_range``. An int asks for an
    ``N×N`` input. With ``keep_aspect`` the input keeps the image's aspect ratio and the pixel
    count of the square/native size, so objects appear at the scale the model was trained on.
    Every side is rounded to the model's ``size_multiple`` and kept at most
    :data:`~..checks.MAX_MODEL_SIDE`; ``keep_aspect`` also keeps each side within twice the
    square's side, so a 1×5000 strip runs at 32×2048 rather than asking for 32×72416.
    """
    multiple = getattr(model, "size_multiple", 32)
    h, w = image_size
    if resolution is not None:
        check_model_side(resolution)
        smallest = getattr(model, "min_resolution", multiple)
        if resolution < smallest:
            raise InputError(f"resolution {resolution} is too small for this model; use at least {smallest}")
        target = (resolution, resolution)
    elif getattr(model, "native_resolution", None) is not None:
        target = tuple(model.native_resolution)
    else:
        low, high = getattr(model, "resolution_range", (256, 2304))
        scale = min(1.0, high / max(h, w))
        scale = max(scale, low / min(h, w))
        return (min(high, _round_to(h * scale, multiple)), min(high, _round_to(w * scale, multiple)))
    if keep_aspect:
        area = target[0] * target[1]
        scale = math.sqrt(area / (h * w))
        longest = min(MAX_MODEL_SIDE, 2 * max(target))
        return (min(longest, _round_to(h * scale, multiple)), min(longest, _round_to(w * scale, multiple)))
    return (_round_to(target[0], multiple), _round_to(target[1], multiple))


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def predict_logits(model: nn.Module, images: torch.Tensor, *, resolution: int | None = None,
                   keep_aspect: bool = False, batch_size: int = 1,
                   progress: ProgressFn | None = None) -> Prediction:
    """Run ``model`` on ``images`` ``[B,H,W,3]`` (0..1) and keep the logits at model resolution.

    Images are moved to the model's device one batch at a time and resized and normalised
    there; logits are returned as float32 on the model's device. ``progress(done, total)`` is
    called after every batch (a ComfyUI node uses it for its progress bar and interruption).
    """
    images = check_images(images)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    device, dtype = model_device_dtype(model)
    size = inference_size(model, tuple(images.shape[1:3]), resolution, keep_aspect)
    mode = getattr(model, "input_normalisation", "imagenet")
    total = images.shape[0]
    outputs = []
    with torch.inference_mode():
        for start in range(0, total, batch_size):
            chunk = images[start:start + batch_size].to(device=device, dtype=torch.float32, non_blocking=True)
            x = normalise(resize_images(chunk, size), mode).to(dtype)
            outputs.append(model(x).float())
            if progress is not None:
                progress(min(start + batch_size, total), total)
    return Prediction(torch.cat(outputs), tuple(images.shape[1:3]))


def predict(model: nn.Module, images: torch.Tensor, *, resolution: int | None = None,
            keep_aspect: bool = False, batch_size: int = 1,
            progress: ProgressFn | None = None) -> torch.Tensor:
    """Foreground probabilities ``[B,H,W]`` at the input size, on the input's device."""
    prediction = predict_logits(model, images, resolution=resolution, keep_aspect=keep_aspect,
                                batch_size=batch_size, progress=progress)
    with torch.inference_mode():
        return prediction.probabilities().to(images.device)
