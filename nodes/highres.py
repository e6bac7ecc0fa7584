"""High-resolution nodes: refine a coarse prediction where it is unsure, fuse, or do it all at once."""

import torch

from ..checks import check_images
from ..errors import InputError, WeightsError
from ..highres import (BandFusion, HighResOptions, UncertainBand, patch_input_size, segment_highres,
                       uncertainty_preview, uncertainty_refine)
from ..highres.learned import LearnedFusion
from ..highres.uncertainty import RULES
from ..models.learned import block_metadata, load_block
from .comfy import compute_device, io, model_file_path, model_files, progress_reporter
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
# Learned blocks that refine a prediction, and the one that fuses a global and a local one.
REFINERS = ("hierpr", "refinemask", "lrn")
FUSERS = ("glfn",)


def learned_files(blocks: tuple[str, ...]) -> list[str]:
    """Files in ``models/meticulous`` holding one of ``blocks`` (read from their headers only)."""
    found = []
    for name in model_files():
        try:
            if block_metadata(model_file_path(name))["block"] in blocks:
                found.append(name)
        except WeightsError:
            continue  # published network weights, or a file that is not ours: not a learned block
    return found


def learned_input(blocks: tuple[str, ...], use: str) -> io.Combo.Input:
    return io.Combo.Input("learned_weights", options=[TRAINING_FREE, *learned_files(blocks)], default=TRAINING_FREE,
                          tooltip=f"A block trained with `python -m comfyui_meticulous train` ({', '.join(blocks)}) "
                                  f"from models/meticulous, to {use} instead of the training-free rule.")


def _learned(name: str, blocks: tuple[str, ...]):
    return load_block(model_file_path(name), device=compute_device(), expect=blocks)


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
                learned_input(REFINERS, "refine the windows with it"),
            ],
            outputs=[Pred.Output("prediction", display_name="local prediction",
                                 tooltip="Full-resolution logits with the refined windows blended in, "
                                         "and where they carry evidence.")],
        )

    @classmethod
    def execute(cls, model, image: torch.Tensor, prediction, rule: str, fraction: float, zoom: float,
                max_patches: int, batch_size: int, learned_weights: str = TRAINING_FREE) -> io.NodeOutput:
        check_images(image, batched=True)
        if learned_weights != TRAINING_FREE:
            # The learned block refines the same windows in place of the segmentation model.
            network, batch_size = _learned(learned_weights, REFINERS), batch_size or CPU_BATCH
        else:
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
                learned_input(FUSERS, "fuse the two maps with the image (HRSOD's GLFN)"),
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
            fusion = LearnedFusion(_learned(learned_weights, FUSERS), fusion)
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
