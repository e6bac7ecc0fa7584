"""Modulated deformable convolution (DCNv2) in plain PyTorch.

Semantics follow the common ``deform_conv2d`` definition used by the released BiRefNet
weights: for output ``(oy, ox)`` and kernel tap ``(i, j)``, ``k = i*kw + j``, the input is read
with bilinear interpolation (zero outside the map) at

    y = oy*stride - padding + i*dilation + offset[:, 2k]
    x = ox*stride - padding + j*dilation + offset[:, 2k+1]

multiplied by ``mask[:, k]`` and contracted with ``weight[:, :, i, j]``.

All taps are gathered with one ``grid_sample`` into a ``[B, C, Hout*kh, Wout*kw]`` map whose
``kh×kw`` cells hold each output's samples, so a single convolution with ``stride=(kh, kw)``
finishes the job. That map is ``kh*kw`` times the output size (49× for 7×7), so the output is
processed in horizontal strips that keep it under ``max_elements``.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

_Pair = int | tuple[int, int]


def _pair(value: _Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _tap_grid(offset: torch.Tensor, dtype: torch.dtype, row0: int, kernel: tuple[int, int], stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int], in_size: tuple[int, int]) -> torch.Tensor:
    """Sampling grid ``[B, rows*kh, Wout*kw, 2]`` for ``grid_sample(align_corners=False)``."""
    b, _, rows, w_out = offset.shape
    kh, kw = kernel
    h_in, w_in = in_size
    offset = offset.to(dtype).view(b, kh, kw, 2, rows, w_out).permute(0, 3, 4, 1, 5, 2)  # b,2,rows,kh,wout,kw
    def arange(n: int) -> torch.Tensor:
        return torch.arange(n, device=offset.device, dtype=dtype)

    base_y = ((arange(rows) + row0) * stride[0] - padding[0]).view(rows, 1, 1, 1) + arange(kh).view(1, kh, 1, 1) * dilation[0]
    base_x = (arange(w_out) * stride[1] - padding[1]).view(1, 1, w_out, 1) + arange(kw).view(1, 1, 1, kw) * dilation[1]
    y = offset[:, 0] + base_y
    x = offset[:, 1] + base_x
    # align_corners=False maps pixel centre c to (2c + 1) / size - 1, which stays defined for 1-pixel maps.
    grid = torch.stack(((2 * x + 1) / w_in - 1, (2 * y + 1) / h_in - 1), dim=-1)
    return grid.reshape(b, rows * kh, w_out * kw, 2)


def modulated_deform_conv2d(input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                            weight: torch.Tensor, bias: torch.Tensor | None = None,
                            stride: _Pair = 1, padding: _Pair = 0, dilation: _Pair = 1,
                            max_elements: int = 1 << 26) -> torch.Tensor:
    """Modulated deformable convolution.

    Args:
        input: ``[B, C, H, W]``.
        offset: ``[B, 2*kh*kw, Hout, Wout]``, (dy, dx) pairs per tap.
        mask: ``[B, kh*kw, Hout, Wout]`` modulation scalars.
        weight: ``[O, C, kh, kw]``; bias: ``[O]`` or None.
        max_elements: upper bound on the gathered tap map per strip (memory, not results).

    Returns:
        ``[B, O, Hout, Wout]`` in the dtype of ``weight``. Sampling runs in at least float32.
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
    # a sizeable fraction of a pixel on maps a few hundred pixels wide.
    dtype = torch.promote_types(input.dtype, torch.float32)
    source = input.to(dtype)
    rows_per_strip = max(1, max_elements // max(1, b * c * kh * kw * w_out))
    strips = []
    for row0 in range(0, h_out, rows_per_strip):
        rows = slice(row0, min(h_out, row0 + rows_per_strip))
        grid = _tap_grid(offset[:, :, rows], dtype, row0, (kh, kw), stride, padding, dilation, (h_in, w_in))
        taps = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        n = grid.shape[1] // kh
        modulation = mask[:, :, rows].to(dtype).view(b, kh, kw, n, w_out).permute(0, 3, 1, 4, 2)
        taps.mul_(modulation.reshape(b, 1, n * kh, w_out * kw))  # in place: the tap map is the big one
        strips.append(F.conv2d(taps.to(weight.dtype), weight, bias, stride=(kh, kw)))
    return strips[0] if len(strips) == 1 else torch.cat(strips, dim=2)


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        mask = 2 * torch.sigmoid(self.modulator_conv(x))
        return modulated_deform_conv2d(x, offset, mask, self.regular_conv.weight, self.regular_conv.bias,
                                       stride=self.stride, padding=self.padding)
