"""Video matting: a whole frame batch in memory-bounded chunks, smoothed over time."""

import json

import torch

from ..inference.device import CPU_BATCH
from ..video import matte_video, model_runner
from .comfy import compute_device, free_memory, io, load_for_inference, progress_reporter
from .common import activation_bytes, cutout_outputs, input_size, segment_inputs, to_output

# The smoothing state each Video Matte node hands from one run to the next (VideoHelperSuite's
# Meta Batch Manager feeds a long video as several runs), by node id.
_STATES: dict = {}


class VideoMatte(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        model, image, resolution, keep_aspect, _ = segment_inputs()
        return io.Schema(
            node_id="MeticulousVideoMatte",
            display_name="Video Matte (Meticulous)",
            category="meticulous/video",
            description="Mattes every frame of a video batch (e.g. from VideoHelperSuite's Load "
                        "Video) in chunks that fit in memory, with optional motion-gated temporal "
                        "smoothing against flicker. The RGBA output goes straight into Video "
                        "Combine with an alpha format (ProRes 4444, webm yuva420p, PNG).",
            inputs=[
                model,
                io.Image.Input("frames", tooltip="Video frames as one batch [N,H,W,3]."),
                resolution,
                keep_aspect,
                io.Int.Input("batch_size", default=0, min=0, max=64,
                             tooltip="Frames per model pass; 0 = measured: one frame is run first "
                                     "and the chunk is sized from the free GPU memory ComfyUI "
                                     f"reports ({CPU_BATCH} on the CPU)."),
                io.Float.Input("temporal_smoothing", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="Averages the mask over time where the picture is still, "
                                       "never where it moves; 0 = every frame on its own."),
                io.Boolean.Input("continue_previous", default=True,
                                 tooltip="Carry the smoothing over from this node's previous run, "
                                         "for a video that Meta Batch Manager feeds in chunks. Turn "
                                         "off for unrelated clips of the same size."),
            ],
            outputs=cutout_outputs(),
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, model, frames: torch.Tensor, resolution: int, keep_aspect: bool, batch_size: int,
                temporal_smoothing: float, continue_previous: bool) -> io.NodeOutput:
        size = input_size(model, frames, resolution, keep_aspect)
        network = load_for_inference(model, activation_bytes(size) * max(1, batch_size))
        node = cls.hidden.unique_id
        source = (node, upstream_fingerprint(cls.hidden.prompt, node, "frames"))
        result = matte_video(frames, model_runner(network, resolution=resolution or None, keep_aspect=keep_aspect),
                             device=compute_device(), batch_size=batch_size, temporal_smoothing=temporal_smoothing,
                             state=_STATES.get(node) if continue_previous else None, source=source,
                             free_memory=free_memory, progress=progress_reporter(frames.shape[0]))
        _STATES[node] = result.state
        return io.NodeOutput(to_output(result.masks), to_output(result.rgba))


def upstream_fingerprint(prompt: dict | None, node: str, socket: str) -> str | None:
    """The settings of the node feeding ``socket`` (e.g. Load Video's file and frame range).

    Meta Batch Manager re-queues the same prompt for every chunk of one video, so this stays the
    same across its chunks and changes when the user picks another clip: the smoothing state
    then starts afresh instead of blending the last frame of one video into another.
    """
    link = ((prompt or {}).get(str(node)) or {}).get("inputs", {}).get(socket)
    if not isinstance(link, list) or not link:
        return None
    return json.dumps((prompt.get(str(link[0])) or {}), sort_keys=True, default=str)


NODES = [VideoMatte]
