"""The extension ComfyUI loads: model folders registered at startup, then the node list."""

from . import highres, masks, matting, models, segment, video
from .comfy import ComfyExtension, io
from .model_folders import register_model_folders

NODES = [*models.NODES, *segment.NODES, *highres.NODES, *video.NODES, *masks.NODES, *matting.NODES]


class MeticulousExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
