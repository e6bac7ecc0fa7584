"""Stand-in for ``comfy_api.latest``: the extension base class and the ``io`` schema module."""

from abc import ABC, abstractmethod

from . import _io as io


class ComfyExtension(ABC):
    async def on_load(self) -> None:
        """Called when an extension is loaded, before ``get_node_list``."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        """The node classes this extension provides."""


__all__ = ["ComfyExtension", "io"]
