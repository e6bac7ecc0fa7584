"""End to end in a real ComfyUI: the pack loads from ``custom_nodes``, registers its nodes with
the schemas the stand-in tests assume, and every example workflow that needs no diffusion
checkpoint validates and runs on the CPU (those with VideoHelperSuite nodes only on the stand-in,
in ``test_workflows.py``: this ComfyUI loads no other node pack).

Needs a ComfyUI checkout in ``COMFYUI_DIR`` (and its requirements importable by
``COMFYUI_PYTHON``, default this interpreter); skipped when ``COMFYUI_DIR`` is unset. ComfyUI
runs headless with ``--base-directory`` in a temporary folder, so the checkout is not touched:
the pack is symlinked into that folder's ``custom_nodes`` under another name, deterministic
test weights go to its ``models/meticulous`` and a synthetic photo to its ``input``.
"""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from PIL import Image

from standin import comfyui, write_test_weights  # noqa: F401  (comfyui is a fixture)
from workflow_format import CHECKPOINT_NODES, node_info, node_types, to_api, validate, workflow_files

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR is not set: no ComfyUI to run")

REPO = Path(__file__).resolve().parents[1]
PACK_FOLDER = "ComfyUI-Meticulous-e2e"
WEIGHTS = "birefnet_b0_e2e.safetensors"
# Our nodes whose first widget is the model input's side: set small, for a quick run on a CPU.
RESOLUTION_FIRST = {"MeticulousSegment", "MeticulousCoarsePredict", "MeticulousSegmentHighRes", "MeticulousVideoMatte"}
# Workflows whose output is a transparent PNG.
RGBA_OUTPUTS = {"photo_to_transparent_png", "highres_4k_cutout"}
START_TIMEOUT = 300
RUN_TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(url: str, payload: dict | None = None):
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:  # a rejected prompt: ComfyUI explains why in the body
        pytest.fail(f"{url} answered HTTP {error.code}: {error.read().decode()[-3000:]}")


def _photo(path: Path) -> None:
    """A 160x120 picture: a warm disc with a ragged edge on a cool gradient."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, 120), torch.linspace(-1, 1, 160), indexing="ij")
    angle = torch.atan2(y, x)
    disc = ((x ** 2 + y ** 2).sqrt() < 0.55 + 0.05 * torch.sin(12 * angle)).float()[..., None]
    back = torch.stack([0.2 + 0.1 * x, 0.4 + 0.2 * y, 0.8 - 0.1 * x], -1)
    front = torch.stack([0.9 + 0.0 * x, 0.6 + 0.1 * y, 0.3 + 0.0 * x], -1)
    pixels = (disc * front + (1 - disc) * back).clamp(0, 1)
    Image.fromarray((pixels * 255).round().byte().numpy()).save(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running ComfyUI with the pack installed; yields ``(url, base folder)``."""
    comfyui = Path(COMFYUI_DIR)
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    if "--base-directory" not in subprocess.run([python, str(comfyui / "main.py"), "--help"], cwd=comfyui,
                                                capture_output=True, text=True, timeout=120).stdout:
        pytest.fail(f"the ComfyUI in {comfyui} has no --base-directory option; use a newer ComfyUI")
    base = tmp_path_factory.mktemp("comfyui-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    (base / "models" / "meticulous").mkdir(parents=True)
    write_test_weights(base / "models" / "meticulous" / WEIGHTS)
    (base / "input").mkdir()
    _photo(base / "input" / "example.png")
    port = _free_port()
    log = (base / "comfyui.log").open("w")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    process = subprocess.Popen(
        [python, str(comfyui / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
         "--base-directory", str(base), "--disable-auto-launch"],
        cwd=comfyui, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    try:
        while True:
            if process.poll() is not None:
                log_tail = (base / "comfyui.log").read_text()[-4000:]
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{log_tail}")
            try:
                _request(f"{url}/system_stats")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer in {START_TIMEOUT} s")
                time.sleep(1)
        yield url, base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def object_info(server):
    url, _ = server
    return _request(f"{url}/object_info")


def test_pack_registers_with_the_schemas_the_stand_in_shows(server, object_info, comfyui):
    """What the real ComfyUI lists matches the stand-in's view of ``define_schema``."""
    _, base = server
    log = (base / "comfyui.log").read_text()
    assert not [line for line in log.splitlines() if "IMPORT FAILED" in line and PACK_FOLDER in line], log[-4000:]
    ours = {name: info for name, info in object_info.items() if name.startswith("Meticulous")}
    expected = {name: node_info(node) for name, node in comfyui.nodes.items()}
    assert set(ours) == set(expected)
    for name, info in ours.items():
        assert info["python_module"].endswith(PACK_FOLDER)
        assert info["output"] == expected[name]["output"]
        assert info["input_order"] == expected[name]["input_order"]
        for section, inputs in expected[name]["input"].items():
            assert {key: spec[0] for key, spec in info["input"][section].items()} == \
                   {key: spec[0] for key, spec in inputs.items()}
    assert WEIGHTS in ours["MeticulousLoadModel"]["input"]["required"]["model"][1]["options"]


def _checkpoint_free_workflows() -> list:
    """Every workflow without a checkpoint; those with VideoHelperSuite nodes skipped, as only
    this pack is in the test's custom_nodes (and no input video is made)."""
    vhs = pytest.mark.skip(reason="needs ComfyUI-VideoHelperSuite, which this ComfyUI does not load; "
                                  "test_workflows.py validates it and runs it on the stand-in")
    return [pytest.param(path, id=path.stem, marks=[vhs] if any(kind.startswith("VHS_") for kind in kinds) else [])
            for path in workflow_files() if not (kinds := node_types(path)) & CHECKPOINT_NODES]


@pytest.mark.parametrize("path", _checkpoint_free_workflows())
def test_checkpoint_free_workflow_runs(server, object_info, path):
    url, base = server
    workflow = json.loads(path.read_text())
    for node in workflow["nodes"]:
        if node["type"] == "MeticulousLoadModel":
            node["widgets_values"][0] = WEIGHTS  # the test weights instead of a download
        if node["type"] in RESOLUTION_FIRST:
            node["widgets_values"][0] = 128  # small model input: quick on a CPU
    assert validate(workflow, object_info) == []
    queued = _request(f"{url}/prompt", {"prompt": to_api(workflow, object_info), "client_id": "meticulous-e2e"})
    prompt_id = queued["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT
    while not (history := _request(f"{url}/history/{prompt_id}")).get(prompt_id):
        assert time.monotonic() < deadline, f"{path.name} did not finish in {RUN_TIMEOUT} s"
        time.sleep(1)
    record = history[prompt_id]
    assert record["status"]["status_str"] == "success", json.dumps(record["status"])[-3000:]
    saved = [image for output in record["outputs"].values() for image in output.get("images", [])
             if image.get("type") == "output"]
    assert saved
    for image in saved:
        with Image.open(base / "output" / image["subfolder"] / image["filename"]) as png:
            assert png.size == (160, 120)
            if path.stem in RGBA_OUTPUTS:
                assert png.mode == "RGBA"
                alpha = png.getchannel("A")
                assert alpha.getextrema()[0] < alpha.getextrema()[1]
