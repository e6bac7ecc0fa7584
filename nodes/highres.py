"""High-resolution nodes: refine a coarse prediction where it is unsure, fuse, or do it all at once."""

import functools
import os

import torch

from ..checks import check_images
from ..errors import InputError
from ..highres import (BandFusion, HighResOptions, UncertainBand, patch_input_size, segment_highres,
                       uncertainty_preview, uncertainty_refine)
from ..highres.learned import LearnedFusion
from ..highres.uncertainty import RULES
from ..models import load_model
from ..models.loading import file_role
from ..models.registry import architectures
from .comfy import io, model_file_path, model_files, progress_reporter, wrap_model
from .common import (CPU_BATCH, Model, Pred, cut_out, cutout_outputs, grey_image, ready_model, rgba_colour_input,
                     to_output)

CATEGORY = "meticulous/highres"
PREDICTION_IN = "From Coarse Predict (or another refine/fuse node) for the same images."


def band_inputs() -> list:
    return [
        io.Combo.Input("rule", options=list(RULES), default=RULES[0],
                       tooltip="Which pixels count as uncertain. mos: the given fraction of pixels "
                               "closest to 0.5 (Meticulous Object Segmentation). hrsod: pixels with "
                               "probability between 50/255 and 200/255 (HRSOD)."),
        io.Float.Input("fraction", default=0.1, min=0.0, max=1.0, step=0.01,
                       tooltip="mos rule: share of each image treated as uncertain (0.1 = 10 %)."),
    ]


def window_inputs() -> list:
    return [
        io.Float.Input("zoom", default=1.0, min=0.0, max=1.0, step=0.05,
                       tooltip="Scale of the refinement windows: 1 = full resolution (finest detail, "
                               "most windows), 0 = the coarse pass's scale."),
        io.Int.Input("max_patches", default=0, min=0, max=4096,
                     tooltip="At most this many windows per image, most uncertain first; 0 = every "
                             "window the uncertain band needs."),
        io.Int.Input("batch_size", default=0, min=0, max=64,
                     tooltip="Windows per model pass; 0 = as many as fit in free GPU memory "
                             f"({CPU_BATCH} on the CPU)."),
    ]


def _band(rule: str, fraction: float) -> UncertainBand:
    return UncertainBand(rule=rule, fraction=fraction)


TRAINING_FREE = "none (training-free)"


def learned_files(role: str) -> list[str]:
    """Files in ``models/meticulous`` holding a trained network of ``role`` (``"refiner"`` or
    ``"fusion"``), read from their headers only."""
    return [name for name in model_files() if file_role(model_file_path(name)) == role]


def learned_input(role: str, use: str) -> io.Combo.Input:
    kinds = ", ".join(a.id for a in architectures(role=role, trainable=True))
    return io.Combo.Input("learned_weights", options=[TRAINING_FREE, *learned_files(role)], default=TRAINING_FREE,
                          tooltip=f"A network trained with `python -m comfyui_meticulous train` ({kinds}) "
                                  f"from models/meticulous, to {use} instead of the training-free rule.")


@functools.lru_cache(maxsize=4)
def _patcher(path: str, stamp: tuple[int, int], role: str):
    # One ModelPatcher per file version: ComfyUI's model management moves it to the GPU,
    # offloads it and frees it like the segmentation models; a changed file is read again.
    return wrap_model(load_model(path, role=role))


def learned_patcher(name: str, role: str):
    """A ModelPatcher holding the trained network in file ``name`` (of ``role``)."""
    path = model_file_path(name)
    status = os.stat(path)
    return _patcher(path, (status.st_size, status.st_mtime_ns), role)


class UncertaintyRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousUncertaintyRefine",
            display_name="Uncertainty Refine (Meticulous)",
            category=CATEGORY,
            description="Looks again, at full resolution, where a coarse prediction is unsure: "
                        "windows over the uncertain band are cut from the image and run through the "
                        "same model. Feed the result and the coarse prediction to Global-Local Fuse.",
            inputs=[
                Model.Input("model", tooltip="A model from Load Segmentation Model."),
                io.Image.Input("image", tooltip="The images the prediction was made from, [B,H,W,3]."),
                Pred.Input("prediction", tooltip=PREDICTION_IN),
                *band_inputs(),
                *window_inputs(),
                learned_input("refiner", "refine the windows with it"),
            ],
            outputs=[Pred.Output("local_prediction", display_name="local prediction",
                                 tooltip="Full-resolution logits with the refined windows blended in, "
                                         "and where they carry evidence.")],
        )

    @classmethod
    def execute(cls, model, image: torch.Tensor, prediction, rule: str, fraction: float, zoom: float,
                max_patches: int, batch_size: int, learned_weights: str = TRAINING_FREE) -> io.NodeOutput:
        check_images(image, batched=True)
        if learned_weights != TRAINING_FREE:
            # The learned block refines the same windows in place of the segmentation model.
            model = learned_patcher(learned_weights, "refiner")
        network, batch_size = ready_model(model, patch_input_size(model.model), batch_size)
        refined, _ = uncertainty_refine(network, image, prediction, _band(rule, fraction), zoom=zoom,
                                        max_patches=max_patches or None, batch_size=batch_size,
                                        progress=progress_reporter(image.shape[0]))
        return io.NodeOutput(refined)


class GlobalLocalFuse(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousGlobalLocalFuse",
            display_name="Global-Local Fuse (Meticulous)",
            category=CATEGORY,
            description="Combines a global (coarse) and a local (refined) prediction: the local one "
                        "replaces the global one only inside the global prediction's uncertain band, "
                        "with a smooth seam; where the global pass is confident it is kept.",
            inputs=[
                Pred.Input("global_prediction", tooltip="The coarse prediction, e.g. from Coarse Predict."),
                Pred.Input("local_prediction", tooltip="The refined prediction of the same images, e.g. "
                                                       "from Uncertainty Refine."),
                *band_inputs(),
                learned_input("fusion", "fuse the two maps with the image (HRSOD's GLFN)"),
                io.Image.Input("image", optional=True,
                               tooltip="The images both predictions were made from; needed by learned "
                                       "weights, which look at the picture."),
            ],
            outputs=[Pred.Output("prediction", tooltip="The fused full-resolution prediction.")],
        )

    @classmethod
    def execute(cls, global_prediction, local_prediction, rule: str, fraction: float,
                learned_weights: str = TRAINING_FREE, image: torch.Tensor | None = None) -> io.NodeOutput:
        fusion = BandFusion(_band(rule, fraction))
        if learned_weights != TRAINING_FREE:
            if image is None:
                raise InputError("learned fusion weights look at the picture: connect the image input")
            patcher = learned_patcher(learned_weights, "fusion")
            fusion = LearnedFusion(patcher.model, fusion)
            # Moves the network to the compute device, in place, with room for one image.
            ready_model(patcher, (fusion.resolution, fusion.resolution), 1)
        return io.NodeOutput(fusion(global_prediction, local_prediction, image))


class SegmentHighRes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousSegmentHighRes",
            display_name="Segment High-Res (Meticulous)",
            category=CATEGORY,
            description="Segments large photos at full detail in one node: a coarse pass over the "
                        "whole image, full-resolution windows where it is unsure, and a seamless "
                        "fusion. Images no larger than the model's input get the coarse result.",
            inputs=[
                Model.Input("model", tooltip="A model from Load Segmentation Model."),
                io.Image.Input("image", tooltip="Images to segment, [B,H,W,3]."),
                io.Int.Input("resolution", default=0, min=0, max=4096, step=32,
                             tooltip="Side of the coarse pass's input; 0 = the model's native size."),
                *band_inputs(),
                *window_inputs(),
                rgba_colour_input(),
            ],
            outputs=[
                *cutout_outputs(),
                Pred.Output("prediction", tooltip="The fused prediction, for Prediction to Mask or "
                                                  "Uncertainty Map."),
                io.Image.Output("band_preview", tooltip="The coarse pass's uncertainty (grey), the "
                                                        "uncertain band (bright) and the refined "
                                                        "windows (white outlines), at the band's grid "
                                                        "size."),
            ],
        )

    @classmethod
    def execute(cls, model, image: torch.Tensor, resolution: int, rule: str, fraction: float, zoom: float,
                max_patches: int, batch_size: int, rgba_colour: str) -> io.NodeOutput:
        check_images(image, batched=True)  # before the model is moved onto the GPU
        network, batch_size = ready_model(model, patch_input_size(model.model), batch_size)
        band = _band(rule, fraction)
        options = HighResOptions(band=band, zoom=zoom, max_patches=max_patches or None, batch_size=batch_size,
                                 coarse_resolution=resolution or None)
        result = segment_highres(network, image, options, progress=progress_reporter(image.shape[0]))
        mask = to_output(result.prediction.probabilities())
        preview = grey_image(uncertainty_preview(result.coarse, band, result.plans or None))
        return io.NodeOutput(mask, cut_out(image, mask, rgba_colour), result.prediction, to_output(preview))


NODES = [UncertaintyRefine, GlobalLocalFuse, SegmentHighRes]
