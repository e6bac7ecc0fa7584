"""Inference procedures around the networks: input checks, resizing, batching, predictions."""

from ..checks import check_images
from .images import normalise, resize_images
from .predict import inference_size, predict, predict_logits
from .prediction import Prediction

__all__ = ["Prediction", "check_images", "inference_size", "normalise", "predict",
           "predict_logits", "resize_images"]
