"""High-resolution segmentation in one call: coarse pass, uncertain band, local windows, fusion."""

from dataclasses import dataclass, field

import torch
from torch import nn

from ..checks import check_images
from ..errors import InputError
from ..inference.device import CPU_BATCH
from ..inference.predict import ProgressFn, model_device_dtype, predict_logits
from ..inference.prediction import Prediction
from .fusion import BandFusion, Fusion
from .planner import Plan, check_plan_options
from .refine import check_run_options, uncertainty_refine
from .uncertainty import UncertainBand

# Windows per model call on GPUs when the caller leaves it open.
GPU_WINDOW_BATCH = 4


@dataclass(frozen=True)
class HighResOptions:
    """Settings of :func:`segment_highres`; the defaults suit a 1024² model on 2K-8K photos.

    ``band``: which pixels are refined and replaced (MOS's 10 % most uncertain, grown by 2 and
    feathered over 8 grid pixels). ``zoom``: window scale, 1 = full resolution, 0 = the coarse
    pass's scale. ``margin``/``overlap``: context around refined pixels and extra overlap of
    neighbouring windows, as fractions of the window side. ``max_patches``/``max_seconds``:
    budget for the local pass, spent on the most uncertain windows first. ``batch_size``:
    windows per model call (peak memory grows with it); None: one on the CPU (measured fastest,
    and a third of the memory of four), ``GPU_WINDOW_BATCH`` elsewhere. ``coarse_resolution`` and
    ``patch_resolution``: model input sizes of the two passes (native size by default).
    """

    band: UncertainBand = field(default_factory=UncertainBand)
    zoom: float = 1.0
    margin: float = 0.125
    overlap: float = 0.0
    order: str = "uncertainty"
    max_patches: int | None = None
    max_seconds: float | None = None
    batch_size: int | None = None
    coarse_resolution: int | None = None
    patch_resolution: int | None = None

    def __post_init__(self):
        check_plan_options(self.zoom, self.margin, self.overlap, self.order, self.max_patches)
        check_run_options(1 if self.batch_size is None else self.batch_size, self.max_seconds)


@dataclass(frozen=True)
class HighResResult:
    """The fused ``prediction``, the ``coarse`` one it started from, and the window ``plans``."""

    prediction: Prediction
    coarse: Prediction
    plans: list[Plan]


def window_batch(model: nn.Module) -> int:
    """Windows per model call when the caller leaves it open: see :class:`HighResOptions`."""
    device, _ = model_device_dtype(model)
    return CPU_BATCH if device.type == "cpu" else GPU_WINDOW_BATCH


def segment_highres(model: nn.Module, images: torch.Tensor, options: HighResOptions = HighResOptions(), *,
                    fusion: Fusion | None = None, progress: ProgressFn | None = None) -> HighResResult:
    """Segment ``images`` ``[B,H,W,3]`` at full resolution with a model of limited input size.

    1. coarse pass on the whole image at the model's resolution;
    2. the uncertain band of the coarse prediction (``options.band``);
    3. windows planned over the band and refined by the same model at full resolution;
    4. fusion of the two (``fusion``, by default :class:`BandFusion` over the same band).

    ``progress(done, total)`` counts images during the coarse pass, then windows (the total
    changes once the windows are planned); it may raise to interrupt. Images no larger than the
    coarse pass's input are returned after step 1: there is no finer detail to look at.
    """
    images = check_images(images)
    coarse = predict_logits(model, images, resolution=options.coarse_resolution, progress=progress)
    height, width = coarse.image_size
    if height * width <= coarse.logits.shape[-2] * coarse.logits.shape[-1]:
        return HighResResult(coarse, coarse, [])
    local, plans = uncertainty_refine(
        model, images, coarse, options.band, zoom=options.zoom, margin=options.margin, overlap=options.overlap,
        order=options.order, max_patches=options.max_patches, max_seconds=options.max_seconds,
        batch_size=options.batch_size or window_batch(model), resolution=options.patch_resolution,
        progress=progress)
    if fusion is None:
        fusion = BandFusion(options.band)
    return HighResResult(fusion(coarse, local, images), coarse, plans)


def uncertainty_preview(prediction: Prediction, band: UncertainBand = UncertainBand(),
                        plans: list[Plan] | None = None) -> torch.Tensor:
    """A ``[B,h,w]`` map on the band's grid for display: uncertainty (0..0.5), the band
    (+0.5) and, if given, the outlines of the planned windows (1)."""
    if plans is not None and len(plans) != prediction.batch:
        raise InputError(f"need one plan per image: {prediction.batch} images, {len(plans)} plans")
    preview = 0.5 * band.uncertainty(prediction) + 0.5 * band.select(prediction).float()
    grid_h, grid_w = preview.shape[-2:]
    height, width = prediction.image_size
    for index, plan in enumerate(plans or []):
        for window in plan.windows:
            top, left, bottom, right = plan.box(window)
            y0, y1 = top * grid_h // height, max(0, (bottom * grid_h - 1) // height)
            x0, x1 = left * grid_w // width, max(0, (right * grid_w - 1) // width)
            preview[index, y0:y1 + 1, [x0, x1]] = 1
            preview[index, [y0, y1], x0:x1 + 1] = 1
    return preview
