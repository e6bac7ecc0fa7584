"""Learned blocks as pipeline steps: refine a prediction with a coarse-taking block, or fuse with GLFN.

:func:`refine_prediction` runs a block trained with this package (``weights.trained``) on a whole
:class:`~comfyui_meticulous.inference.Prediction`; :class:`LearnedFusion` puts HRSOD's GLFN behind
the :class:`~comfyui_meticulous.highres.Fusion` interface.
"""

from dataclasses import dataclass, field

import torch

from ..checks import check_images
from ..errors import InputError
from ..inference.images import normalise, resize_images
from ..inference.predict import ProgressFn, model_device_dtype
from ..inference.prediction import Prediction
from ..models.base import SegmentationModel, require_contract
from ..models.hrsod import run_in_stripes
from .fusion import BandFusion, Fusion


def working_size(model: SegmentationModel, image_size: tuple[int, int], resolution: int | None) -> tuple[int, int]:
    """``(h, w)`` a block runs at: ``resolution²`` (rounded to its size multiple), or the image's
    own size rounded to the nearest multiple when ``resolution`` is None."""
    multiple = require_contract(model).size_multiple
    if resolution is not None:
        if resolution < multiple:
            raise InputError(f"resolution {resolution} is too small; use at least {multiple}")
        image_size = (resolution, resolution)
    return tuple(max(multiple, round(side / multiple) * multiple) for side in image_size)


def refine_prediction(model: SegmentationModel, images: torch.Tensor, prediction: Prediction, *,
                      resolution: int | None = None, stripe_rows: int = 512,
                      progress: ProgressFn | None = None) -> Prediction:
    """Run a coarse-taking block on ``images`` ``[B,H,W,3]`` and ``prediction`` of them.

    Each image is resized to :func:`working_size` and normalised; the block gets the
    prediction's logits as they are (it resizes them). A block with a ``receptive_radius`` (GLFN)
    runs in stripes of ``stripe_rows`` rows, so it can work at the full size of an 8K image.
    Returns logits at the working size, on the model's device; ``progress(done, total)`` counts
    images.
    """
    images = check_images(images)
    if not require_contract(model).takes_coarse:
        raise InputError(f"{type(model).__name__} does not refine a prediction; use it as a coarse model")
    if prediction.batch != images.shape[0] or tuple(prediction.image_size) != tuple(images.shape[1:3]):
        raise InputError(f"the prediction is for {prediction.batch} image(s) of {prediction.image_size}, but "
                         f"{images.shape[0]} image(s) of {tuple(images.shape[1:3])} were given")
    device, dtype = model_device_dtype(model)
    size = working_size(model, tuple(images.shape[1:3]), resolution)
    mode = model.input_normalisation
    outputs = []
    with torch.inference_mode():
        for index in range(images.shape[0]):
            x = normalise(resize_images(images[index:index + 1].to(device, torch.float32), size), mode).to(dtype)
            coarse = prediction.logits[index:index + 1].to(device, dtype)
            if model.receptive_radius is not None:
                coarse = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
                outputs.append(run_in_stripes(model, x, coarse, stripe_rows).float())
            else:
                outputs.append(model(x, coarse).float())
            if progress is not None:
                progress(index + 1, images.shape[0])
    return Prediction(torch.cat(outputs), tuple(images.shape[1:3]))


@dataclass(frozen=True, eq=False)
class LearnedFusion(Fusion):
    """HRSOD's fusion: the ``base`` fusion's combined map (by default the training-free
    :class:`~comfyui_meticulous.highres.BandFusion`), then a GLFN over it and the image at
    ``resolution²`` (the paper's 1024²) or at the image's own size (``None``)."""

    model: SegmentationModel
    base: Fusion = field(default_factory=BandFusion)
    resolution: int | None = 1024
    stripe_rows: int = 512

    def __call__(self, global_pred: Prediction, local_pred: Prediction,
                 images: torch.Tensor | None = None) -> Prediction:
        if images is None:
            raise InputError("the learned fusion looks at the image: pass the images both predictions were made from")
        combined = self.base(global_pred, local_pred, images)
        return refine_prediction(self.model, images, combined, resolution=self.resolution,
                                 stripe_rows=self.stripe_rows)
