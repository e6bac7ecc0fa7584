"""Salient-object-detection metrics: MAE, F-measure, weighted F-measure, S-measure, E-measure.

Definitions follow the papers and the conventions of the standard SOD evaluation toolboxes,
so numbers are comparable with published tables:

- Curves use 256 thresholds: the map is quantised to ``floor(255 * pred)`` and binarised
  with ``>= t`` for ``t = 0..255``. Dataset scores average the per-image curves first and take
  the maximum / mean of that average (see :mod:`.evaluate`).
- Predictions are used as given; unlike some toolboxes the map is not min-max stretched.

Every function takes ``pred`` (float 0..1 or uint8 0..255) and ``gt`` (binarised by
:func:`.inputs.as_binary`), both ``[H,W]``.
"""

import numpy as np

from .distance import nearest_feature
from .inputs import as_binary, as_scores, check_pair

EPS = np.finfo(np.float64).eps
THRESHOLDS = 256


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = as_scores(pred), as_binary(gt)
    check_pair(p, g)
    return p, g


def mae(pred, gt) -> float:
    """Mean absolute error between the soft prediction and the binary ground truth."""
    p, g = _pair(pred, gt)
    return float(np.abs(p - g).mean())


def _threshold_counts(p: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[256]`` counts of predicted-foreground pixels inside and outside the GT, per threshold ``t``."""
    # The nudge puts k/255 stored as float32 on level k rather than k - 1.
    levels = np.minimum(np.floor(p * 255.0 + 1e-4), 255).astype(np.int64)
    inside = np.bincount(levels[g], minlength=THRESHOLDS)
    outside = np.bincount(levels[~g], minlength=THRESHOLDS)
    # Pixels at level >= t: reverse cumulative sum.
    return np.cumsum(inside[::-1])[::-1], np.cumsum(outside[::-1])[::-1]


def _f_beta(precision, recall, beta2: float):
    num = (1 + beta2) * precision * recall
    den = beta2 * precision + recall
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)


def fmeasure_curve(pred, gt, beta2: float = 0.3) -> np.ndarray:
    """F-measure ``[256]`` at thresholds ``t = 0..255`` (foreground where ``255 * pred >= t``).

    Precision with no predicted foreground and recall with an empty ground truth are 0.
    """
    p, g = _pair(pred, gt)
    tp, fp = _threshold_counts(p, g)
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(int(g.sum()), 1)
    return _f_beta(precision, recall, beta2)


def adaptive_fmeasure(pred, gt, beta2: float = 0.3) -> float:
    """F-measure at the adaptive threshold ``min(2 * mean(pred), 1)`` (Achanta et al. 2009)."""
    p, g = _pair(pred, gt)
    fg = p >= min(2.0 * p.mean(), 1.0)
    tp = int((fg & g).sum())
    if tp == 0:
        return 0.0
    return float(_f_beta(tp / fg.sum(), tp / g.sum(), beta2))


def _gaussian_blur(x: np.ndarray, size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """Zero-padded ``size x size`` Gaussian filter (MATLAB ``imfilter(x, fspecial('gaussian'))``)."""
    taps = np.exp(-(np.arange(size) - (size - 1) / 2) ** 2 / (2 * sigma * sigma))
    taps /= taps.sum()
    half = size // 2
    h, w = x.shape
    padded = np.pad(x, half)
    rows = sum(t * padded[:, i : i + w] for i, t in enumerate(taps))
    return sum(t * rows[i : i + h] for i, t in enumerate(taps))


def weighted_fmeasure(pred, gt, beta2: float = 1.0) -> float:
    """Weighted F-measure of Margolin et al., "How to Evaluate Foreground Maps?", CVPR 2014.

    Errors are spread from each background pixel's nearest foreground pixel, smoothed by a 7x7
    Gaussian (sigma 5) and weighted up to 2x with distance from the object. ``beta2 = 1`` is the
    paper's default. An empty ground truth scores 0.
    """
    p, g = _pair(pred, gt)
    if not g.any():
        return 0.0
    err = np.abs(p - g)
    sq_dist, (near_row, near_col) = nearest_feature(g)
    spread = np.where(g, err, err[near_row, near_col])
    smooth = _gaussian_blur(spread)
    err_min = np.where(g & (smooth < err), smooth, err)
    weight = np.where(g, 1.0, 2.0 - np.exp(np.log(0.5) / 5.0 * np.sqrt(sq_dist)))
    err_w = err_min * weight
    tp_w = g.sum() - err_w[g].sum()
    fp_w = err_w[~g].sum()
    recall = 1.0 - err_w[g].mean()
    precision = tp_w / (tp_w + fp_w + EPS)
    return float((1 + beta2) * recall * precision / (recall + beta2 * precision + EPS))


def _object_score(x: np.ndarray) -> float:
    mean = x.mean()
    std = x.std(ddof=1) if x.size > 1 else 0.0
    return 2.0 * mean / (mean * mean + 1.0 + std + EPS)


def _ssim(p: np.ndarray, g: np.ndarray) -> float:
    """The single-window SSIM of the S-measure's region term."""
    n = p.size
    x, y = p.mean(), g.mean()
    var_x = ((p - x) ** 2).sum() / (n - 1 + EPS)
    var_y = ((g - y) ** 2).sum() / (n - 1 + EPS)
    cov = ((p - x) * (g - y)).sum() / (n - 1 + EPS)
    num = 4.0 * x * y * cov
    den = (x * x + y * y) * (var_x + var_y)
    if num != 0:
        return num / (den + EPS)
    return 1.0 if den == 0 else 0.0


def smeasure(pred, gt, alpha: float = 0.5) -> float:
    """Structure measure of Fan et al., "Structure-measure", ICCV 2017.

    ``alpha * S_object + (1 - alpha) * S_region``, clipped at 0. The region term splits the
    maps at the ground-truth centroid, rounded half to even and made 1-based, as the Python
    reference toolbox does.
    """
    p, g = _pair(pred, gt)
    coverage = g.mean()
    if coverage == 0:
        return float(1.0 - p.mean())
    if coverage == 1:
        return float(p.mean())
    s_object = coverage * _object_score(p[g]) + (1 - coverage) * _object_score(1.0 - p[~g])
    h, w = g.shape
    cy, cx = np.argwhere(g).mean(axis=0)
    y, x = int(np.round(cy)) + 1, int(np.round(cx)) + 1
    gf = g.astype(np.float64)
    s_region = 0.0
    for rows, cols in ((slice(0, y), slice(0, x)), (slice(0, y), slice(x, w)),
                       (slice(y, h), slice(0, x)), (slice(y, h), slice(x, w))):
        block = p[rows, cols]
        if block.size:
            s_region += block.size / (h * w) * _ssim(block, gf[rows, cols])
    return float(max(0.0, alpha * s_object + (1 - alpha) * s_region))


def emeasure_curve(pred, gt) -> np.ndarray:
    """Enhanced-alignment measure ``[256]`` of Fan et al., IJCAI 2018, at thresholds ``t = 0..255``.

    Per threshold: ``sum((1 + xi)² / 4) / (H*W - 1)`` with ``xi`` the alignment of the
    mean-removed binary maps. An empty (full) ground truth scores the fraction of predicted
    background (foreground) pixels, over ``H*W - 1`` likewise.
    """
    p, g = _pair(pred, gt)
    n = g.size
    tp, fp = _threshold_counts(p, g)
    fg_gt = int(g.sum())
    if fg_gt == 0:
        return (n - tp - fp) / (n - 1)
    if fg_gt == n:
        return (tp + fp) / (n - 1)
    fn, tn = fg_gt - tp, n - fg_gt - fp
    mean_pred = (tp + fp) / n
    mean_gt = fg_gt / n
    score = np.zeros(THRESHOLDS)
    for count, pred_value, gt_value in ((tp, 1, 1), (fp, 1, 0), (fn, 0, 1), (tn, 0, 0)):
        phi_pred = pred_value - mean_pred
        phi_gt = gt_value - mean_gt
        align = 2 * phi_gt * phi_pred / (phi_gt ** 2 + phi_pred ** 2 + EPS)
        score += count * (align + 1) ** 2 / 4
    return score / (n - 1)
