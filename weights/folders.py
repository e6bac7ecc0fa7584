"""Where a host application keeps model files, set once by the host at startup.

The library never imports a host. ComfyUI's node extension fills this in (see
``nodes/model_folders.py``) so that weights are looked up in its model folders, including those
users add in ``extra_model_paths.yaml``, and downloaded into its ``models`` tree.
"""

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostFolders:
    """``search(key)``: the folders to look in for a folder key, asked at each lookup so that
    folders added later count; ``downloads[key]``: the folder new downloads for that key go to."""

    search: Callable[[str], Sequence[str | os.PathLike]]
    downloads: Mapping[str, str | os.PathLike]


_host: HostFolders | None = None


def set_host_folders(host: HostFolders | None) -> None:
    """Use ``host``'s model folders from now on, process-wide (None: no host, use the HF cache)."""
    global _host
    _host = host


def host_folders() -> HostFolders | None:
    """The model folders set by the host application, if any."""
    return _host
