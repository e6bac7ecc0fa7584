"""The ``comfyui`` fixture: the node pack loaded the way ComfyUI loads it, on the stand-in API.

Test modules use it with ``from standin import comfyui  # noqa: F401``. Each test gets fresh
stand-in modules (``tests/comfy_standin`` on ``sys.path``), a ComfyUI base folder in
``tmp_path``, the Hugging Face Hub offline, and the extension loaded the way the oldest
supported ComfyUI (v0.3.64) loads it: ``get_node_list()`` without ``on_load()``, each schema
validated; all of it is removed again afterwards, so other test files never see a ``comfy``
module. :func:`load_nodes` loads it the way newer versions do, ``on_load()`` first.
"""

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import constants
from safetensors.torch import save_file

from comfyui_meticulous.weights import set_host_folders

from parity_fixtures import REFERENCE, deterministic_state_dict, load_spec

STANDIN = Path(__file__).resolve().parent / "comfy_standin"
PACK = "comfyui_meticulous.nodes"


def write_test_weights(path: Path) -> Path:
    """Deterministic BiRefNet (PVT-v2-b0) weights from the parity fixtures' key manifest."""
    spec = load_spec(REFERENCE / "birefnet" / "keys_pvt_v2_b0.tsv")
    save_file({key: value.contiguous() for key, value in deterministic_state_dict(spec).items()}, str(path))
    return path


def load_nodes(extension, on_load: bool) -> dict:
    """``{node_id: class}`` as ComfyUI registers an extension's nodes: ``on_load()`` first in
    newer versions (``on_load=True``), not at all in v0.3.64; every schema validated as
    v0.3.64 does (ids unique, none shared between inputs and outputs)."""
    if on_load:
        asyncio.run(extension.on_load())
    node_list = asyncio.run(extension.get_node_list())
    assert isinstance(node_list, list)
    return {node.GET_SCHEMA().node_id: node for node in node_list}


def _forget_comfyui() -> None:
    """Drop the stand-in modules and the node modules bound to them."""
    for name in list(sys.modules):
        if name in ("comfy", "comfy_api", "folder_paths") or name.startswith(("comfy.", "comfy_api.", PACK + ".")):
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            # `from . import models` reuses the package attribute when it is there.
            if parent in sys.modules and hasattr(sys.modules[parent], child):
                delattr(sys.modules[parent], child)


@pytest.fixture
def comfyui(tmp_path, monkeypatch):
    """``SimpleNamespace(api, mm, utils, folder_paths, extension, nodes={node_id: class})``: the
    stand-in's ``comfy_api.latest``, ``comfy.model_management``, ``comfy.utils`` and
    ``folder_paths`` modules, the loaded extension and its nodes by id."""
    monkeypatch.syspath_prepend(str(STANDIN))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    _forget_comfyui()
    import comfy.model_management
    import comfy.utils
    import comfy_api.latest
    import folder_paths

    folder_paths.rebase(str(tmp_path / "ComfyUI"))
    from comfyui_meticulous.nodes import extension

    loaded = asyncio.run(extension())
    nodes = load_nodes(loaded, on_load=False)
    try:
        yield SimpleNamespace(api=comfy_api.latest, mm=comfy.model_management, utils=comfy.utils,
                              folder_paths=folder_paths, extension=loaded, nodes=nodes)
    finally:
        set_host_folders(None)
        _forget_comfyui()
