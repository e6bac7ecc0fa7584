"""Foreground colour estimation and compositing, with the alpha convention in every label."""

import torch

from ..errors import InputError
from ..matting import METHODS, composite, estimate_foreground, parse_colour, premultiply, straight_rgba
from .comfy import io
from .common import on_compute, to_output

CATEGORY = "meticulous/matting"
CONVENTIONS = ["straight", "premultiplied"]


class EstimateForeground(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousEstimateForeground",
            display_name="Estimate Foreground Colour (Meticulous)",
            category=CATEGORY,
            description="Recovers the object's own colour where it is semi-transparent, so hair "
                        "and soft edges placed on a new background carry no halo of the old one. "
                        "Solves for foreground and background colours together (multi-level "
                        "estimation), on the GPU when there is one.",
            inputs=[
                io.Image.Input("image", tooltip="The original images [B,H,W,3]."),
                io.Mask.Input("alpha", tooltip="Their alpha mattes [B,H,W] (1 = object), e.g. from "
                                               "Segment."),
                io.Combo.Input("method", options=list(METHODS), default=METHODS[0],
                               tooltip="multilevel: solves the compositing equation coarse to fine "
                                       "(best). blur_fusion: two alpha-weighted blurs (faster, "
                                       "coarser)."),
            ],
            outputs=[
                io.Image.Output("foreground", display_name="foreground (straight RGB)",
                                tooltip="[B,H,W,3] object colour, independent of alpha: use with "
                                        "the alpha mask, convention 'straight'."),
                io.Image.Output("rgba", display_name="RGBA (straight)",
                                tooltip="[B,H,W,4] the foreground colour with alpha as the 4th "
                                        "channel, straight (not premultiplied), as PNG stores it."),
                io.Image.Output("premultiplied", display_name="premultiplied RGB",
                                tooltip="[B,H,W,3] colour × alpha: the object over black, ready "
                                        "to be added to (1 - alpha) × a background."),
            ],
        )

    @classmethod
    def execute(cls, image: torch.Tensor, alpha: torch.Tensor, method: str) -> io.NodeOutput:
        image, alpha = to_output(image[..., :3]), to_output(alpha)
        foreground = on_compute(estimate_foreground, image, alpha, method=method)
        return io.NodeOutput(foreground, straight_rgba(foreground, alpha), premultiply(foreground, alpha))


class Composite(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MeticulousComposite",
            display_name="Composite Over Background (Meticulous)",
            category=CATEGORY,
            description="Places the foreground over a background image, or over a plain colour "
                        "when no image is connected: out = front + (1 - alpha) × background, "
                        "where front is colour × alpha for straight colour and the colour itself "
                        "for premultiplied colour.",
            inputs=[
                io.Image.Input("foreground", tooltip="Foreground colour [B,H,W,3], or an RGBA image "
                                                     "[B,H,W,4] whose 4th channel is the alpha."),
                io.Combo.Input("alpha_convention", options=CONVENTIONS, default="straight",
                               tooltip="How the foreground colour is stored. straight: the object's "
                                       "own colour (Segment's RGBA, Estimate Foreground's "
                                       "foreground). premultiplied: colour already multiplied by "
                                       "alpha."),
                io.String.Input("background_colour", default="#000000",
                                tooltip="Plain background as #RRGGBB, used when no background "
                                        "image is connected."),
                io.Mask.Input("alpha", optional=True,
                              tooltip="Alpha [B,H,W], 1 = object; when connected it is used instead "
                                      "of an RGBA foreground's 4th channel."),
                io.Image.Input("background", optional=True,
                               tooltip="Background images at the foreground's size: one per frame, "
                                       "or one image behind every frame."),
            ],
            outputs=[io.Image.Output("image", tooltip="The composite [B,H,W,3].")],
        )

    @classmethod
    def validate_inputs(cls, background_colour: str = "#000000") -> bool | str:
        try:
            parse_colour(background_colour)
        except InputError as error:
            return str(error)
        return True

    @classmethod
    def execute(cls, foreground: torch.Tensor, alpha_convention: str, background_colour: str,
                alpha: torch.Tensor | None = None, background: torch.Tensor | None = None) -> io.NodeOutput:
        if alpha is None:
            if foreground.shape[-1] != 4:
                raise InputError("connect an alpha mask, or an RGBA foreground [B,H,W,4] whose 4th "
                                 "channel is the alpha")
            alpha = foreground[..., 3]
        back = background_colour if background is None else to_output(background)
        return io.NodeOutput(composite(to_output(foreground[..., :3]), to_output(alpha), back,
                                       premultiplied=alpha_convention == "premultiplied"))


NODES = [EstimateForeground, Composite]
