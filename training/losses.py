"""Losses of the papers: BASNet's hybrid loss, MeticulousNet's per-block losses, RefineMask's
boundary-weighted stage loss.

Every loss takes logits (any resolution; the target is area-resized to each) and a target
``[B,1,H,W]`` in 0..1, and returns a scalar averaged over the batch. They are computed in
float32 whatever precision the network ran in.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..models.refinemask import boundary_band

# SSIM constants of BASNet (C1 = 0.01², C2 = 0.03²) on an 11x11 Gaussian window of sigma 1.5,
# the usual SSIM window; BASNet does not state its window.
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5

# MeticulousNet H: (BCE, L1, L2) weights per block output, and the weight of the gradient loss
# on the final output.
MOS_WEIGHTS = {"S8": (1.0, 1.0, 1.0), "S4": (0.5, 0.25, 0.25), "S2": (0.0, 1.0, 1.0)}
MOS_GRADIENT_WEIGHT = 5.0

# RefineMask: weights of the stage losses coarse to fine; stages from REFINEMASK_BAND_FROM on
# are supervised only on the boundary band (width 2) of the previous stage.
REFINEMASK_WEIGHTS = (0.25, 0.5, 0.75, 1.0)
REFINEMASK_BAND_FROM, REFINEMASK_BAND_WIDTH = 2, 2


def target_at(target: Tensor, size) -> Tensor:
    """``target`` ``[B,1,H,W]`` area-averaged (or bilinearly enlarged) to ``size``."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    mode = "area" if target.shape[-2] >= size[0] and target.shape[-1] >= size[1] else "bilinear"
    return F.interpolate(target, size=tuple(size), mode=mode)


def _gaussian(device) -> Tensor:
    taps = torch.arange(SSIM_WINDOW, dtype=torch.float32, device=device) - SSIM_WINDOW // 2
    taps = torch.exp(-taps ** 2 / (2 * SSIM_SIGMA ** 2))
    return taps / taps.sum()


def _blur(x: Tensor, taps: Tensor) -> Tensor:
    pad = SSIM_WINDOW // 2
    x = F.conv2d(x, taps.view(1, 1, 1, -1), padding=(0, pad))
    return F.conv2d(x, taps.view(1, 1, -1, 1), padding=(pad, 0))


def ssim_loss(prob: Tensor, target: Tensor) -> Tensor:
    """``1 - SSIM`` of probabilities and target ``[B,1,H,W]``, averaged over pixels (zero-padded
    windows at the border, as the usual SSIM implementation)."""
    taps = _gaussian(prob.device)
    mu_x, mu_y = _blur(prob, taps), _blur(target, taps)
    var_x = _blur(prob * prob, taps) - mu_x ** 2
    var_y = _blur(target * target, taps) - mu_y ** 2
    cov = _blur(prob * target, taps) - mu_x * mu_y
    ssim = ((2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2))
    return 1 - ssim.mean()


def iou_loss(prob: Tensor, target: Tensor) -> Tensor:
    """``1 - Σ p·g / Σ (p + g - p·g)`` per image, averaged over the batch."""
    inter = (prob * target).sum((1, 2, 3))
    union = (prob + target - prob * target).sum((1, 2, 3))
    return (1 - inter / union.clamp_min(1e-6)).mean()


def bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of one output, equal to HRSOD's two-class softmax loss on the score
    difference."""
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, target_at(target, logits.shape[-2:]))


def hybrid_loss(logits: Tensor, target: Tensor) -> Tensor:
    """BASNet's hybrid loss of one output: BCE + SSIM + IoU, equally weighted."""
    logits = logits.float()
    target = target_at(target, logits.shape[-2:])
    prob = torch.sigmoid(logits)
    return F.binary_cross_entropy_with_logits(logits, target) + ssim_loss(prob, target) + iou_loss(prob, target)


def sobel_gradient(x: Tensor) -> Tensor:
    """Gradient magnitude ``[B,1,H,W]`` of a map by 3x3 Sobel filters (replicated border)."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)
    g = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    return torch.sqrt((g * g).sum(1, keepdim=True) + 1e-12)


def mos_loss(outputs: dict[str, tuple[Tensor, Tensor]], target: Tensor, refiner: bool = True) -> Tensor:
    """MeticulousNet's loss over its blocks' refined outputs (``MeticulousNet.forward_all``).

    Refiner (H): per block ``w_b·BCE + w_1·L1 + w_2·L2`` with the weights of
    :data:`MOS_WEIGHTS` by block position, plus the L1 between Sobel gradients of the final
    prediction and the target, weighted 5. Coarse model (L): BCE on every refined output.
    Each output is compared with the target area-resized to its own resolution; the coarse-head
    maps are supervised through the refined maps they are upsampled into.
    """
    total = torch.zeros((), device=target.device)
    last = list(outputs)[-1]
    for name, (_, refined) in outputs.items():
        refined = refined.float()
        t = target_at(target, refined.shape[-2:])
        bce = F.binary_cross_entropy_with_logits(refined, t)
        if not refiner:
            total = total + bce
            continue
        w_b, w_1, w_2 = MOS_WEIGHTS[name.split("_")[0]]
        prob = torch.sigmoid(refined)
        total = total + w_b * bce + w_1 * (prob - t).abs().mean() + w_2 * ((prob - t) ** 2).mean()
        if name == last:
            total = total + MOS_GRADIENT_WEIGHT * (sobel_gradient(prob) - sobel_gradient(t)).abs().mean()
    return total


def refinemask_loss(stages: list[Tensor], target: Tensor) -> Tensor:
    """RefineMask's stage loss on logits at strides 8, 4, 2, 1 (``RefineMaskRefiner.forward_all``).

    Stage ``i`` is weighted :data:`REFINEMASK_WEIGHTS` ``[i]``; the first two are plain BCE, the
    later ones BCE only on the boundary band (width 2) of the previous stage's binarised
    prediction or target, upsampled, averaged over that band.
    """
    if len(stages) != len(REFINEMASK_WEIGHTS):
        raise InputError(f"RefineMask loss expects {len(REFINEMASK_WEIGHTS)} stage outputs, got {len(stages)}")
    total = torch.zeros((), device=target.device)
    previous = None
    for index, (weight, logits) in enumerate(zip(REFINEMASK_WEIGHTS, stages)):
        logits = logits.float()
        t = target_at(target, logits.shape[-2:])
        bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        if index < REFINEMASK_BAND_FROM:
            total = total + weight * bce.mean()
        else:
            prev_logits, prev_target = previous
            band = (boundary_band(prev_logits.detach() > 0, REFINEMASK_BAND_WIDTH)
                    | boundary_band(prev_target > 0.5, REFINEMASK_BAND_WIDTH))
            band = F.interpolate(band.float(), size=logits.shape[-2:], mode="nearest")
            total = total + weight * (bce * band).sum() / band.sum().clamp_min(1)
        previous = (logits, t)
    return total


LOSSES = ("bce", "hybrid", "mos", "refinemask")


def block_loss(name: str, outputs, target: Tensor, refiner: bool = True) -> Tensor:
    """Loss ``name`` (one of :data:`LOSSES`) of a block's training outputs; ``refiner`` tells the
    MOS loss whether MeticulousNet is the refiner (H) or the coarse model (L).

    ``bce`` (HRSOD's pixel-wise two-class cross-entropy) and ``hybrid`` sum their loss over every
    output the block gives: BASNet's eight maps, MeticulousNet's refined maps, RefineMask's
    stages, or the single map of the other blocks.
    """
    if name == "mos":
        if not isinstance(outputs, dict):
            raise InputError("the MOS loss applies to MeticulousNet (hierpr) outputs only")
        return mos_loss(outputs, target, refiner)
    if name == "refinemask":
        if not isinstance(outputs, list):
            raise InputError("the RefineMask loss applies to the RefineMask refiner's stage outputs only")
        return refinemask_loss(outputs, target)
    if name not in ("bce", "hybrid"):
        raise InputError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    if isinstance(outputs, dict):
        maps = [refined for _, refined in outputs.values()]
    elif isinstance(outputs, (list, tuple)):
        maps = list(outputs)
    else:
        maps = [outputs]
    if name == "bce":
        return sum(bce_loss(logits, target) for logits in maps)
    return sum(hybrid_loss(logits, target) for logits in maps)
