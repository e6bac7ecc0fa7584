"""Mask tools in pixel units at full resolution, run on the GPU when ComfyUI has one."""

import torch

from .. import matting
from .comfy import io
from .common import on_compute

CATEGORY = "meticulous/mask"
MASK_IN = "Mask [B,H,W] with values 0..1; every frame of a batch gets the same edit."
MASK_OUT = "The edited mask [B,H,W]."
THRESHOLD = "Pixels at or above this value count as object."


def _mask_input() -> io.Mask.Input:
    return io.Mask.Input("mask", tooltip=MASK_IN)


def _mask_output() -> io.Mask.Output:
    # Output ids must differ from input ids (ComfyUI v0.3.64 refuses the schema otherwise); the
    # socket still reads "mask".
    return io.Mask.Output("edited_mask", display_name="mask", tooltip=MASK_OUT)


class MaskLevels(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousMaskLevels",
            display_name="Mask Levels (Meticulous)",
            category=CATEGORY,
            description="Remaps black point..white point to 0..1, clipping outside, then bends the "
                        "mid-tones with gamma, as the Levels dialog of an image editor does.",
            inputs=[
                _mask_input(),
                io.Float.Input("black_point", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Values at or below become 0 (fully transparent)."),
                io.Float.Input("white_point", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Values at or above become 1 (fully opaque); must be above "
                                       "the black point."),
                io.Float.Input("gamma", default=1.0, min=0.05, max=10.0, step=0.01,
                               tooltip="Mid-tone curve, out = v^(1/gamma): above 1 makes soft edges "
                                       "more opaque, below 1 more transparent."),
            ],
            outputs=[_mask_output()],
        )

    @classmethod
    def validate_inputs(cls, black_point: float = 0.0, white_point: float = 1.0) -> bool | str:
        # ComfyUI skips its own range checks for inputs a node validates itself.
        if not 0.0 <= black_point < white_point <= 1.0:
            return (f"need 0 <= black_point < white_point <= 1; got black_point {black_point:g}, "
                    f"white_point {white_point:g}")
        return True

    @classmethod
    def execute(cls, mask: torch.Tensor, black_point: float, white_point: float, gamma: float) -> io.NodeOutput:
        return io.NodeOutput(on_compute(matting.levels, mask, black_point=black_point,
                                        white_point=white_point, gamma=gamma))


class MaskThreshold(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousMaskThreshold",
            display_name="Mask Threshold (Meticulous)",
            category=CATEGORY,
            description="Makes a hard mask: 1 where the mask reaches the threshold, 0 elsewhere.",
            inputs=[_mask_input(),
                    io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01, tooltip=THRESHOLD)],
            outputs=[_mask_output()],
        )

    @classmethod
    def execute(cls, mask: torch.Tensor, threshold: float) -> io.NodeOutput:
        return io.NodeOutput(on_compute(matting.threshold, mask, t=threshold))


class MaskChokeSpread(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousMaskChokeSpread",
            display_name="Mask Choke / Spread (Meticulous)",
            category=CATEGORY,
            description="Moves the mask's edge inward (choke, negative pixels) or outward (spread, "
                        "positive pixels) by a round brush of that radius; soft edges keep their "
                        "profile. Fractions move the edge smoothly.",
            inputs=[_mask_input(),
                    io.Float.Input("pixels", default=-2.0, min=-256.0, max=256.0, step=0.5,
                                   tooltip="Distance in full-resolution pixels: negative chokes "
                                           "(shrinks), positive spreads (grows).")],
            outputs=[_mask_output()],
        )

    @classmethod
    def execute(cls, mask: torch.Tensor, pixels: float) -> io.NodeOutput:
        return io.NodeOutput(on_compute(matting.choke_spread, mask, pixels=pixels))


class MaskFeather(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousMaskFeather",
            display_name="Mask Feather (Meticulous)",
            category=CATEGORY,
            description="Softens the mask's edges with a Gaussian blur, so a hard edge ramps over "
                        "about the given width on each side.",
            inputs=[_mask_input(),
                    io.Float.Input("pixels", default=4.0, min=0.0, max=512.0, step=0.5,
                                   tooltip="Ramp width on each side of the edge, in full-resolution "
                                           "pixels (Gaussian sigma = pixels / 2); 0 leaves the mask "
                                           "as it is.")],
            outputs=[_mask_output()],
        )

    @classmethod
    def execute(cls, mask: torch.Tensor, pixels: float) -> io.NodeOutput:
        return io.NodeOutput(on_compute(matting.feather, mask, pixels=pixels))


class MaskFillHoles(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousMaskFillHoles",
            display_name="Mask Fill Holes (Meticulous)",
            category=CATEGORY,
            description="Fills holes: background regions enclosed by the object that do not reach "
                        "the image border become 1. Soft edges elsewhere are kept.",
            inputs=[_mask_input(),
                    io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01,
                                   tooltip="Pixels below this value are background; enclosed "
                                           "background is filled.")],
            outputs=[_mask_output()],
        )

    @classmethod
    def execute(cls, mask: torch.Tensor, threshold: float) -> io.NodeOutput:
        return io.NodeOutput(on_compute(matting.fill_holes, mask, threshold=threshold))


class MaskRemoveSmallIslands(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousMaskRemoveSmallIslands",
            display_name="Mask Remove Small Islands (Meticulous)",
            category=CATEGORY,
            description="Clears specks: separate pieces of the mask smaller than the given area are "
                        "set to 0 together with their soft edge.",
            inputs=[_mask_input(),
                    io.Int.Input("min_area", default=64, min=0, max=1 << 28,
                                 tooltip="Pieces with fewer pixels than this (at full resolution, "
                                         "8-connected) are removed."),
                    io.Float.Input("threshold", default=0.5, min=0.01, max=1.0, step=0.01, tooltip=THRESHOLD)],
            outputs=[_mask_output()],
        )

    @classmethod
    def execute(cls, mask: torch.Tensor, min_area: int, threshold: float) -> io.NodeOutput:
        return io.NodeOutput(on_compute(matting.remove_small_islands, mask, min_area_px=min_area,
                                        threshold=threshold))


class MaskInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousMaskInvert",
            display_name="Mask Invert (Meticulous)",
            category=CATEGORY,
            description="1 - mask: selects the background instead of the object (e.g. for "
                        "inpainting a new background).",
            inputs=[_mask_input()],
            outputs=[_mask_output()],
        )

    @classmethod
    def execute(cls, mask: torch.Tensor) -> io.NodeOutput:
        return io.NodeOutput(on_compute(matting.invert, mask))


NODES = [MaskLevels, MaskThreshold, MaskChokeSpread, MaskFeather, MaskFillHoles, MaskRemoveSmallIslands,
         MaskInvert]
