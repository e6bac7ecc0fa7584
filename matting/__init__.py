"""Matting tools on torch tensors in ComfyUI layouts, on whatever device the tensors are on.

Masks are ``[B,H,W]`` (``[H,W]`` is accepted as one frame), images ``[B,H,W,3]``, RGBA
``[B,H,W,4]``, all float in 0..1. No ComfyUI import: the nodes wrap these functions.
"""

from .composite import composite, parse_colour, premultiply, straight_rgba, unpremultiply
from .foreground import (
    METHODS,
    blur_fusion_foreground,
    estimate_foreground,
    multilevel_foreground,
)
from .mask_ops import (
    choke_spread,
    feather,
    fill_holes,
    invert,
    levels,
    remove_small_islands,
    threshold,
)

__all__ = [
    "METHODS",
    "blur_fusion_foreground",
    "choke_spread",
    "composite",
    "estimate_foreground",
    "feather",
    "fill_holes",
    "invert",
    "levels",
    "multilevel_foreground",
    "parse_colour",
    "premultiply",
    "remove_small_islands",
    "straight_rgba",
    "threshold",
    "unpremultiply",
]
