"""Validation and conversion of the prediction / ground-truth pairs the metrics compare.

Every metric accepts ``[H,W]`` numpy arrays or torch tensors (leading singleton dimensions,
as in a one-image ComfyUI MASK ``[1,H,W]``, are dropped). ``uint8`` maps are on the 0..255
scale, float maps on 0..1, bool maps are already binary.
"""

import numpy as np

from ..errors import InputError


def _to_array(x, name: str) -> np.ndarray:
    if x is None:
        raise InputError(f"{name} is None; pass an [H,W] array or tensor")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise InputError(f"{name} must be a single [H,W] map, got shape {list(x.shape)}")
    if x.size == 0:
        raise InputError(f"{name} is empty (shape {list(x.shape)})")
    if x.dtype != np.bool_ and x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{name} must be bool, uint8 (0..255) or float (0..1), got {x.dtype}")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return x


def as_scores(x, name: str = "prediction") -> np.ndarray:
    """A soft map as float64 ``[H,W]`` in 0..1 (``uint8`` is divided by 255)."""
    x = _to_array(x, name)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    x = x.astype(np.float64)
    # A small tolerance lets float32 round-off through; logits or 0..255 floats are a mistake.
    if x.min() < -1e-6 or x.max() > 1 + 1e-6:
        raise InputError(
            f"{name} has values in [{x.min():.4g}, {x.max():.4g}]; float maps must lie in 0..1 "
            f"(apply a sigmoid to logits, divide 0..255 maps by 255)")
    return np.clip(x, 0.0, 1.0)


def as_binary(x, name: str = "ground truth") -> np.ndarray:
    """A bool ``[H,W]`` mask: ``uint8`` above 128 and float above 0.5 are foreground.

    The ``uint8`` rule is the one of the standard SOD and mBA evaluation tools, so masks read
    from PNG files binarise exactly as they do there.
    """
    x = _to_array(x, name)
    if x.dtype == np.bool_:
        return x
    if x.dtype == np.uint8:
        return x > 128
    return as_scores(x, name) > 0.5


def check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    """Raise :class:`InputError` unless the two converted maps have the same ``[H,W]``."""
    if pred.shape != gt.shape:
        raise InputError(
            f"prediction is {pred.shape[1]}x{pred.shape[0]} but ground truth is "
            f"{gt.shape[1]}x{gt.shape[0]} (width x height); resize the prediction to the "
            f"ground-truth size first")
