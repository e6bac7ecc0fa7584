"""Socket types, memory planning and tensor moves shared by the nodes.

``METICULOUS_MODEL`` carries a ComfyUI ``ModelPatcher`` whose ``.model`` is one of our networks;
``METICULOUS_PRED`` carries a :class:`~comfyui_meticulous.inference.Prediction` (logits at the
resolution of the block that made them, on the compute device, plus the image size they map
back to).
"""

from collections.abc import Callable

import torch
from torch import nn

from ..inference import inference_size
from ..inference.device import CPU_BATCH
from ..matting import estimate_foreground, straight_rgba
from .comfy import compute_device, free_memory, io, is_cpu, load_for_inference, output_device

Model = io.Custom("METICULOUS_MODEL")
Pred = io.Custom("METICULOUS_PRED")

# Peak working memory of a BiRefNet pass per model-input pixel. The published figures for the
# Swin-L model at 1024² (4.8 GB in fp32, 3.5 GB in fp16, weights included) come to about 3.7 KB
# and 2.9 KB per pixel once the weights are taken out; 4 KiB keeps a margin for allocator
# fragmentation and applies to every precision and to the smaller networks.
BYTES_PER_INPUT_PIXEL = 4096
# Past this many images per pass a GPU gains nothing and a cancel waits longer.
MAX_AUTO_BATCH = 16
RGBA_COLOURS = ["image", "estimated foreground"]


def segment_inputs() -> list:
    """The inputs every node that runs a segmentation model shares, in widget order."""
    return [
        Model.Input("model", tooltip="A model from Load Segmentation Model."),
        io.Image.Input("image", tooltip="Images to segment, [B,H,W,3]; a whole batch at once."),
        io.Int.Input("resolution", default=0, min=0, max=4096, step=32,
                     tooltip="Side in pixels of the square the model sees; 0 = the model's native "
                             "size (1024 for most BiRefNet weights). Larger sizes resolve finer "
                             "detail, and memory grows with the square of the side."),
        io.Boolean.Input("keep_aspect", default=False,
                         tooltip="Keep the image's aspect ratio at the same pixel count instead of "
                                 "squashing it into a square: objects keep their shape and the "
                                 "scale the model was trained on."),
        io.Int.Input("batch_size", default=0, min=0, max=64,
                     tooltip="Images per model pass; 0 = as many as fit in free GPU memory "
                             f"(about {BYTES_PER_INPUT_PIXEL // 1024} KiB per model-input pixel, "
                             f"at most {MAX_AUTO_BATCH}), {CPU_BATCH} on the CPU."),
    ]


def rgba_colour_input() -> io.Combo.Input:
    return io.Combo.Input("rgba_colour", options=RGBA_COLOURS, default="image",
                          tooltip="Colour of the RGBA output. image: the input pixels as they are. "
                                  "estimated foreground: soft edges (hair, fur) get the object's own "
                                  "colour instead of a blend with the old background, so they carry "
                                  "no halo onto a new one.")


def cutout_outputs() -> list:
    return [
        io.Mask.Output("mask", tooltip="Foreground probability [B,H,W] at the image size, 1 = object."),
        io.Image.Output("rgba", display_name="RGBA (straight)",
                        tooltip="[B,H,W,4] image with the mask as straight (not premultiplied) alpha."),
    ]


def cut_out(image: torch.Tensor, mask: torch.Tensor, rgba_colour: str) -> torch.Tensor:
    """Straight RGBA ``[B,H,W,4]`` on the output device: ``mask`` as alpha, colour per ``rgba_colour``."""
    colour = to_output(image[..., :3])
    if rgba_colour == "estimated foreground":
        colour = on_compute(estimate_foreground, colour, mask)
    return straight_rgba(colour, mask)


def activation_bytes(size: tuple[int, int]) -> int:
    """Estimated working memory of one image at model input size ``(h, w)``."""
    return size[0] * size[1] * BYTES_PER_INPUT_PIXEL


def auto_batch_size(free_bytes: int, per_image_bytes: int, on_cpu: bool) -> int:
    """Images per pass for ``batch_size`` 0: what fits in ``free_bytes``, 1 to ``MAX_AUTO_BATCH``
    (on Apple MPS the free memory is the shared system memory); ``CPU_BATCH`` on the CPU, where
    a larger batch is no faster."""
    if on_cpu:
        return CPU_BATCH
    return max(1, min(MAX_AUTO_BATCH, free_bytes // max(1, per_image_bytes)))


def ready_model(patcher, input_size: tuple[int, int], batch_size: int) -> tuple[nn.Module, int]:
    """Load the model for passes at ``input_size`` ``(h, w)`` and settle the batch size.

    ComfyUI is asked to free the memory of one batch beside the weights (one image when the
    batch size is still to be chosen), then ``batch_size`` 0 becomes what the free memory holds.
    """
    per_image = activation_bytes(input_size)
    model = load_for_inference(patcher, per_image * max(1, batch_size))
    if batch_size == 0:
        device = compute_device()
        batch_size = auto_batch_size(free_memory(device), per_image, is_cpu(device))
    return model, batch_size


def input_size(patcher, images: torch.Tensor, resolution: int, keep_aspect: bool) -> tuple[int, int]:
    """The model input size ``(h, w)`` for ``images`` ``[B,H,W,C]`` at a node's resolution settings."""
    return inference_size(patcher.model, tuple(images.shape[1:3]), resolution or None, keep_aspect)


def ready_for_images(patcher, images: torch.Tensor, resolution: int, keep_aspect: bool,
                     batch_size: int) -> tuple[nn.Module, int]:
    """:func:`ready_model` for whole images at a node's resolution settings."""
    return ready_model(patcher, input_size(patcher, images, resolution, keep_aspect), batch_size)


def on_compute(function: Callable[..., torch.Tensor], *tensors: torch.Tensor, **options) -> torch.Tensor:
    """``function(*tensors, **options)`` run on the compute device (the tensors are moved there,
    the options are passed as they are), result on the output device."""
    device = compute_device()
    return function(*(t.to(device) for t in tensors), **options).to(output_device())


def to_output(tensor: torch.Tensor) -> torch.Tensor:
    """A node output: float32 on ComfyUI's intermediate device."""
    return tensor.to(device=output_device(), dtype=torch.float32)


def grey_image(values: torch.Tensor) -> torch.Tensor:
    """``[B,H,W]`` values in 0..1 as a grey IMAGE ``[B,H,W,3]`` for preview nodes."""
    # A real copy, not an expanded view: downstream nodes may write into their inputs.
    return values.unsqueeze(-1).repeat(1, 1, 1, 3)
