"""Connected-component labelling of binary masks in torch, on whatever device the mask is on.

Every pixel starts with its own flat index as label; labels spread by taking minima. One
round takes the minimum over every horizontal run of foreground pixels, then over every
vertical run, then (8-connectivity) over diagonal neighbours, so a label crosses a whole
straight stretch at once. Each round then merges the labels it found to meet, union-find
style, which keeps the number of rounds small (a handful on noise and serpentines alike).
Rounds repeat until the labels stop changing; each is a fixed number of whole-mask tensor
operations with no per-pixel Python.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError


def _run_minimum(labels: Tensor, on: Tensor, sentinel: int) -> Tensor:
    """Each pixel of a horizontal run of ``on`` pixels gets the run's minimum label."""
    starts = on.clone()
    starts[..., 1:] &= ~on[..., :-1]
    run_ids = torch.cumsum(starts.flatten(), 0) - 1
    # Off pixels share one extra slot, which keeps the sentinel.
    run_ids = torch.where(on.flatten(), run_ids, labels.numel())
    minima = torch.full((labels.numel() + 1,), sentinel, dtype=labels.dtype, device=labels.device)
    minima.scatter_reduce_(0, run_ids, labels.flatten(), reduce="amin")
    return minima[run_ids].view_as(labels)


def _diagonal_minimum(labels: Tensor, on: Tensor, sentinel: int) -> Tensor:
    padded = F.pad(labels, (1, 1, 1, 1), value=sentinel)
    corners = torch.minimum(torch.minimum(padded[:, :-2, :-2], padded[:, :-2, 2:]),
                            torch.minimum(padded[:, 2:, :-2], padded[:, 2:, 2:]))
    return torch.where(on, torch.minimum(labels, corners), sentinel)


def _hook_and_jump(old: Tensor, new: Tensor) -> Tensor:
    """Every label is the flat index of a pixel in the same component. A pixel whose label
    dropped from ``old`` to ``new`` shows that both labels belong together, so the pixel
    named by ``old`` takes ``new`` too (hooking). Labels only ever point to smaller indices,
    so following them ends at a pixel that points to itself; pointer doubling gets there in
    logarithmically many steps, as path compression does in union-find."""
    table = F.pad(new.flatten(), (0, 1), value=new.numel())
    table.scatter_reduce_(0, old.flatten(), new.flatten(), reduce="amin")
    while True:
        doubled = table[table]
        if torch.equal(doubled, table):
            return table[old]
        table = doubled


def label_components(on: Tensor, connectivity: int = 8) -> Tensor:
    """Connected components of a boolean ``[N,H,W]`` mask (4- or 8-connected).

    Returns int64 labels ``[N,H,W]``: every pixel of a component holds the smallest flat index
    (over the whole batch) of its pixels, so labels are unique across frames; off pixels hold
    ``on.numel()``. Labels are therefore valid indices into a table of ``on.numel() + 1`` slots.
    """
    if connectivity not in (4, 8):
        raise InputError(f"connectivity must be 4 or 8, got {connectivity}")
    sentinel = on.numel()
    index = torch.arange(sentinel, device=on.device).view_as(on)
    labels = torch.where(on, index, sentinel)
    on_t = on.transpose(1, 2).contiguous()
    while True:
        new = _run_minimum(labels, on, sentinel)
        new = _run_minimum(new.transpose(1, 2).contiguous(), on_t, sentinel).transpose(1, 2)
        if connectivity == 8:
            new = _diagonal_minimum(new, on, sentinel)
        new = _hook_and_jump(labels, new)
        if torch.equal(new, labels):
            return labels
        labels = new


def component_sizes(labels: Tensor) -> Tensor:
    """Pixel count of each pixel's component, ``[N,H,W]`` int64 (off pixels: the count of off
    pixels, which callers mask out)."""
    counts = torch.bincount(labels.flatten(), minlength=labels.numel() + 1)
    return counts[labels]
