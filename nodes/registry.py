"""The extension ComfyUI loads: model folders registered on import, then the node list."""

from . import highres, masks, matting, models, segment, video
from .comfy import ComfyExtension, io
from .model_folders import register_model_folders

# On import, not only in on_load: ComfyUI v0.3.64 calls get_node_list() without calling
# on_load() first, and the Load Segmentation Model schema lists the `meticulous` folder.
# Newer versions call on_load() first; registering twice changes nothing.
register_model_folders()

NODES = [*models.NODES, *segment.NODES, *highres.NODES, *video.NODES, *masks.NODES, *matting.NODES]


class MeticulousExtension(ComfyExtension):
    async def on_load(self) -> None:
        register_model_folders()

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
