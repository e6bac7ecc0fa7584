"""Windows of the full-resolution image that cover every selected pixel.

The papers leave the tiling open (HRSOD's APS sweeps columns of randomly sized 384±64 patches
and defers its row rule to a supplement; MOS does not describe test-time crops at all). The
choices made here, so that results are reproducible and every selected pixel is refined:

- **Window size** (:func:`window_size`): the model's input size in model pixels, shown at a
  scale between the coarse pass (``zoom=0``) and full resolution (``zoom=1``, one image pixel
  per model pixel). Every window of an image has the same size.
- **Context margin**: a selected pixel is never closer than ``margin`` to the window edge,
  except along the image border where no more context exists. The window minus its margins is
  the window's *core*; the refiner trusts the core fully and fades the margin out, so
  neighbouring windows blend over the margins.
- **Grid**: the image is cut into cells of ``core - overlap`` pixels; every cell that holds a
  selected pixel gets one window whose core is centred on the cell. Neighbouring windows thus
  overlap by ``2·margin + overlap`` pixels.
- **Merging**: two windows whose selected pixels fit together inside one core are replaced by
  one window centred on them (smallest union first), until no pair fits. This removes the
  near-duplicates a grid produces when a small detail sits on a cell border.
- **Order**: by uncertainty mass (sum of the grid uncertainty of the selected pixels a window
  is responsible for), largest first, or in raster order. A ``max_patches`` budget keeps the
  first windows of that order; a time budget is enforced by the refiner in the same order.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..inference.prediction import Prediction
from .uncertainty import UncertainBand

ORDERS = ("uncertainty", "raster")


@dataclass(frozen=True)
class Window:
    """A window's top-left corner in image pixels, and the uncertainty mass it is responsible for."""

    top: int
    left: int
    score: float


@dataclass(frozen=True)
class Plan:
    """The windows planned for one image. All windows have ``window_size`` ``(h, w)``.

    ``margin`` ``(my, mx)`` is the context margin per axis (0 along an axis the window spans
    entirely).
    """

    image_size: tuple[int, int]
    window_size: tuple[int, int]
    margin: tuple[int, int]
    windows: tuple[Window, ...]

    def __len__(self) -> int:
        return len(self.windows)

    def box(self, window: Window) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of the window, bottom/right exclusive."""
        return window.top, window.left, window.top + self.window_size[0], window.left + self.window_size[1]

    def core(self, window: Window) -> tuple[int, int, int, int]:
        """The part of the window at least ``margin`` from every edge that is not the image border."""
        top, left, bottom, right = self.box(window)
        (height, width), (my, mx) = self.image_size, self.margin
        return (top + my if top > 0 else 0, left + mx if left > 0 else 0,
                bottom - my if bottom < height else height, right - mx if right < width else width)


def window_size(input_size: tuple[int, int], image_size: tuple[int, int],
                coarse_size: tuple[int, int], zoom: float = 1.0) -> tuple[int, int]:
    """Window ``(h, w)`` in image pixels for a model that takes ``input_size`` ``(h, w)``.

    ``coarse_size`` is the resolution of the prediction being refined; its density (model
    pixels per image pixel, geometric mean over both axes) sets ``zoom=0``. In between, the
    density is interpolated geometrically: ``zoom=0.5`` on an 8192² image refined from a 1024²
    coarse pass shows the model 2896² windows at 1/2.83 scale. Windows never exceed the image.
    """
    if not 0 <= zoom <= 1:
        raise InputError(f"zoom must be between 0 (coarse scale) and 1 (full resolution), got {zoom}")
    (height, width), (ch, cw) = image_size, coarse_size
    density = min(1.0, math.sqrt(ch * cw / (height * width)))
    scale = density ** (1 - zoom)
    return (min(height, max(1, round(input_size[0] / scale))),
            min(width, max(1, round(input_size[1] / scale))))


@dataclass(frozen=True)
class _Axis:
    """Tiling along one image axis."""

    length: int
    window: int
    margin: int
    core: int
    step: int

    @staticmethod
    def build(length: int, window: int, margin: int, overlap: int) -> "_Axis":
        window = min(window, length)
        if window == length:
            return _Axis(length, window, 0, length, length)
        core = window - 2 * margin
        if core < 1 or core - overlap < 1:
            raise InputError(
                f"window of {window} px leaves no room for a {margin} px margin and {overlap} px overlap; "
                f"use a smaller margin or overlap")
        return _Axis(length, window, margin, core, core - overlap)

    def cells(self) -> int:
        return math.ceil(self.length / self.step)

    def place(self, low: int, high: int) -> int:
        """Window start whose core holds ``[low, high)`` centred, kept inside the image."""
        slack = self.core - (high - low)
        return min(max(low - slack // 2 - self.margin, 0), self.length - self.window)


def _footprints(grid: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Image pixel ranges ``[low, high)`` of each grid pixel (rounded outwards)."""
    index = np.arange(grid, dtype=np.int64)
    return index * length // grid, -(-(index + 1) * length // grid)


def _cell_selections(selected: np.ndarray, score: np.ndarray, ys: _Axis, xs: _Axis):
    """Per occupied grid cell: the bounding box ``(y0, y1, x0, x1)`` of its selected image pixels, its score."""
    row_low, row_high = _footprints(selected.shape[0], ys.length)
    col_low, col_high = _footprints(selected.shape[1], xs.length)
    rows_any = selected.any(axis=1)
    boxes, scores, cells = [], [], []
    for cy in range(ys.cells()):
        y0, y1 = cy * ys.step, min(ys.length, (cy + 1) * ys.step)
        i0, i1 = np.searchsorted(row_high, y0, side="right"), np.searchsorted(row_low, y1, side="left")
        if not rows_any[i0:i1].any():
            continue
        band = selected[i0:i1]
        for cx in range(xs.cells()):
            x0, x1 = cx * xs.step, min(xs.length, (cx + 1) * xs.step)
            j0, j1 = np.searchsorted(col_high, x0, side="right"), np.searchsorted(col_low, x1, side="left")
            block = band[:, j0:j1]
            if not block.any():
                continue
            rows = np.flatnonzero(block.any(axis=1)) + i0
            cols = np.flatnonzero(block.any(axis=0)) + j0
            boxes.append((max(y0, row_low[rows[0]]), min(y1, row_high[rows[-1]]),
                          max(x0, col_low[cols[0]]), min(x1, col_high[cols[-1]])))
            scores.append(float(score[i0:i1, j0:j1][block].sum()))
            cells.append((y0, y1, x0, x1))
    return boxes, scores, cells


def _merge(boxes: np.ndarray, anchors: np.ndarray, scores: np.ndarray, ys: _Axis, xs: _Axis):
    """Merge pairs of boxes whose union fits one core, smallest union first; a merged pair is
    anchored on that union. Returns the kept boxes, anchors and scores."""
    while len(boxes) > 1:
        y0 = np.minimum(boxes[:, None, 0], boxes[None, :, 0])
        y1 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
        x0 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
        x1 = np.maximum(boxes[:, None, 3], boxes[None, :, 3])
        fits = (y1 - y0 <= ys.core) & (x1 - x0 <= xs.core)
        np.fill_diagonal(fits, False)
        if not fits.any():
            break
        area = np.where(fits, (y1 - y0) * (x1 - x0), np.iinfo(np.int64).max)
        i, j = np.unravel_index(np.argmin(area), area.shape)
        boxes[i] = anchors[i] = (y0[i, j], y1[i, j], x0[i, j], x1[i, j])
        scores[i] += scores[j]
        keep = np.arange(len(boxes)) != j
        boxes, anchors, scores = boxes[keep], anchors[keep], scores[keep]
    return boxes, anchors, scores


def plan_windows(selected: torch.Tensor, image_size: tuple[int, int], window: tuple[int, int], *,
                 margin: int, overlap: int = 0, score: torch.Tensor | None = None,
                 order: str = "uncertainty", max_patches: int | None = None, merge: bool = True) -> Plan:
    """Plan windows of size ``window`` ``(h, w)`` whose cores cover every selected pixel.

    ``selected`` is a bool ``[h,w]`` grid over the whole image (any resolution; each grid pixel
    stands for the image pixels it maps onto). ``score`` ``[h,w]`` weighs the selected pixels
    for ordering (uncertainty; a count when omitted). ``margin`` and ``overlap`` are in image
    pixels. With ``max_patches`` only the first windows of ``order`` are kept.
    """
    if selected.ndim != 2:
        raise InputError(f"selection must be a single [h,w] grid, got shape {list(selected.shape)}")
    if order not in ORDERS:
        raise InputError(f"unknown window order {order!r}; expected one of {ORDERS}")
    if max_patches is not None and max_patches < 0:
        raise InputError(f"max_patches must be >= 0, got {max_patches}")
    if margin < 0 or overlap < 0:
        raise InputError("margin and overlap must be >= 0")
    ys = _Axis.build(image_size[0], window[0], margin, overlap)
    xs = _Axis.build(image_size[1], window[1], margin, overlap)
    mask = selected.detach().cpu().numpy().astype(bool)
    weights = mask.astype(np.float64) if score is None else score.detach().float().cpu().numpy()
    boxes, scores, cells = _cell_selections(mask, weights, ys, xs)
    # A window is centred on its grid cell, so neighbours overlap evenly, until it is merged;
    # then it is centred on the selection it holds.
    boxes = np.array(boxes, dtype=np.int64).reshape(-1, 4)
    anchors = np.array(cells, dtype=np.int64).reshape(-1, 4)
    scores = np.array(scores, dtype=np.float64)
    if merge:
        boxes, anchors, scores = _merge(boxes, anchors, scores, ys, xs)
    windows = [Window(ys.place(y0, y1), xs.place(x0, x1), float(value))
               for (y0, y1, x0, x1), value in zip(anchors.tolist(), scores)]
    if order == "uncertainty":
        windows.sort(key=lambda w: (-w.score, w.top, w.left))
    else:
        windows.sort(key=lambda w: (w.top, w.left))
    if max_patches is not None:
        windows = windows[:max_patches]
    return Plan(tuple(image_size), (ys.window, xs.window), (ys.margin, xs.margin), tuple(windows))


def check_plan_options(zoom: float, margin: float, overlap: float, order: str, max_patches: int | None) -> None:
    """Raise :class:`InputError` for settings :func:`plan_refinement` cannot use."""
    if not 0 <= zoom <= 1:
        raise InputError(f"zoom must be between 0 (coarse scale) and 1 (full resolution), got {zoom}")
    if not 0 <= margin < 0.5:
        raise InputError(f"margin must be a fraction of the window in [0, 0.5), got {margin}")
    if not 0 <= overlap < 1 - 2 * margin:
        raise InputError(f"overlap must be a fraction of the window in [0, {1 - 2 * margin:g}) "
                         f"with margin {margin}, got {overlap}")
    if order not in ORDERS:
        raise InputError(f"unknown window order {order!r}; expected one of {ORDERS}")
    if max_patches is not None and max_patches < 0:
        raise InputError(f"max_patches must be >= 0, got {max_patches}")


def plan_refinement(prediction: Prediction, band: UncertainBand, input_size: tuple[int, int], *,
                    zoom: float = 1.0, margin: float = 0.125, overlap: float = 0.0,
                    order: str = "uncertainty", max_patches: int | None = None) -> list[Plan]:
    """One :class:`Plan` per image covering the band of ``prediction``.

    ``input_size`` is the model's input size on a window; ``zoom`` sets the window size
    (:func:`window_size`); ``margin`` and ``overlap`` are fractions of the window's shorter
    side (defaults: 1/8 margin, so 128 px of context around every refined pixel of a 1024²
    window, and no extra overlap).
    """
    check_plan_options(zoom, margin, overlap, order, max_patches)
    window = window_size(input_size, prediction.image_size, tuple(prediction.logits.shape[-2:]), zoom)
    side = min(window)
    selected, score = band.select(prediction), band.uncertainty(prediction)
    return [plan_windows(selected[index], prediction.image_size, window, margin=round(margin * side),
                         overlap=round(overlap * side), score=score[index], order=order,
                         max_patches=max_patches)
            for index in range(prediction.batch)]
