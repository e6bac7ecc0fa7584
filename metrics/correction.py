"""Human Correction Efforts (HCE) of Qin et al., "Highly Accurate Dichotomous Image Segmentation", ECCV 2022.

HCE estimates the mouse clicks a person needs to turn the binarised prediction into the ground
truth with a polygon tool. The paper gives the idea, not every rule; this module fixes them as:

1. **Relaxation (gamma).** An error pixel is forgiven when both the true and the predicted outline
   pass within ``gamma`` px of it (both the other class of the ground truth and the other
   class of the prediction lie inside the :func:`.morphology.disc` of radius ``gamma``
   around it): the error is part of an outline displacement of about ``gamma`` px or less.
   A missed or spurious structure, however thin, is not forgiven where it lies away from the
   predicted outline. ``gamma = 5`` is the relaxed HCE_5 of the DIS and BiRefNet papers.
2. **Regions.** The remaining false negatives (to add) and false positives (to erase) are
   split into 4-connected regions; their outlines are traced along pixel edges. An outline
   (of a region or of a hole in it) no more than ``gamma`` px across in both directions is a
   speck within the tolerance and costs nothing.
3. **Clicks.** Only the stretches of an outline that lie on the ground-truth contour need
   precise clicks; stretches along already correct pixels or along the image frame can be
   drawn loosely. Each precise stretch costs its dominant points: the vertices kept by
   Douglas-Peucker simplification with tolerance ``epsilon`` (2 px by default). A closed
   polygon needs at least three clicks, so each region costs at least 3, as does an outline
   that lies entirely on the contour.

HCE is the sum over all regions. A perfect prediction scores 0; a missed rectangle away from
the prediction scores 4 (its corners), a spurious blob away from the object 3 (a loose polygon
around it), a hole in the predicted body 3.
"""

import numpy as np

from .inputs import as_binary, check_pair
from .morphology import dilate

# Directions 0..3 are east, south, west, north (rows grow downwards). An edge starts at a pixel
# corner (y, x); these are the offsets of the pixels on its left and right, and its step.
_LEFT = np.array([(-1, 0), (0, 0), (0, -1), (-1, -1)])
_RIGHT = np.array([(0, 0), (0, -1), (-1, -1), (-1, 0)])
_STEP = np.array([(0, 1), (1, 0), (0, -1), (-1, 0)])
MIN_POLYGON_CLICKS = 3


def _outline_edges(region: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pixel edge with ``region`` on its left and not on its right: ``(y, x, direction)``."""
    h, w = region.shape
    padded = np.pad(region, 1)

    def side(offset):
        dy, dx = offset
        return padded[1 + dy : 2 + dy + h, 1 + dx : 2 + dx + w]

    ys, xs, ds = [], [], []
    for d in range(4):
        y, x = np.nonzero(side(_LEFT[d]) & ~side(_RIGHT[d]))
        ys.append(y), xs.append(x), ds.append(np.full(y.size, d))
    return np.concatenate(ys), np.concatenate(xs), np.concatenate(ds)


def _loops(region: np.ndarray) -> list[np.ndarray]:
    """The closed outlines of ``region``, each an int array ``[n,3]`` of edges ``(y, x, direction)``.

    At a corner where two region pixels touch only diagonally the walk turns towards the
    pixel it is following, so diagonal neighbours belong to different regions (4-connectivity).
    """
    y, x, d = _outline_edges(region)
    if y.size == 0:
        return []
    h, w = region.shape
    padded = np.pad(region, 1)
    ey, ex = y + _STEP[d, 0], x + _STEP[d, 1]
    ahead_left = padded[1 + ey + _LEFT[d, 0], 1 + ex + _LEFT[d, 1]]
    ahead_right = padded[1 + ey + _RIGHT[d, 0], 1 + ex + _RIGHT[d, 1]]
    turn = np.where(~ahead_left, 3, np.where(~ahead_right, 0, 1))
    nd = (d + turn) % 4

    def key(yy, xx, dd):
        return (dd * (h + 1) + yy) * (w + 1) + xx

    keys = key(y, x, d)
    order = np.argsort(keys)
    following = order[np.searchsorted(keys[order], key(ey, ex, nd))]
    edges = np.stack([y, x, d], axis=1)
    seen = np.zeros(y.size, dtype=bool)
    loops = []
    for start in range(y.size):
        if seen[start]:
            continue
        chain = []
        e = start
        while not seen[e]:
            seen[e] = True
            chain.append(e)
            e = following[e]
        loops.append(edges[chain])
    return loops


def _dominant_points(points: np.ndarray, epsilon: float) -> int:
    """Vertices Douglas-Peucker keeps on an open polyline ``[n,2]`` (both ends always kept)."""
    kept = 2
    stack = [(0, len(points) - 1)]
    while stack:
        i, j = stack.pop()
        if j - i < 2:
            continue
        a, b = points[i], points[j]
        inner = points[i + 1 : j] - a
        chord = b - a
        length = np.hypot(*chord)
        # A stretch may start and end at one corner where the region touches itself diagonally.
        if length > 0:
            dist = np.abs(chord[0] * inner[:, 1] - chord[1] * inner[:, 0]) / length
        else:
            dist = np.hypot(inner[:, 0], inner[:, 1])
        k = int(np.argmax(dist))
        if dist[k] > epsilon:
            kept += 1
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return kept


def _closed_dominant_points(points: np.ndarray, epsilon: float) -> int:
    """Douglas-Peucker on a closed polygon ``[n,2]``, split at the vertex farthest from the first."""
    far = int(np.argmax(np.hypot(*(points - points[0]).T)))
    first = _dominant_points(points[: far + 1], epsilon)
    second = _dominant_points(np.concatenate([points[far:], points[:1]]), epsilon)
    return first + second - 2


def _loop_clicks(loop: np.ndarray, gt_padded: np.ndarray, gamma: int, epsilon: float) -> int:
    y, x, d = loop.T
    vertices = np.stack([y, x], axis=1).astype(np.float64)
    if (vertices.max(axis=0) - vertices.min(axis=0) <= gamma).all():
        return 0
    # An edge is precise where its two pixels differ in the ground truth; outside is neither.
    left = gt_padded[1 + y + _LEFT[d, 0], 1 + x + _LEFT[d, 1]]
    right = gt_padded[1 + y + _RIGHT[d, 0], 1 + x + _RIGHT[d, 1]]
    precise = (left != right) & (right >= 0)
    # Shoelace area on (row, column): positive for outer outlines, negative for holes.
    nxt = np.roll(vertices, -1, axis=0)
    outer = (vertices[:, 0] * nxt[:, 1] - vertices[:, 1] * nxt[:, 0]).sum() > 0
    if precise.all():
        return max(MIN_POLYGON_CLICKS, _closed_dominant_points(vertices, epsilon))
    # Start at a loose edge so that no precise stretch wraps around the end.
    shift = int(np.argmin(precise))
    precise = np.roll(precise, -shift)
    vertices = np.roll(vertices, -shift, axis=0)
    closed = np.concatenate([vertices, vertices[:1]])
    flips = np.flatnonzero(np.diff(precise.astype(np.int8)))
    starts, stops = flips[::2] + 1, flips[1::2] + 1
    if precise[-1]:
        stops = np.append(stops, precise.size)
    clicks = sum(_dominant_points(closed[a : b + 1], epsilon) for a, b in zip(starts, stops))
    return max(MIN_POLYGON_CLICKS, clicks) if outer else clicks


def hce(pred, gt, gamma: int = 5, epsilon: float = 2.0) -> int:
    """Relaxed human correction efforts HCE_gamma (see the module docstring); lower is better."""
    p, g = as_binary(pred, "prediction"), as_binary(gt)
    check_pair(p, g)
    near_p, near_not_p = dilate(p, gamma), dilate(~p, gamma)
    near_g, near_not_g = dilate(g, gamma), dilate(~g, gamma)
    missed = g & ~p & ~(near_p & near_not_g)
    spurious = p & ~g & ~(near_g & near_not_p)
    # -1 marks the frame, which agrees with neither class.
    gt_padded = np.pad(g.astype(np.int8), 1, constant_values=-1)
    return int(sum(_loop_clicks(loop, gt_padded, gamma, epsilon)
                   for region in (missed, spurious) for loop in _loops(region)))
