"""ComfyUI model-folder registration, with a stand-in ``folder_paths`` that behaves like ComfyUI's.

``FakeFolderPaths`` mirrors ComfyUI's ``folder_paths``: ``folder_names_and_paths[key]`` is
``([folders], extensions)``; ``add_model_folder_path`` appends to a known key (or inserts first
with ``is_default``) and creates an unknown key with an empty extension set (every file
listed); an empty extension set lists every file. ``extra_model_paths.yaml`` entries reach it
through ``add_model_folder_path``, which is how the tests add a yaml folder.
"""

import hashlib
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from comfyui_meticulous.errors import WeightsError
from comfyui_meticulous.nodes.model_folders import register_model_folders
from comfyui_meticulous.weights import WeightsEntry, host_folders, hub, resolve_weights, set_host_folders


class FakeFolderPaths(types.ModuleType):
    supported_pt_extensions = {".ckpt", ".pt", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}

    def __init__(self, base: Path, core_key: bool = True):
        super().__init__("folder_paths")
        self.models_dir = str(base / "models")
        self.folder_names_and_paths = {
            "checkpoints": ([os.path.join(self.models_dir, "checkpoints")], self.supported_pt_extensions)}
        if core_key:
            self.folder_names_and_paths["background_removal"] = (
                [os.path.join(self.models_dir, "background_removal")], self.supported_pt_extensions)

    def add_model_folder_path(self, folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
        if folder_name in self.folder_names_and_paths:
            paths = self.folder_names_and_paths[folder_name][0]
            paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
        else:
            self.folder_names_and_paths[folder_name] = ([full_folder_path], set())

    def get_folder_paths(self, folder_name: str) -> list[str]:
        return self.folder_names_and_paths[folder_name][0][:]

    def get_filename_list(self, folder_name: str) -> list[str]:
        folders, extensions = self.folder_names_and_paths[folder_name]
        names = set()
        for folder in folders:
            for root, _, files in os.walk(folder):
                names.update(os.path.relpath(os.path.join(root, name), folder) for name in files
                             if not extensions or os.path.splitext(name)[1].lower() in extensions)
        return sorted(names)


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    """A fresh ComfyUI ``folder_paths``, offline, with caches in tmp_path."""
    fake = FakeFolderPaths(tmp_path / "ComfyUI")
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    # These tests are about where files are found, with small stand-in files; the check that a
    # file holds its entry's network has its own tests (test_weights_hub.py).
    monkeypatch.setattr(hub, "check_layout", lambda entry, path: None)
    yield fake
    set_host_folders(None)


def _weights(path: Path) -> str:
    """Write a small safetensors file at ``path``; its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.arange(12.0).reshape(3, 4)}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _entry(sha256: str | None = None, folder: str = "meticulous", local_filename: str = "test_model.safetensors"):
    return WeightsEntry.from_json({
        "id": "test-model", "title": "Test model", "architecture": "birefnet", "backbone": "swin_v1_t",
        "task": "general", "resolution": {"height": 1024, "width": 1024}, "repo": "meticulous-test/model",
        "revision": "main", "revision_pinned": False, "filename": "model.safetensors",
        "local_filename": local_filename, "folder": folder, "size": None, "size_exact": False,
        "sha256": sha256, "licence": "MIT", "patch_order": "einops", "notes": "sha256 set by the test."})


def test_registers_models_meticulous_listing_safetensors_only(comfy):
    register_model_folders()
    ours = os.path.join(comfy.models_dir, "meticulous")
    assert comfy.folder_names_and_paths["meticulous"] == ([ours], {".safetensors"})
    for name in ("a.safetensors", "a.safetensors.sha256", "old.pth", "b.safetensors.rejected"):
        Path(ours, name).parent.mkdir(parents=True, exist_ok=True)
        Path(ours, name).write_bytes(b"x")
    assert comfy.get_filename_list("meticulous") == ["a.safetensors"]


@pytest.mark.parametrize("is_default", [False, True])
def test_a_key_created_by_extra_model_paths_keeps_its_folders(comfy, tmp_path, is_default):
    shared = str(tmp_path / "nas" / "meticulous")
    comfy.add_model_folder_path("meticulous", shared, is_default)  # extra_model_paths.yaml, read first
    register_model_folders()
    register_model_folders()  # a second call changes nothing
    paths, extensions = comfy.folder_names_and_paths["meticulous"]
    assert paths == [shared, os.path.join(comfy.models_dir, "meticulous")]
    assert extensions == {".safetensors"}


@pytest.mark.parametrize("yaml_first", [True, False], ids=["yaml-before", "yaml-after"])
def test_a_file_placed_by_hand_in_a_yaml_folder_is_found_offline(comfy, tmp_path, yaml_first):
    shared = tmp_path / "nas" / "meticulous"
    if yaml_first:
        comfy.add_model_folder_path("meticulous", str(shared))
    register_model_folders()
    if not yaml_first:
        comfy.add_model_folder_path("meticulous", str(shared))  # looked up at each call, not copied
    digest = _weights(shared / "test_model.safetensors")
    assert resolve_weights(_entry(digest)) == shared / "test_model.safetensors"


def test_core_background_removal_folder_is_searched_for_the_shared_file(comfy):
    register_model_folders()
    placed = Path(comfy.models_dir) / "background_removal" / "birefnet.safetensors"
    digest = _weights(placed)
    entry = _entry(digest, folder="background_removal", local_filename="birefnet.safetensors")
    assert resolve_weights(entry) == placed


def test_downloads_go_to_the_comfyui_models_tree(comfy):
    register_model_folders()
    models = comfy.models_dir
    assert dict(host_folders().downloads) == {"meticulous": os.path.join(models, "meticulous"),
                                              "background_removal": os.path.join(models, "background_removal")}


def test_older_comfyui_without_a_background_removal_key(tmp_path, monkeypatch):
    fake = FakeFolderPaths(tmp_path / "ComfyUI", core_key=False)
    monkeypatch.setitem(sys.modules, "folder_paths", fake)
    register_model_folders()
    try:
        assert host_folders().search("background_removal") == [os.path.join(fake.models_dir, "background_removal")]
        assert "background_removal" not in fake.folder_names_and_paths  # core's key is not ours to create
    finally:
        set_host_folders(None)


def test_a_missing_file_names_every_comfyui_folder_and_the_place_to_put_it(comfy, tmp_path):
    shared = tmp_path / "nas" / "meticulous"
    comfy.add_model_folder_path("meticulous", str(shared))
    register_model_folders()
    with pytest.raises(WeightsError) as caught:
        resolve_weights(_entry("0" * 64))
    message = str(caught.value)
    ours = Path(comfy.models_dir) / "meticulous" / "test_model.safetensors"
    assert f"Looked in:\n  {shared / 'test_model.safetensors'}\n  {ours}\n" in message
    assert f"save it as\n  {ours}" in message


def test_importing_the_library_touches_neither_comfyui_nor_the_network():
    script = textwrap.dedent("""
        import socket, sys
        def refuse(*args, **kwargs):
            raise AssertionError("network access at import time")
        socket.socket.connect = socket.socket.connect_ex = socket.create_connection = refuse
        import comfyui_meticulous, comfyui_meticulous.models, comfyui_meticulous.nodes.model_folders
        from comfyui_meticulous.weights import catalogue
        assert len(catalogue()) >= 17
        assert "folder_paths" not in sys.modules and "comfy" not in sys.modules
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
