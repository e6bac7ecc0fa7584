"""Segmentation nodes: one-shot Segment, and the coarse prediction blocks that chain."""

import torch

from ..checks import check_images
from ..highres.uncertainty import uncertainty_map
from ..inference import predict, predict_logits
from .comfy import io, progress_reporter
from .common import (Pred, cut_out, cutout_outputs, grey_image, ready_for_images, rgba_colour_input,
                     segment_inputs, to_output)


class Segment(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousSegment",
            display_name="Segment (Meticulous BiRefNet)",
            category="meticulous/segment",
            description="Cuts the salient object out of every image of a batch in one step: a soft "
                        "mask at the image's full size, and the image with that mask as straight "
                        "alpha (save it with Save Image for a transparent PNG).",
            inputs=[*segment_inputs(), rgba_colour_input()],
            outputs=cutout_outputs(),
        )

    @classmethod
    def execute(cls, model, image: torch.Tensor, resolution: int, keep_aspect: bool, batch_size: int,
                rgba_colour: str) -> io.NodeOutput:
        check_images(image, batched=True)  # before the model is moved onto the GPU
        network, batch_size = ready_for_images(model, image, resolution, keep_aspect, batch_size)
        mask = to_output(predict(network, image, resolution=resolution or None, keep_aspect=keep_aspect,
                                 batch_size=batch_size, progress=progress_reporter(image.shape[0])))
        return io.NodeOutput(mask, cut_out(image, mask, rgba_colour))


class CoarsePredict(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousCoarsePredict",
            display_name="Coarse Predict (Meticulous)",
            category="meticulous/segment",
            description="Runs the model once over each whole image and keeps the raw prediction at "
                        "the model's resolution, on the GPU, for the blocks that refine, fuse or "
                        "inspect it.",
            inputs=segment_inputs(),
            outputs=[Pred.Output("prediction", tooltip="Logits at model resolution, plus the image "
                                                       "size they map back to.")],
        )

    @classmethod
    def execute(cls, model, image: torch.Tensor, resolution: int, keep_aspect: bool,
                batch_size: int) -> io.NodeOutput:
        check_images(image, batched=True)
        network, batch_size = ready_for_images(model, image, resolution, keep_aspect, batch_size)
        return io.NodeOutput(predict_logits(network, image, resolution=resolution or None, keep_aspect=keep_aspect,
                                            batch_size=batch_size, progress=progress_reporter(image.shape[0])))


class PredictionToMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousPredictionToMask",
            display_name="Prediction to Mask (Meticulous)",
            category="meticulous/segment",
            description="Turns a prediction into a soft mask at the full image size (the logits are "
                        "resized before the sigmoid, so edges stay sharp).",
            inputs=[Pred.Input("prediction", tooltip="From Coarse Predict or a refine/fuse node.")],
            outputs=[io.Mask.Output("mask", tooltip="Foreground probability [B,H,W] at the image "
                                                    "size, 1 = object.")],
        )

    @classmethod
    def execute(cls, prediction) -> io.NodeOutput:
        return io.NodeOutput(to_output(prediction.probabilities()))


class UncertaintyMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousUncertaintyMap",
            display_name="Uncertainty Map (Meticulous)",
            category="meticulous/segment",
            description="Shows where the model is unsure: white where the probability is 0.5, "
                        "black where it is certain (0 or 1). Refinement spends its effort there.",
            inputs=[Pred.Input("prediction", tooltip="From Coarse Predict or a refine/fuse node.")],
            outputs=[io.Image.Output("uncertainty", tooltip="Grey [B,H,W,3] image at the image "
                                                            "size: 1 - |2p - 1|.")],
        )

    @classmethod
    def execute(cls, prediction) -> io.NodeOutput:
        return io.NodeOutput(to_output(grey_image(uncertainty_map(prediction.probabilities()))))


NODES = [Segment, CoarsePredict, PredictionToMask, UncertaintyMap]
