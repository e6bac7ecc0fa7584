"""Mask edits in pixel units at full resolution: levels, threshold, choke/spread, feather,
fill holes, remove small islands, invert.

Every function takes a float mask ``[B,H,W]`` (or ``[H,W]``, treated as one frame) with values
in 0..1, works on the mask's device and dtype, and returns a new ``[B,H,W]`` mask.
"""

import math

import kornia
import torch
from torch import Tensor

from ..checks import as_mask, check_number, working_dtype
from ..errors import InputError
from .components import component_sizes, label_components
from .morphology import disc_max, disc_min

# Sub-threshold pixels at or above this level still join a removed island's soft edge; below
# it a pixel is invisible in 8-bit output, so faint noise does not chain islands together.
_VISIBLE = 1.0 / 255.0


def invert(mask: Tensor) -> Tensor:
    """``1 - mask``."""
    return 1.0 - as_mask(mask)


def levels(mask: Tensor, black_point: float = 0.0, white_point: float = 1.0,
           gamma: float = 1.0) -> Tensor:
    """Remaps ``black_point..white_point`` to ``0..1`` (clipping outside), then applies
    ``out = v ** (1 / gamma)``: as in image editors, ``gamma > 1`` lifts the mid-tones."""
    mask = as_mask(mask)
    black = check_number(black_point, "black_point", minimum=0.0, maximum=1.0)
    white = check_number(white_point, "white_point", minimum=0.0, maximum=1.0)
    gamma = check_number(gamma, "gamma")
    if white <= black:
        raise InputError(f"white_point ({white:g}) must be above black_point ({black:g})")
    if gamma <= 0.0:
        raise InputError(f"gamma must be above 0, got {gamma:g}")
    out = ((mask - black) / (white - black)).clamp_(0.0, 1.0)
    return out if gamma == 1.0 else out.pow_(1.0 / gamma)


def threshold(mask: Tensor, t: float = 0.5) -> Tensor:
    """Binary mask: 1 where ``mask >= t``, else 0."""
    mask = as_mask(mask)
    t = check_number(t, "threshold", minimum=0.0, maximum=1.0)
    return (mask >= t).to(mask.dtype)


def choke_spread(mask: Tensor, pixels: float) -> Tensor:
    """Grows (``pixels > 0``, spread/dilate) or shrinks (``pixels < 0``, choke/erode) the mask
    by ``|pixels|`` with a disc-shaped structuring element.

    Integer radii use the exact Euclidean disc ``dx² + dy² <= r²``: a single pixel spreads to
    exactly that disc, and soft edges move outward or inward unchanged in profile. A fractional
    radius ``n + f`` blends the results for discs ``n`` and ``n + 1`` with weight ``f``, so the
    edge moves smoothly with the slider instead of in whole-pixel jumps. The image border is
    not treated as background: a subject cut by the frame stays solid there. Cost grows
    linearly with the radius, not with its square.
    """
    mask = as_mask(mask)
    pixels = check_number(pixels, "pixels")
    # A disc reaching across the whole frame already covers everything; larger ones only cost.
    radius = min(abs(pixels), math.ceil(math.hypot(*mask.shape[-2:])))
    low = math.floor(radius)
    fraction = radius - low
    morph = disc_max if pixels > 0 else disc_min
    out = morph(mask, low)
    if fraction > 0.0:
        out = torch.lerp(out, morph(mask, low + 1), fraction)
    return out


def feather(mask: Tensor, pixels: float) -> Tensor:
    """Softens edges with a Gaussian blur of ``sigma = pixels / 2``, so an edge ramps over
    about ``pixels`` on each side (±2 sigma). Beyond the frame the edge pixels are repeated."""
    mask = as_mask(mask)
    pixels = check_number(pixels, "pixels", minimum=0.0)
    if pixels == 0.0:
        return mask.clone()
    sigma = pixels / 2.0
    size = 2 * math.ceil(3.0 * sigma) + 1
    blurred = kornia.filters.gaussian_blur2d(
        mask.to(working_dtype(mask)).unsqueeze(1), (size, size), (sigma, sigma),
        border_type="replicate")
    return blurred.squeeze(1).to(mask.dtype)


def fill_holes(mask: Tensor, threshold: float = 0.5) -> Tensor:
    """Sets holes to 1: background regions (``mask < threshold``, 4-connected) that do not
    reach the image border. Everything else, soft edges included, is left as it was."""
    mask = as_mask(mask)
    t = check_number(threshold, "threshold", minimum=0.0, maximum=1.0)
    background = mask < t
    labels = label_components(background, connectivity=4)
    reaches_border = torch.zeros(labels.numel() + 1, dtype=torch.bool, device=mask.device)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        reaches_border[edge.flatten()] = True
    holes = background & ~reaches_border[labels]
    return torch.where(holes, torch.ones_like(mask), mask)


def remove_small_islands(mask: Tensor, min_area_px: int, threshold: float = 0.5) -> Tensor:
    """Sets to 0 every island (8-connected region of ``mask >= threshold``) smaller than
    ``min_area_px`` pixels, together with its soft edge.

    The soft edge of a removed island is the sub-threshold area (``mask >= 1/255``) connected
    to it that touches no kept island; soft edges shared with a kept region stay.
    """
    mask = as_mask(mask)
    if isinstance(min_area_px, bool) or not isinstance(min_area_px, int) or min_area_px < 0:
        raise InputError(f"min_area_px must be a whole number >= 0, got {min_area_px!r}")
    t = check_number(threshold, "threshold", minimum=0.0, maximum=1.0)
    if t == 0.0:
        raise InputError("threshold must be above 0: at 0 the whole frame is one island")
    solid = mask >= t
    small = solid & (component_sizes(label_components(solid)) < min_area_px)
    kept = solid & ~small

    visible = solid | (mask >= _VISIBLE)
    regions = label_components(visible)
    slots = regions.numel() + 1
    has_small = torch.zeros(slots, dtype=torch.bool, device=mask.device)
    has_small[regions[small]] = True
    has_kept = torch.zeros(slots, dtype=torch.bool, device=mask.device)
    has_kept[regions[kept]] = True
    orphan_edge = visible & ~solid & has_small[regions] & ~has_kept[regions]
    return torch.where(small | orphan_edge, torch.zeros_like(mask), mask)
