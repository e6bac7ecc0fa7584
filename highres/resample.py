"""Bilinear resizing of a horizontal stripe of a map, without building the whole resized map.

A coarse prediction of an 8192² image must never exist at full size more often than needed;
blocks that combine it with full-size maps resize it one stripe of rows at a time. The values
are those of ``F.interpolate(mode="bilinear", align_corners=False)`` on the whole map.
"""

import torch
import torch.nn.functional as F


def _source_taps(out_size: int, in_size: int, start: int, stop: int, device: torch.device):
    """For output pixels ``start..stop-1``: the two input indices and the weight of the second."""
    # float64 for exact indices on huge maps, computed on the CPU: MPS has no float64; the
    # three vectors hold one value per output row, so moving them costs nothing.
    position = (torch.arange(start, stop, dtype=torch.float64) + 0.5) * (in_size / out_size) - 0.5
    position = position.clamp_min(0)
    first = position.floor().long().clamp_max(in_size - 1)
    second = (first + 1).clamp_max(in_size - 1)
    return first.to(device), second.to(device), (position - first).float().to(device)


def resize_rows(x: torch.Tensor, size: tuple[int, int], start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``x`` ``[B,C,h,w]`` resized bilinearly to ``size``: ``[B,C,stop-start,W]``."""
    height, width = size
    if tuple(x.shape[-2:]) == (height, width):
        return x[:, :, start:stop]
    top, bottom, fy = _source_taps(height, x.shape[-2], start, stop, x.device)
    rows = torch.lerp(x.index_select(2, top), x.index_select(2, bottom), fy.view(1, 1, -1, 1))
    # Along the rows the stripe spans the whole width, so interpolate's own pass is the same.
    return F.interpolate(rows, size=(stop - start, width), mode="bilinear", align_corners=False)


def row_stripes(height: int, width: int, pixels: int = 1 << 22):
    """``(start, stop)`` row ranges of about ``pixels`` pixels each, covering ``height`` rows."""
    step = max(1, pixels // max(1, width))
    for start in range(0, height, step):
        yield start, min(height, start + step)
