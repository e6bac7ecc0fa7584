"""Foreground colour estimation: recover the colour ``F`` of semi-transparent pixels, so that an
object cut out of ``I = αF + (1 - α)B`` carries no trace of its old background ``B``.

Using the image itself as ``F`` leaves a halo of the old background around hair and soft edges
(``αI`` contains ``α(1 - α)B``). Two estimators are offered, both vectorised over whole frames:

* ``"multilevel"`` (default), after Germer et al., "Fast Multi-Level Foreground Estimation"
  (2020). ``F`` and ``B`` minimise, over all pixels ``i`` and 4-neighbours ``j``::

      Σ_i |α_i F_i + (1 - α_i) B_i - I_i|²
        + Σ_(i,j) (ε + ω |α_i - α_j|) (|F_i - F_j|² + |B_i - B_j|²)

  The smoothness weight grows where alpha changes, so colours from solid regions flow into the
  transparent edge. Solved coarse to fine over a pyramid from 2 pixels up to full size, each
  level starting from the upsampled result of the one below; on each level a few Jacobi
  sweeps solve, per pixel, the 2x2 system for ``(F_i, B_i)`` with the neighbours held fixed.
* ``"blur_fusion"``, after Forte and Pitié, "Approximate Fast Foreground Colour Estimation"
  (2021): two passes of alpha-weighted box blurs (radius 90 then 6) give local foreground and
  background colours, and ``F`` is corrected by the compositing residual. Cheaper, coarser.

Where ``α = 1`` the estimate stays (very nearly) the image colour. Memory is a small multiple of
one frame; frames of a batch are processed one after another.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import as_mask, check_image, check_number, check_pair, working_dtype
from ..errors import InputError

METHODS = ("multilevel", "blur_fusion")
# Keeps alpha-weighted means finite where a window holds no foreground (or no background).
_WEIGHT_EPS = 1e-5


def estimate_foreground(image: Tensor, alpha: Tensor, method: str = "multilevel") -> Tensor:
    """Foreground colours ``[B,H,W,3]`` for ``image`` ``[B,H,W,3]`` and ``alpha`` ``[B,H,W]``
    (straight colours, to be used with ``alpha``), by one of :data:`METHODS` with its defaults."""
    if method == "multilevel":
        return multilevel_foreground(image, alpha)
    if method == "blur_fusion":
        return blur_fusion_foreground(image, alpha)
    raise InputError(f"method must be one of {', '.join(METHODS)}; got {method!r}")


def multilevel_foreground(image: Tensor, alpha: Tensor, *, regularization: float = 1e-5,
                          gradient_weight: float = 1.0, coarse_iterations: int = 10,
                          fine_iterations: int = 2, coarse_size: int = 32) -> Tensor:
    """Multi-level estimate, ``[B,H,W,3]`` -> ``[B,H,W,3]``.

    ``regularization`` (ε) smooths ``F`` and ``B`` everywhere, ``gradient_weight`` (ω) adds
    smoothing across alpha changes. Levels no larger than ``coarse_size`` on both sides run
    ``coarse_iterations`` sweeps, larger ones ``fine_iterations``.
    """
    regularization = check_number(regularization, "regularization", minimum=0.0)
    gradient_weight = check_number(gradient_weight, "gradient_weight", minimum=0.0)
    if regularization == 0.0:
        raise InputError("regularization must be above 0: it keeps each pixel's system solvable")
    for name, value in (("coarse_iterations", coarse_iterations),
                        ("fine_iterations", fine_iterations), ("coarse_size", coarse_size)):
        _require_count(value, name)

    def solve(frame: Tensor, frame_alpha: Tensor) -> Tensor:
        return _multilevel_frame(frame, frame_alpha, regularization, gradient_weight,
                                 coarse_iterations, fine_iterations, coarse_size)

    return _per_frame(image, alpha, solve)


def blur_fusion_foreground(image: Tensor, alpha: Tensor, *,
                           radii: tuple[int, ...] = (90, 6)) -> Tensor:
    """Blur-fusion estimate, ``[B,H,W,3]`` -> ``[B,H,W,3]``: one pass per box-blur radius (in
    pixels), each refining the foreground and background colours of the pass before."""
    if isinstance(radii, (str, bytes)) or not radii:
        raise InputError(f"radii must be a non-empty sequence of pixel radii, got {radii!r}")
    for radius in radii:
        _require_count(radius, "each blur radius")
    radii = tuple(radii)

    def solve(frame: Tensor, frame_alpha: Tensor) -> Tensor:
        fg = bg = frame
        for radius in radii:
            fg, bg = _blur_fusion_pass(frame, frame_alpha, fg, bg, radius)
        return fg

    return _per_frame(image, alpha, solve)


def _require_count(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a whole number >= 1, got {value!r}")


def _per_frame(image: Tensor, alpha: Tensor,
               solve: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Checks inputs, runs ``solve([3,H,W], [H,W]) -> [3,H,W]`` frame by frame in float32 (or
    float64) and returns ``[B,H,W,3]`` in the image's dtype."""
    image = check_image(image)
    alpha = as_mask(alpha, "alpha")
    check_pair(image, alpha)
    dtype = working_dtype(image)
    frames = [
        solve(frame.to(dtype).permute(2, 0, 1).contiguous(), frame_alpha.to(dtype).clamp(0.0, 1.0))
        for frame, frame_alpha in zip(image, alpha)
    ]
    return torch.stack(frames).permute(0, 2, 3, 1).to(image.dtype).contiguous()


# --- multi-level --------------------------------------------------------------------------

def _pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Level sizes growing geometrically to ``(height, width)``; single pixels are skipped
    because they have no neighbours to be smooth with."""
    levels = max(1, math.ceil(math.log2(max(height, width))))
    sizes = [(max(1, round(height ** (level / levels))), max(1, round(width ** (level / levels))))
             for level in range(1, levels + 1)]
    return [size for size in sizes if size[0] * size[1] > 1]


def _multilevel_frame(image: Tensor, alpha: Tensor, regularization: float,
                      gradient_weight: float, coarse_iterations: int, fine_iterations: int,
                      coarse_size: int) -> Tensor:
    """``[3,H,W]``, ``[H,W]`` -> ``[3,H,W]``."""
    height, width = alpha.shape
    fg = bg = image.mean(dim=(1, 2), keepdim=True)
    for size in _pyramid_sizes(height, width):
        level_image = _shrink(image, size)
        level_alpha = _shrink(alpha.unsqueeze(0), size)[0]
        fg = _grow(fg, size)
        bg = _grow(bg, size)
        iterations = coarse_iterations if max(size) <= coarse_size else fine_iterations
        fg, bg = _jacobi(level_image, level_alpha, fg, bg, iterations, regularization,
                         gradient_weight)
    return fg.expand_as(image)


def _shrink(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x.unsqueeze(0), size=size, mode="area")[0]


def _grow(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x.unsqueeze(0), size=size, mode="bilinear", align_corners=False)[0]


def _neighbour_sum(x: Tensor, weight_x: Tensor, weight_y: Tensor) -> Tensor:
    """``Σ_j w_ij x_j`` over the 4-neighbours inside the frame; ``x`` ``[C,H,W]``."""
    out = torch.zeros_like(x)
    out[:, :, 1:] += weight_x * x[:, :, :-1]
    out[:, :, :-1] += weight_x * x[:, :, 1:]
    out[:, 1:, :] += weight_y * x[:, :-1, :]
    out[:, :-1, :] += weight_y * x[:, 1:, :]
    return out


def _jacobi(image: Tensor, alpha: Tensor, fg: Tensor, bg: Tensor, iterations: int,
            regularization: float, gradient_weight: float) -> tuple[Tensor, Tensor]:
    """Jacobi sweeps of the per-pixel normal equations (neighbours fixed)::

        [α² + W     α(1-α)   ] [F]   [α I     + Σ w F_j]
        [α(1-α)     (1-α)² + W] [B] = [(1-α) I + Σ w B_j],   W = Σ_j w_ij
    """
    weight_x = regularization + gradient_weight * (alpha[:, 1:] - alpha[:, :-1]).abs()
    weight_y = regularization + gradient_weight * (alpha[1:, :] - alpha[:-1, :]).abs()
    total = _neighbour_sum(torch.ones_like(alpha).unsqueeze(0), weight_x, weight_y)[0]
    a = alpha
    b = 1.0 - alpha
    # The determinant written out, free of the cancellation in a00·a11 - a01².
    det = total * (a * a + b * b + total)
    inv_ff = (b * b + total) / det
    inv_bb = (a * a + total) / det
    inv_fb = -(a * b) / det
    image_f = a * image
    image_b = b * image
    for _ in range(iterations):
        rhs_f = image_f + _neighbour_sum(fg, weight_x, weight_y)
        rhs_b = image_b + _neighbour_sum(bg, weight_x, weight_y)
        fg = (inv_ff * rhs_f + inv_fb * rhs_b).clamp_(0.0, 1.0)
        bg = (inv_fb * rhs_f + inv_bb * rhs_b).clamp_(0.0, 1.0)
    return fg, bg


# --- blur fusion --------------------------------------------------------------------------

def _box_mean(x: Tensor, radius: int) -> Tensor:
    """Mean over the ``(2r+1)²`` window clipped to the frame, ``[..., H, W]``; one cumulative
    sum per axis, so the cost does not depend on the radius."""
    for dim in (-1, -2):
        x = x.movedim(dim, -1)
        length = x.shape[-1]
        sums = torch.cumsum(x, dim=-1)
        # Running sums from before the first pixel to past the last: windows reaching
        # outside the frame read the zero or the full sum there.
        sums = torch.cat([torch.zeros_like(x[..., :1]).expand(*x.shape[:-1], radius + 1), sums,
                          sums[..., -1:].expand(*x.shape[:-1], radius)], dim=-1)
        position = torch.arange(length, device=x.device)
        count = (position + radius + 1).clamp(max=length) - (position - radius).clamp(min=0)
        window = sums[..., 2 * radius + 1:] - sums[..., :length]
        x = (window / count.to(x.dtype)).movedim(-1, dim)
    return x


def _blur_fusion_pass(image: Tensor, alpha: Tensor, fg: Tensor, bg: Tensor,
                      radius: int) -> tuple[Tensor, Tensor]:
    """One blur-fusion step on ``[3,H,W]`` colours and ``[H,W]`` alpha."""
    a = alpha.unsqueeze(0)
    mean_alpha = _box_mean(a, radius)
    local_fg = _box_mean(fg * a, radius) / (mean_alpha + _WEIGHT_EPS)
    local_bg = _box_mean(bg * (1.0 - a), radius) / (1.0 - mean_alpha + _WEIGHT_EPS)
    residual = image - a * local_fg - (1.0 - a) * local_bg
    return (local_fg + a * residual).clamp_(0.0, 1.0), local_bg
