import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_meticulous.models.deform_conv import DeformableConv2d, modulated_deform_conv2d


def _bilinear_zero(img, y, x):
    """Value of ``img[c]`` at (y, x), bilinear, zero outside the map (the operator's definition)."""
    h, w = img.shape[-2:]
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return img.new_zeros(img.shape[0])
    y0, x0 = math.floor(y), math.floor(x)
    total = img.new_zeros(img.shape[0])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                total = total + wy * wx * img[:, yy, xx]
    return total


def _reference(inp, offset, mask, weight, bias, stride, padding, dilation):
    b, c, _, _ = inp.shape
    o, _, kh, kw = weight.shape
    h_out, w_out = offset.shape[-2:]
    out = inp.new_zeros(b, o, h_out, w_out)
    for n in range(b):
        for oy in range(h_out):
            for ox in range(w_out):
                acc = inp.new_zeros(o)
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        y = oy * stride - padding + i * dilation + offset[n, 2 * k, oy, ox].item()
                        x = ox * stride - padding + j * dilation + offset[n, 2 * k + 1, oy, ox].item()
                        v = _bilinear_zero(inp[n], y, x) * mask[n, k, oy, ox]
                        acc = acc + weight[:, :, i, j] @ v
                out[n, :, oy, ox] = acc + (bias if bias is not None else 0)
    return out


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("k,stride,padding,dilation", [(1, 1, 0, 1), (3, 1, 1, 1), (7, 1, 3, 1), (3, 2, 1, 1), (3, 1, 2, 2)])
def test_zero_offsets_unit_mask_equal_conv2d(k, stride, padding, dilation):
    g = torch.Generator().manual_seed(k * 10 + stride)
    x = torch.randn(2, 5, 13, 11, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 5, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    h, w = _out_size(13, k, stride, padding, dilation), _out_size(11, k, stride, padding, dilation)
    offset = torch.zeros(2, 2 * k * k, h, w, dtype=torch.float64)
    mask = torch.ones(2, k * k, h, w, dtype=torch.float64)
    ours = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    expected = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k,stride,padding,dilation,size", [
    (3, 1, 1, 1, (6, 7)), (7, 1, 3, 1, (5, 4)), (3, 2, 1, 1, (7, 6)), (3, 1, 2, 2, (6, 6)),
    (1, 1, 0, 1, (1, 1)), (3, 1, 1, 1, (1, 5))])
def test_fractional_and_out_of_bounds_offsets_match_definition(k, stride, padding, dilation, size):
    g = torch.Generator().manual_seed(sum(size) + k)
    x = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
    weight = torch.randn(2, 3, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(2, generator=g, dtype=torch.float64)
    h, w = _out_size(size[0], k, stride, padding, dilation), _out_size(size[1], k, stride, padding, dilation)
    # Offsets up to ±4.5 px push many taps past the border; exact integers and halves hit the edge cases.
    offset = 9 * torch.rand(2, 2 * k * k, h, w, generator=g, dtype=torch.float64) - 4.5
    offset.view(-1)[::5] = torch.round(offset.view(-1)[::5] * 2) / 2
    mask = 2 * torch.rand(2, k * k, h, w, generator=g, dtype=torch.float64)
    expected = _reference(x, offset, mask, weight, bias, stride, padding, dilation)
    ours = modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-12)
    # float32 (the model's precision) stays within rounding error of the float64 definition.
    ours32 = modulated_deform_conv2d(x.float(), offset.float(), mask.float(), weight.float(), bias.float(),
                                     stride, padding, dilation)
    torch.testing.assert_close(ours32.double(), expected, rtol=0, atol=1e-5)


def test_strips_do_not_change_the_result():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 20, 9, generator=g)
    weight = torch.randn(3, 4, 3, 3, generator=g)
    offset = torch.randn(1, 18, 20, 9, generator=g)
    mask = torch.rand(1, 9, 20, 9, generator=g)
    whole = modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1)
    strips = modulated_deform_conv2d(x, offset, mask, weight, None, 1, 1, 1, max_elements=4 * 9 * 9 * 3)
    # Same arithmetic per output; only the convolution backend's blocking may differ.
    torch.testing.assert_close(strips, whole, rtol=0, atol=2e-6)


def test_layer_runs_in_bfloat16_with_float32_sampling():
    layer = DeformableConv2d(8, 6, kernel_size=3, padding=1)
    x = torch.randn(1, 8, 16, 16)
    reference = layer(x)
    low = layer.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert low.dtype == torch.bfloat16 and low.shape == reference.shape
    assert (low.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_mismatched_offset_shape_is_reported():
    with pytest.raises(ValueError, match="offset"):
        modulated_deform_conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(1, 18, 4, 4), torch.zeros(1, 9, 4, 4),
                                torch.zeros(1, 2, 3, 3), padding=1)
