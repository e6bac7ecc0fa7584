"""Boundary accuracy of the Meticulous Object Segmentation paper: mBA and MQ.

mBA (from CascadePSP): for an image of size ``w x h``, five radii are spread over
``[1, (w + h) / 300]``; each radius ``r`` gives a band ``b_r``, the ground truth's dilation
minus its erosion with a disc of diameter ``2r + 1``; mBA is the mean over the radii of the
pixel accuracy of the binarised prediction inside the band.

MQ (Meticulosity Quality) adds the body: ``MQ = 1/2 * accuracy outside the widest band +
1/2 * mBA``, so a perfect mask scores 1.

Accuracy over an empty region is undefined, so a ground truth without any boundary (all
background or all foreground) gives NaN for both; dataset averages skip such images.
"""

import numpy as np

from .inputs import as_binary, check_pair
from .morphology import gradient

RADII = 5


def mba_radii(height: int, width: int, count: int = RADII) -> list[int]:
    """Band radii for a ``width x height`` image: ``1 + int((R - 1) / count * i)``, ``R = (w + h) / 300``.

    The reference mBA tool samples ``count`` evenly spaced points starting at 1 and stops one
    step short of ``R``; images with ``w + h < 675`` get ``[1] * count``.
    """
    top = (width + height) / 300
    return [1 + int((top - 1) / count * i) for i in range(count)]


def _accuracy(correct: np.ndarray, region: np.ndarray) -> float:
    size = int(region.sum())
    return float("nan") if size == 0 else int((correct & region).sum()) / size


def mba_mq(pred, gt) -> tuple[float, float]:
    """``(mBA, MQ)`` of a prediction against the ground truth; both binarised by ``as_binary``."""
    p, g = as_binary(pred, "prediction"), as_binary(gt)
    check_pair(p, g)
    correct = p == g
    radii = mba_radii(*g.shape)
    bands = {r: gradient(g, r) for r in set(radii)}
    mba = float(np.mean([_accuracy(correct, bands[r]) for r in radii]))
    body = _accuracy(correct, ~bands[max(radii)])
    return mba, 0.5 * body + 0.5 * mba


def mba(pred, gt) -> float:
    """Mean boundary accuracy (see the module docstring)."""
    return mba_mq(pred, gt)[0]


def mq(pred, gt) -> float:
    """Meticulosity Quality (see the module docstring)."""
    return mba_mq(pred, gt)[1]
