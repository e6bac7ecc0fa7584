"""The ComfyUI nodes. Importing this package needs no ComfyUI; calling :func:`extension` does."""


async def extension():
    """The pack's ``ComfyExtension``; ComfyUI gets it through the root ``comfy_entrypoint``."""
    from .registry import MeticulousExtension

    return MeticulousExtension()
