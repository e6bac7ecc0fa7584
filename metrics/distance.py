"""Exact Euclidean distance transform with nearest-feature indices, in numpy.

Two separable passes: the nearest feature along each column, then the lower envelope of
parabolas along each row (Felzenszwalb and Huttenlocher, "Distance Transforms of Sampled
Functions", 2012). The row pass runs for all rows at once, one column step at a time.
"""

import numpy as np


def _column_pass(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared vertical distance ``[H,W]`` to the nearest feature in the same column, and its row.

    Columns without a feature get ``inf``.
    """
    h, w = features.shape
    rows = np.arange(h)[:, None]
    # A missing feature sits 2h rows beyond the image, farther than any real one.
    above = np.where(features, rows, -2 * h)
    below = np.where(features, rows, 3 * h)
    # Row-by-row running extrema: several times faster than ufunc.accumulate along axis 0.
    for y in range(1, h):
        np.maximum(above[y - 1], above[y], out=above[y])
        np.minimum(below[h - y], below[h - y - 1], out=below[h - y - 1])
    up, down = rows - above, below - rows
    # Equidistant features above and below: take the upper one.
    nearest_row = np.where(up <= down, above, below)
    dist = np.minimum(up, down).astype(np.float64)
    dist[dist >= h] = np.inf
    return dist * dist, nearest_row


def _row_pass(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimise ``(x - x')² + f[y, x']`` over ``x'`` for every ``[y, x]``.

    ``f`` is ``[H,W]`` with ``inf`` where a column has no feature. Returns the minimum and
    the minimising ``x'`` (-1 in rows without any finite ``f``). Ties go to the smaller ``x'``.
    """
    h, w = f.shape
    cols = np.ascontiguousarray(f.T)
    # Per row, a stack of the parabolas on the lower envelope: apex v and left border z. The
    # top of each stack is mirrored in 1-D arrays so that a step touches the stacks only to push
    # and to pop.
    stack_v = np.zeros((h, w), dtype=np.int64)
    stack_z = np.zeros((h, w))
    depth = np.full(h, -1, dtype=np.int64)
    top_v = np.zeros(h, dtype=np.int64)
    top_g = np.zeros(h)  # f at the apex plus apex², the parabola's constant term
    top_z = np.full(h, np.inf)
    for q in range(w):
        active = np.isfinite(cols[q])
        if not active.any():
            continue
        g_q = cols[q] + q * q
        started = depth >= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = (g_q - top_g) / (2.0 * (q - top_v))
        hidden = active & started & (cross <= top_z)
        while hidden.any():
            r = np.flatnonzero(hidden)
            depth[r] -= 1
            top_v[r] = stack_v[r, depth[r]]
            top_g[r] = cols[top_v[r], r] + top_v[r] ** 2
            top_z[r] = stack_z[r, depth[r]]
            cross[r] = (g_q[r] - top_g[r]) / (2.0 * (q - top_v[r]))
            hidden[r] = cross[r] <= top_z[r]
        r = np.flatnonzero(active)
        depth[r] += 1
        top_v[r] = q
        top_g[r] = g_q[r]
        top_z[r] = np.where(started[r], cross[r], -np.inf)
        stack_v[r, depth[r]] = q
        stack_z[r, depth[r]] = top_z[r]

    out = np.full((w, h), np.inf)
    arg = np.full((w, h), -1, dtype=np.int64)
    rows = np.flatnonzero(depth >= 0)
    # Walk each envelope from its first parabola; next_z is where the following one takes over.
    top = depth[rows]
    j = np.zeros(rows.size, dtype=np.int64)
    cur_v = stack_v[rows, 0]
    next_z = np.where(top > 0, stack_z[rows, np.minimum(1, top)], np.inf)
    for q in range(w):
        ahead = next_z < q
        while ahead.any():
            a = np.flatnonzero(ahead)
            j[a] += 1
            cur_v[a] = stack_v[rows[a], j[a]]
            next_z[a] = np.where(j[a] < top[a], stack_z[rows[a], np.minimum(j[a] + 1, top[a])], np.inf)
            ahead[a] = next_z[a] < q
        out[q, rows] = (q - cur_v) ** 2 + cols[cur_v, rows]
        arg[q, rows] = cur_v
    return out.T, arg.T


def nearest_feature(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared Euclidean distance from every pixel to the nearest ``True`` pixel, and that pixel.

    Args:
        features: bool ``[H,W]``.

    Returns:
        ``sq_dist`` float64 ``[H,W]`` (exact integers; ``inf`` when there is no feature) and
        ``index`` int64 ``[2,H,W]`` with the (row, column) of the nearest feature (-1 when none).
    """
    f, nearest_row = _column_pass(features)
    sq_dist, col = _row_pass(f)
    found = col >= 0
    row = np.full(col.shape, -1, dtype=np.int64)
    row[found] = nearest_row[np.nonzero(found)[0], col[found]]
    return sq_dist, np.stack([row, col])
