"""comfyui-meticulous: high-resolution object segmentation and matting.

The package works as a plain library (``import comfyui_meticulous``) and as a ComfyUI custom
node pack. ComfyUI imports this file and calls :func:`comfy_entrypoint`; only then are the
node modules, which need ComfyUI, imported. Nothing here touches the network.
"""

__version__ = "0.1.0"


async def comfy_entrypoint():
    """ComfyUI V3 entry point: returns the extension that lists our nodes."""
    from .nodes import extension

    return await extension()
