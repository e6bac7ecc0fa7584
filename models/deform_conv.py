"""Modulated deformable convolution (DCNv2) in plain PyTorch.

Semantics follow the common ``deform_conv2d`` definition used by the released BiRefNet
weights: for output ``(oy, ox)`` and kernel tap ``(i, j)``, ``k = i*kw + j``, the input is read
with bilinear interpolation (zero outside the map) at

    y = oy*stride - padding + i*dilation + offset[:, 2k]
    x = ox*stride - padding + j*dilation + offset[:, 2k+1]

multiplied by ``mask[:, k]`` and contracted with ``weight[:, :, i, j]``.

All taps are gathered with one ``grid_sample`` into a ``[B, C, kh*kw, N]`` map (N output
positions): viewed as ``[B, C*kh*kw, N]`` it is the column matrix of the convolution, so one
matrix product with the ``[O, C*kh*kw]`` weight finishes the job at plain-GEMM speed. That map
is ``kh*kw`` times the input size (49x for 7x7), so the output is processed in horizontal strips
that keep it under ``max_elements``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

_Pair = int | tuple[int, int]


def _pair(value: _Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _tap_grid(offset: torch.Tensor, row0: int, kernel: tuple[int, int], stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int], in_size: tuple[int, int]) -> torch.Tensor:
    """Sampling grid ``[B, kh*kw, rows*Wout, 2]`` for ``grid_sample(align_corners=False)``."""
    b, _, rows, w_out = offset.shape
    kh, kw = kernel
    h_in, w_in = in_size
    dtype = offset.dtype
    offset = offset.view(b, kh, kw, 2, rows, w_out)

    def arange(n: int) -> torch.Tensor:
        return torch.arange(n, device=offset.device, dtype=dtype)

    # [kh, 1, rows, 1] and [1, kw, 1, wout]: tap position plus output position in input pixels.
    base_y = arange(kh).view(kh, 1, 1, 1) * dilation[0] + ((arange(rows) + row0) * stride[0] - padding[0]).view(1, 1, rows, 1)
    base_x = arange(kw).view(1, kw, 1, 1) * dilation[1] + (arange(w_out) * stride[1] - padding[1]).view(1, 1, 1, w_out)
    # align_corners=False maps pixel centre c to (2c + 1) / size - 1, which stays defined for 1-pixel maps.
    gx = (offset[:, :, :, 1] + base_x) * (2 / w_in) + (1 / w_in - 1)
    gy = (offset[:, :, :, 0] + base_y) * (2 / h_in) + (1 / h_in - 1)
    return torch.stack((gx, gy), dim=-1).view(b, kh * kw, rows * w_out, 2)


def _contract(columns: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``[B, K, R, W]`` column map times ``[O, K]`` -> ``[B, O, R, W]``, plus ``bias``.

    On CPUs oneDNN's 1x1 convolution runs this float32 product about twice as fast as the BLAS
    matrix product, while for bfloat16 the matrix product is the faster one (both measured).
    """
    if columns.dtype == torch.float32:
        return F.conv2d(columns, weight[:, :, None, None], bias)
    out = torch.matmul(weight, columns.flatten(2)).view(columns.shape[0], weight.shape[0], *columns.shape[2:])
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))


def modulated_deform_conv2d(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                            weight: torch.Tensor, bias: torch.Tensor | None = None,
                            stride: _Pair = 1, padding: _Pair = 0, dilation: _Pair = 1,
                            max_elements: int = 1 << 25) -> torch.Tensor:
    """Modulated deformable convolution.

    Args:
        input: ``[B, C, H, W]``.
        offset: ``[B, 2*kh*kw, Hout, Wout]``, (dy, dx) pairs per tap.
        mask: ``[B, kh*kw, Hout, Wout]`` modulation scalars.
        weight: ``[O, C, kh, kw]``; bias: ``[O]`` or None.
        max_elements: upper bound on the gathered tap map per strip (memory, not results).

    Returns:
        ``[B, O, Hout, Wout]`` in the dtype of ``weight``. Sampling positions are computed in
        at least float32; each strip of modulated taps is converted to the dtype of ``weight``
        before the contraction.
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    b, c, h_in, w_in = input.shape
    o, c_w, kh, kw = weight.shape
    h_out = (h_in + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w_in + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if c_w != c:
        raise InputError(f"weight expects {c_w} input channels, input has {c}")
    if offset.shape != (b, 2 * kh * kw, h_out, w_out) or mask.shape != (b, kh * kw, h_out, w_out):
        raise InputError(f"offset {list(offset.shape)} / mask {list(mask.shape)} do not match output "
                         f"{h_out}x{w_out} for a {kh}x{kw} kernel")
    # Sample in float32 whatever the model dtype: half-precision grid coordinates are off by
    # a sizeable fraction of a pixel on maps a few hundred pixels wide. grid_sample wants the
    # source in the grid's dtype; the source is 1/(kh*kw) of the tap map, so its copy is cheap.
    dtype = torch.promote_types(input.dtype, torch.float32)
    source = input.to(dtype)
    columns = weight.reshape(o, c * kh * kw)
    rows_per_strip = max(1, max_elements // max(1, b * c * kh * kw * w_out))
    out = None
    for row0 in range(0, h_out, rows_per_strip):
        rows = slice(row0, min(h_out, row0 + rows_per_strip))
        grid = _tap_grid(offset[:, :, rows].to(dtype), row0, (kh, kw), stride, padding, dilation, (h_in, w_in))
        taps = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        del grid
        n = taps.shape[-1]
        modulation = mask[:, None, :, rows].reshape(b, 1, kh * kw, n).to(dtype)
        # In place: the tap map is the big one. Half-precision weights get a half-precision copy
        # of this strip only, never of the whole map.
        taps = taps.mul_(modulation).to(weight.dtype)
        strip = _contract(taps.view(b, c * kh * kw, -1, w_out), columns, bias)
        del taps
        if out is None and strip.shape[2] == h_out:
            return strip
        if out is None:
            out = strip.new_empty(b, o, h_out, w_out)
        out[:, :, rows] = strip
    return out


class DeformableConv2d(nn.Module):
    """DCNv2 layer whose offsets and modulation come from plain convolutions of its input.

    The modulation is ``2*sigmoid(.)`` so that untrained modulator weights (zero) give 1.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, bias: bool = False):
        super().__init__()
        taps = kernel_size * kernel_size
        self.stride, self.padding = stride, padding
        self.offset_conv = nn.Conv2d(in_channels, 2 * taps, kernel_size, stride, padding, bias=True)
        self.modulator_conv = nn.Conv2d(in_channels, taps, kernel_size, stride, padding, bias=True)
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias)

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``weight``/``bias``: used instead of ``regular_conv``'s, e.g. with a batch norm folded in."""
        if weight is None:
            weight, bias = self.regular_conv.weight, self.regular_conv.bias
        # Offsets and modulation come from one convolution: one pass over the input, wider GEMM.
        taps = self.modulator_conv.out_channels
        both = F.conv2d(x, torch.cat([self.offset_conv.weight, self.modulator_conv.weight]),
                        torch.cat([self.offset_conv.bias, self.modulator_conv.bias]), self.stride, self.padding)
        offset, modulation = both.split((2 * taps, taps), dim=1)
        mask = 2 * torch.sigmoid(modulation)
        return modulated_deform_conv2d(x, offset, mask, weight, bias, stride=self.stride, padding=self.padding)
