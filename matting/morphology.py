"""Grey-scale morphology with an exact Euclidean disc, in O(radius) whole-image operations.

The disc of radius ``r`` is the set of offsets ``dx² + dy² <= r²``. It is the union of one
horizontal segment per row offset ``dy``, of half-width ``isqrt(r² - dy²)``. The maximum over
the disc is therefore the maximum, over ``dy``, of a horizontal running maximum shifted by
``dy`` rows. Walking ``dy`` from the rim to the centre, the half-width only grows, so a single
running maximum is widened one pixel at a time and reused for both ``+dy`` and ``-dy``.
Pixels outside the image never take part, so a shape cut by the frame keeps its edge there.
"""

import math

import torch.nn.functional as F
from torch import Tensor


def disc_max(x: Tensor, radius: int) -> Tensor:
    """Maximum of ``x`` ``[N,H,W]`` over the disc of integer ``radius`` around each pixel
    (grey-scale dilation). ``radius = 0`` returns a copy."""
    height = x.shape[-2]
    out = x.clone()
    rows = x.unsqueeze(1)  # [N,1,H,W]: max_pool2d widens it along W only.
    half_width = 0
    for dy in range(radius, -1, -1):
        target = math.isqrt(radius * radius - dy * dy)
        while half_width < target:
            rows = F.max_pool2d(rows, (1, 3), stride=1, padding=(0, 1))
            half_width += 1
        if dy >= height:
            continue
        segment = rows[:, 0]
        out[:, : height - dy].clamp_(min=segment[:, dy:])
        if dy:
            out[:, dy:].clamp_(min=segment[:, : height - dy])
    return out


def disc_min(x: Tensor, radius: int) -> Tensor:
    """Minimum of ``x`` ``[N,H,W]`` over the disc of integer ``radius`` (grey-scale erosion)."""
    return disc_max(-x, radius).neg_()
