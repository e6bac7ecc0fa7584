"""Packaging: importable under any folder name, no ComfyUI needed, every sub-package listed."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"comfyui_meticulous"} | {
        "comfyui_meticulous." + ".".join(p.parent.relative_to(REPO).parts)
        for p in REPO.rglob("__init__.py")
        if p.parent != REPO and "tests" not in p.relative_to(REPO).parts and not any(
            part.startswith(".") or part in ("build", "bench") for part in p.relative_to(REPO).parts)}
    assert listed == on_disk


def test_loads_like_comfyui_loads_a_custom_node_folder(tmp_path):
    """ComfyUI imports ``custom_nodes/<any name>/__init__.py`` as a module named after the folder."""
    folder = tmp_path / "custom_nodes" / "ComfyUI-Meticulous-main"
    folder.parent.mkdir()
    folder.symlink_to(REPO, target_is_directory=True)
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("ComfyUI-Meticulous-main", {str(folder / '__init__.py')!r},
                                              submodule_search_locations=[{str(folder)!r}])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
assert callable(module.comfy_entrypoint)
import importlib
models = importlib.import_module("ComfyUI-Meticulous-main.models")
assert models.load_model.__module__ == "ComfyUI-Meticulous-main.models.loading"
assert "comfy" not in sys.modules and "folder_paths" not in sys.modules
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_library_import_needs_no_comfyui_and_no_network():
    code = """
import socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("network access at import time")
socket.socket.connect = refuse
socket.create_connection = refuse
import comfyui_meticulous, comfyui_meticulous.models, comfyui_meticulous.inference, comfyui_meticulous.cli
assert not any(name == "comfy" or name.startswith(("comfy.", "comfy_api", "folder_paths")) for name in sys.modules)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_package_spec_is_the_installed_name():
    spec = importlib.util.find_spec("comfyui_meticulous")
    assert spec is not None and Path(spec.origin).resolve() == (REPO / "__init__.py").resolve()


def test_requirements_txt_lists_the_runtime_dependencies_but_torch():
    def name(spec: str) -> str:
        return spec.split(">")[0].split("=")[0].split("<")[0].strip().lower()

    declared = {name(d) for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert {name(line) for line in lines} == declared - {"torch"}
