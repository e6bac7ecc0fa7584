"""Region overlap: IoU and Boundary IoU of binarised masks.

Both masks are binarised with :func:`.inputs.as_binary`. Two empty regions agree perfectly,
so their IoU is 1.
"""

import numpy as np

from .inputs import as_binary, check_pair
from .morphology import erode_square


def _binary_pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = as_binary(pred, "prediction"), as_binary(gt)
    check_pair(p, g)
    return p, g


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def iou(pred, gt) -> float:
    """Intersection over union of the binarised prediction and ground truth."""
    return _overlap(*_binary_pair(pred, gt))


def boundary_width(height: int, width: int, ratio: float = 0.02) -> int:
    """Boundary IoU's ``d``: ``ratio`` of the image diagonal, rounded, at least 1 px."""
    return max(1, round(ratio * float(np.hypot(height, width))))


def inner_boundary(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of a bool ``[H,W]`` mask within ``width`` px (chessboard distance) of its contour.

    The image frame counts as contour, as in Cheng et al.'s reference evaluation.
    """
    return mask & ~erode_square(mask, width)


def boundary_iou(pred, gt, ratio: float = 0.02) -> float:
    """Boundary IoU of Cheng et al., "Boundary IoU", CVPR 2021.

    IoU of the two masks' inner boundary regions (pixels within ``d`` of each mask's contour,
    ``d`` = ``ratio`` x image diagonal, see :func:`boundary_width`). The distance is the
    chessboard distance of repeated 3x3 erosions, as in the authors' evaluation code.
    """
    p, g = _binary_pair(pred, gt)
    d = boundary_width(*g.shape, ratio=ratio)
    return _overlap(inner_boundary(p, d), inner_boundary(g, d))
