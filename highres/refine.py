"""Local refinement: the model at its own input size on full-resolution windows of the image.

Memory is bounded by one batch of windows, not by the image: windows are cut from the image
one at a time, resized to the model's input on the model's device and batched there; results
are added into two single-channel full-size accumulators (weighted logits and weights), which
then become the result's logits and support in place. Each window's weight is 1 on its core
and rises as a raised cosine across its context margin, so overlapping windows blend without
seams.
"""

import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_images
from ..errors import InputError
from ..inference.images import normalise, resize_images
from ..inference.predict import ProgressFn, inference_size, model_device_dtype
from ..inference.prediction import Prediction
from ..models.base import require_contract
from .planner import Plan, Window, plan_refinement
from .resample import resize_rows, row_stripes
from .uncertainty import UncertainBand

# Models without a native resolution (trained on many sizes) see windows of this size.
DYNAMIC_WINDOW = 1024


def patch_input_size(model: nn.Module, resolution: int | None = None) -> tuple[int, int]:
    """``(h, w)`` the model runs at on each window: ``resolution²`` if given, else the model's
    native size, else ``1024²`` for a model trained on many sizes."""
    return inference_size(model, (DYNAMIC_WINDOW, DYNAMIC_WINDOW), resolution)


def _ramp(length: int, margin: int, rise: bool, fall: bool, device: torch.device) -> torch.Tensor:
    weight = torch.ones(length, device=device)
    if margin == 0:
        return weight
    t = (torch.arange(margin, device=device, dtype=torch.float32) + 0.5) / margin
    edge = torch.sin(t * (math.pi / 2)) ** 2
    if rise:
        weight[:margin] = edge
    if fall:
        weight[-margin:] = edge.flip(0)
    return weight


def window_weight(plan: Plan, window: Window, device: torch.device | str = "cpu") -> torch.Tensor:
    """Blend weight ``[h,w]`` of a window: 1 on its core, a raised cosine across each margin that
    is not on the image border (there it stays 1, since no other window reaches past it)."""
    top, left, bottom, right = plan.box(window)
    (height, width), (my, mx) = plan.image_size, plan.margin
    rows = _ramp(bottom - top, my, top > 0, bottom < height, torch.device(device))
    cols = _ramp(right - left, mx, left > 0, right < width, torch.device(device))
    return rows[:, None] * cols[None, :]


def check_run_options(batch_size: int, max_seconds: float | None) -> None:
    """Raise :class:`InputError` for settings :func:`refine_windows` cannot use."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    if max_seconds is not None and max_seconds < 0:
        raise InputError(f"max_seconds must be >= 0, got {max_seconds}")


def _check_plans(plans: Sequence[Plan], prediction: Prediction, batch: int, size: tuple[int, int]) -> None:
    if prediction.batch != batch or tuple(prediction.image_size) != size:
        raise InputError(
            f"the prediction is for {prediction.batch} image(s) of {prediction.image_size[1]}x"
            f"{prediction.image_size[0]}, but {batch} image(s) of {size[1]}x{size[0]} were given; "
            f"refine the prediction made from these images")
    if len(plans) != batch or any(tuple(plan.image_size) != size for plan in plans):
        raise InputError(f"need one window plan per image, made for {size[1]}x{size[0]}")
    for plan in plans:
        for window in plan.windows:
            top, left, bottom, right = plan.box(window)
            if top < 0 or left < 0 or bottom > size[0] or right > size[1]:
                raise InputError(f"window {(top, left, bottom, right)} reaches outside the {size[1]}x{size[0]} image")


def _crop(images: torch.Tensor, index: int, plan: Plan, window: Window, size: tuple[int, int],
          device: torch.device) -> torch.Tensor:
    top, left, bottom, right = plan.box(window)
    crop = images[index:index + 1, top:bottom, left:right].to(device=device, dtype=torch.float32)
    return resize_images(crop, size)


def _coarse_crop(prediction: Prediction, index: int, plan: Plan, window: Window, size: tuple[int, int],
                 device: torch.device) -> torch.Tensor:
    """The prediction's logits over a window's box, ``[1,1,h,w]`` at the model input ``size``:
    the coarse mask a learned refiner (``takes_coarse``) improves."""
    top, left, bottom, right = plan.box(window)
    height, width = plan.image_size
    # Map the output's pixel centres onto the box's, in the whole image's normalised coordinates.
    theta = torch.tensor([[[(right - left) / width, 0.0, (right + left) / width - 1],
                           [0.0, (bottom - top) / height, (bottom + top) / height - 1]]], device=device)
    grid = F.affine_grid(theta, (1, 1, *size), align_corners=False)
    logits = prediction.logits[index:index + 1].to(device=device, dtype=torch.float32)
    return F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _paste(sums: torch.Tensor, weights: torch.Tensor, index: int, plan: Plan, window: Window,
           logits: torch.Tensor) -> None:
    top, left, bottom, right = plan.box(window)
    if tuple(logits.shape[-2:]) != plan.window_size:
        logits = F.interpolate(logits[None], size=plan.window_size, mode="bilinear", align_corners=False)[0]
    weight = window_weight(plan, window, sums.device)
    sums[index, :, top:bottom, left:right] += weight * logits
    weights[index, 0, top:bottom, left:right] += weight


def _finish(sums: torch.Tensor, weights: torch.Tensor, coarse: torch.Tensor,
            done: Sequence[tuple[int, Plan, Window]]) -> None:
    """Turn the accumulators, in place, into blended logits and support, one stripe of rows at a
    time so the coarse prediction is never held at full size.

    The support is the largest weight of any window at a pixel, not the sum: where window
    ramps overlap (corners) a sum would climb twice as fast and show the ramp as a crease.
    """
    size = tuple(sums.shape[-2:])
    for index in range(sums.shape[0]):
        mine = [(plan, window) for owner, plan, window in done if owner == index]
        for start, stop in row_stripes(*size):
            support = weights[index:index + 1, :, start:stop]
            local = sums[index:index + 1, :, start:stop] / support.clamp_min(1e-12)
            support.zero_()
            for plan, window in mine:
                top, left, bottom, right = plan.box(window)
                low, high = max(top, start), min(bottom, stop)
                if low < high:
                    region = support[0, 0, low - start:high - start, left:right]
                    weight = window_weight(plan, window, sums.device)[low - top:high - top]
                    torch.maximum(region, weight, out=region)
            base = resize_rows(coarse[index:index + 1], size, start, stop)
            sums[index:index + 1, :, start:stop] = torch.lerp(base, local, support)


def refine_windows(model: nn.Module, images: torch.Tensor, prediction: Prediction, plans: Sequence[Plan], *,
                   batch_size: int = 4, resolution: int | None = None, max_seconds: float | None = None,
                   progress: ProgressFn | None = None) -> Prediction:
    """Run ``model`` on the planned windows of ``images`` ``[B,H,W,3]`` and blend the results in.

    Returns a full-resolution :class:`Prediction` on the model's device: its ``logits`` are the
    window results blended by their weights, the (upsampled) ``prediction`` where no window
    reached, and a mix across the outer margins; its ``support`` ``[B,1,H,W]`` (0..1) is the
    share of local evidence in each pixel (the largest window weight there: 1 on every core).

    A learned refiner (``model.takes_coarse``) gets each window's crop of ``prediction``'s
    logits as its second input. Windows of all images run interleaved in plan order (every image's first window, then every
    second window, ...), ``batch_size`` at a time; with ``max_seconds`` no batch starts after
    that many seconds, so the most important windows are the ones done. ``progress(done,
    total)`` is called after every batch and may raise to interrupt.
    """
    images = check_images(images)
    batch, height, width = images.shape[:3]
    _check_plans(plans, prediction, batch, (height, width))
    check_run_options(batch_size, max_seconds)
    device, dtype = model_device_dtype(model)
    size = patch_input_size(model, resolution)
    mode = require_contract(model).input_normalisation
    jobs = sorted(((rank, index, plan, window) for index, plan in enumerate(plans)
                   for rank, window in enumerate(plan.windows)), key=lambda job: job[:2])
    started, done = time.monotonic(), []
    with torch.inference_mode():
        sums = torch.zeros(batch, 1, height, width, device=device)
        weights = torch.zeros_like(sums)
        for start in range(0, len(jobs), batch_size):
            if max_seconds is not None and time.monotonic() - started >= max_seconds:
                break
            chunk = jobs[start:start + batch_size]
            x = normalise(torch.cat([_crop(images, index, plan, window, size, device)
                                     for _, index, plan, window in chunk]), mode).to(dtype)
            if model.takes_coarse:
                coarse = torch.cat([_coarse_crop(prediction, index, plan, window, size, device)
                                    for _, index, plan, window in chunk])
                logits = model(x, coarse.to(dtype)).float()
            else:
                logits = model(x).float()
            for (_, index, plan, window), out in zip(chunk, logits):
                _paste(sums, weights, index, plan, window, out)
            del x, logits
            done.extend(job[1:] for job in chunk)
            if progress is not None:
                progress(len(done), len(jobs))
        _finish(sums, weights, prediction.logits.to(device), done)
    return Prediction(sums, (height, width), support=weights)


def uncertainty_refine(model: nn.Module, images: torch.Tensor, prediction: Prediction,
                       band: UncertainBand = UncertainBand(), *, zoom: float = 1.0, margin: float = 0.125,
                       overlap: float = 0.0, order: str = "uncertainty", max_patches: int | None = None,
                       max_seconds: float | None = None, batch_size: int = 4, resolution: int | None = None,
                       progress: ProgressFn | None = None) -> tuple[Prediction, list[Plan]]:
    """Refine ``prediction`` of ``images`` where ``band`` finds it uncertain.

    Plans windows over the band (see :func:`~.planner.plan_refinement`) and runs
    :func:`refine_windows`. Returns the refined prediction and the plans (one per image).
    """
    images = check_images(images)
    plans = plan_refinement(prediction, band, patch_input_size(model, resolution), zoom=zoom, margin=margin,
                            overlap=overlap, order=order, max_patches=max_patches)
    refined = refine_windows(model, images, prediction, plans, batch_size=batch_size, resolution=resolution,
                             max_seconds=max_seconds, progress=progress)
    return refined, plans
