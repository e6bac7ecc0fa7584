"""The pack in a real ComfyUI server: v0.3.64 (the oldest version supported) with VideoHelperSuite.

One server per module, started on 127.0.0.1 from the host that ``tests/comfy_host.py`` caches
(install it with ``python tests/comfy_host.py``). This checkout is symlinked under a folder name
that is not a Python identifier into a custom-nodes folder that only an
``extra_model_paths.yaml`` names; base, input and output folders are temporary, the user
database is in memory, the Hugging Face Hub is offline. Stand-in inputs: deterministic
BiRefNet PVT-v2-b0 and BASNet weights, stand-in SD 1.5 checkpoints built from ComfyUI's own
classes with random weights (``tests/host/sd15_standin.py``), a photo drawn here and short
clips made by the ffmpeg that VideoHelperSuite uses.

Without the host the tests skip, saying how to install it; with ``CI=true`` they fail.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from comfyui_meticulous.weights import catalogue, get_entry

import comfy_host
from standin import comfyui, write_test_weights  # noqa: F401  (comfyui is a fixture)
from workflow_format import inputs_in_order, node_info, to_api, validate, workflow_files

IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[1]
SD15_STANDIN = Path(__file__).resolve().parent / "host" / "sd15_standin.py"
BUFFER_OWNERS = Path(__file__).resolve().parent / "host" / "buffer_owners.py"
# Not a Python identifier, as folders cloned or unzipped into custom_nodes often are not.
PACK_FOLDER = "Meticulous.pack-e2e"
WEIGHTS = "birefnet_b0_e2e.safetensors"
YAML_WEIGHTS = "birefnet_b0_from_yaml.safetensors"
PHOTO_SIZE = (160, 120)
CLIP_SIZE, CLIP_FPS, CLIP_SECONDS = (96, 72), 8, 1
LONG_CLIP_SECONDS = 60
# Our nodes whose first widget is the model input's side: small, for a quick run on a CPU.
RESOLUTION_FIRST = {"MeticulousSegment", "MeticulousCoarsePredict", "MeticulousSegmentHighRes", "MeticulousVideoMatte"}
# The checkpoint files the diffusion workflows name, and whether each is an inpainting model.
CHECKPOINTS = {"v1-5-pruned-emaonly-fp16.safetensors": False, "512-inpainting-ema.safetensors": True}
START_TIMEOUT = 300
RUN_TIMEOUT = 600


def _host() -> comfy_host.Host:
    found = comfy_host.installed()
    if found is None:
        missing = comfy_host.missing_archives()
        why = (f"ComfyUI host archives missing ({', '.join(map(str, missing))})" if missing else
               f"no ComfyUI {comfy_host.COMFYUI_VERSION} host installed in {comfy_host.host().root}; "
               f"install it with `python tests/comfy_host.py`")
        if IN_CI:
            pytest.fail(f"CI=true and {why}", pytrace=False)
        pytest.skip(why)
    return found


@dataclass
class Server:
    url: str
    base: Path
    log: Path
    ffmpeg: str

    def request(self, path: str, payload: dict | None = None, method: str | None = None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
        except urllib.error.HTTPError as error:  # a rejected prompt: ComfyUI explains why in the body
            pytest.fail(f"{path} answered HTTP {error.code}: {error.read().decode()[-3000:]}")
        return json.loads(body) if body else None

    def queue(self, prompt: dict) -> str:
        return self.request("/prompt", {"prompt": prompt, "client_id": "meticulous-e2e"})["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while not (history := self.request(f"/history/{prompt_id}")).get(prompt_id):
            assert time.monotonic() < deadline, f"prompt {prompt_id} did not finish in {timeout} s"
            time.sleep(0.25)
        return history[prompt_id]

    def run(self, prompt: dict) -> dict:
        record = self.wait(self.queue(prompt))
        assert record["status"]["status_str"] == "success", json.dumps(record["status"])[-3000:]
        return record

    def probe(self, path: Path) -> list[str]:
        """The stream lines ffmpeg prints for a media file (what ffprobe would report)."""
        done = subprocess.run([self.ffmpeg, "-hide_banner", "-i", str(path)], capture_output=True, text=True)
        return [line.strip() for line in done.stderr.splitlines() if line.strip().startswith("Stream #")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _photo(path: Path, size: tuple[int, int], seed: int) -> None:
    """A warm disc with a ragged edge on a cool gradient."""
    width, height = size
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    disc = ((x ** 2 + y ** 2).sqrt() < 0.55 + 0.05 * torch.sin(12 * torch.atan2(y, x) + seed)).float()[..., None]
    back = torch.stack([0.2 + 0.1 * x, 0.4 + 0.2 * y, 0.8 - 0.1 * x], -1)
    front = torch.stack([0.9 + 0.0 * x, 0.6 + 0.1 * y, 0.3 + 0.0 * x], -1)
    pixels = (disc * front + (1 - disc) * back).clamp(0, 1)
    Image.fromarray((pixels * 255).round().byte().numpy()).save(path)


def _clip(ffmpeg: str, path: Path, seconds: int) -> None:
    """A moving test pattern with a tone: h264 + AAC at CLIP_SIZE and CLIP_FPS."""
    width, height = CLIP_SIZE
    subprocess.run([ffmpeg, "-y", "-v", "error",
                    "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={CLIP_FPS}:duration={seconds}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={seconds}",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True)


def _sd15_checkpoint(host: comfy_host.Host, inpaint: bool) -> Path:
    """The stand-in SD 1.5 checkpoint, made once per host and script version (~500 MB)."""
    script = SD15_STANDIN.read_bytes()
    tag = f"{'inpaint' if inpaint else 'base'}-{hashlib.sha256(script).hexdigest()[:12]}"
    path = host.root / "standins" / f"sd15-{tag}.safetensors"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        partial = path.with_suffix(".partial")
        subprocess.run([str(host.python), str(SD15_STANDIN), str(partial), *(["--inpaint"] if inpaint else [])],
                       cwd=host.comfyui, env=dict(os.environ, PYTHONPATH=str(host.comfyui)), check=True, timeout=600)
        partial.rename(path)
    return path


def _deterministic_weights(det_weights, reference_dir: Path, keys: str, path: Path) -> Path:
    spec = det_weights.load_spec(reference_dir / keys)
    save_file({key: value.contiguous() for key, value in det_weights.deterministic_state_dict(spec).items()},
              str(path))
    return path


@pytest.fixture(scope="module")
def host() -> comfy_host.Host:
    return _host()


@pytest.fixture(scope="module")
def server(host, tmp_path_factory, det_weights, reference_dir):
    """A running ComfyUI v0.3.64 with VideoHelperSuite and this pack."""
    tmp = tmp_path_factory.mktemp("comfyui-e2e")
    base, nodes, shared = tmp / "base", tmp / "custom_nodes", tmp / "nas" / "meticulous"
    # base/custom_nodes stays empty: the pack is found through the yaml file only.
    for folder in (base / "models" / "meticulous", base / "models" / "checkpoints", base / "input",
                   base / "custom_nodes", nodes, shared):
        folder.mkdir(parents=True)
    (nodes / PACK_FOLDER).symlink_to(REPO, target_is_directory=True)
    (nodes / host.vhs.name).symlink_to(host.vhs, target_is_directory=True)
    ours = base / "models" / "meticulous"
    write_test_weights(ours / WEIGHTS)
    shutil.copy(ours / WEIGHTS, shared / YAML_WEIGHTS)
    _deterministic_weights(det_weights, reference_dir, "basnet/keys.tsv", ours / get_entry("basnet").local_filename)
    for name, inpaint in CHECKPOINTS.items():
        (base / "models" / "checkpoints" / name).symlink_to(_sd15_checkpoint(host, inpaint))
    ffmpeg = subprocess.run([str(host.python), "-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"],
                            check=True, capture_output=True, text=True).stdout.strip()
    _photo(base / "input" / "example.png", PHOTO_SIZE, seed=0)
    _photo(base / "input" / "background.png", (200, 150), seed=3)
    _clip(ffmpeg, base / "input" / "example.mp4", CLIP_SECONDS)
    _clip(ffmpeg, base / "input" / "long.mp4", LONG_CLIP_SECONDS)
    config = tmp / "extra_model_paths.yaml"
    config.write_text(f"meticulous_e2e:\n  custom_nodes: {nodes}\n  meticulous: {shared}\n")
    log = tmp / "comfyui.log"
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf"), XDG_CACHE_HOME=str(tmp / "cache"))
    command = [str(host.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--base-directory", str(base), "--extra-model-paths-config", str(config),
               "--database-url", "sqlite:///:memory:", "--disable-auto-launch"]
    started = time.monotonic()
    with log.open("w") as sink:
        process = subprocess.Popen(command, cwd=host.comfyui, stdout=sink, stderr=subprocess.STDOUT, env=env)
    running = Server(f"http://127.0.0.1:{port}", base, log, ffmpeg)
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(running.url + "/system_stats", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() - started < START_TIMEOUT, f"ComfyUI did not answer in {START_TIMEOUT} s"
                time.sleep(0.5)
        print(f"ComfyUI {comfy_host.COMFYUI_VERSION} answered after {time.monotonic() - started:.1f} s")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def object_info(server):
    return server.request("/object_info")


def _options(info: dict, name: str) -> list:
    return {key: options for key, _, options, _ in inputs_in_order(info)}[name]["options"]


# --- the pack loads -------------------------------------------------------------------------

def test_the_pack_loads_without_errors_or_warnings(server, object_info):
    log = server.log.read_text()
    assert "IMPORT FAILED" not in "\n".join(line for line in log.splitlines() if PACK_FOLDER in line), log[-4000:]
    # The only line that may name the pack is the import-time report.
    about_us = [line for line in log.splitlines()
                if PACK_FOLDER in line or "comfyui_meticulous" in line or "Meticulous" in line]
    assert all(re.fullmatch(rf"\s*[\d.]+ seconds: .*/{re.escape(PACK_FOLDER)}", line) for line in about_us), about_us
    assert any(name.startswith("VHS_") for name in object_info), "VideoHelperSuite did not load"


def test_every_node_is_listed_with_the_schema_we_declare(object_info, comfyui):
    ours = {name: info for name, info in object_info.items() if name.startswith("Meticulous")}
    expected = {name: node_info(node) for name, node in comfyui.nodes.items()}
    assert set(ours) == set(expected) and len(ours) == 18
    for name, info in ours.items():
        assert info["python_module"] == f"custom_nodes.{PACK_FOLDER}"
        assert info["category"] == expected[name]["category"]
        assert info["display_name"] == expected[name]["display_name"]
        assert info["output"] == expected[name]["output"]
        assert info["output_name"] == expected[name]["output_name"]
        assert info["input_order"] == expected[name]["input_order"]
        for section, inputs in expected[name]["input"].items():
            assert {key: spec[0] for key, spec in info["input"][section].items()} == \
                   {key: spec[0] for key, spec in inputs.items()}, (name, section)


def test_the_model_combo_lists_the_catalogue_and_says_what_is_installed(object_info):
    loader = object_info["MeticulousLoadModel"]
    options = _options(loader, "model")
    assert options[:len(catalogue())] == list(catalogue()) and "basnet" in options
    assert {WEIGHTS, YAML_WEIGHTS} <= set(options)
    assert loader["input"]["required"]["model"][1]["tooltip"].endswith("Installed catalogue models: basnet.")


def test_a_meticulous_folder_from_extra_model_paths_is_searched(server, object_info):
    assert YAML_WEIGHTS in _options(object_info["MeticulousLoadModel"], "model")
    assert YAML_WEIGHTS in server.request("/models/meticulous")
    record = server.run(to_api(_prepared("photo_to_transparent_png", model=YAML_WEIGHTS, prefix="from_yaml"),
                               object_info))
    (image,) = _saved_images(record)
    _assert_png(server, image, PHOTO_SIZE, "RGBA")


# --- every example workflow runs ---------------------------------------------------------------

def _prepared(name: str, model: str = WEIGHTS, prefix: str | None = None, video: str | None = None) -> dict:
    """A workflow file with the test weights, small sizes and few sampling steps."""
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    for node in workflow["nodes"]:
        kind, values = node["type"], node.get("widgets_values")
        if kind == "MeticulousLoadModel":
            values[0] = model  # the test weights instead of a download
        elif kind in RESOLUTION_FIRST:
            values[0] = 64
        elif kind == "EmptyLatentImage":
            values[:2] = [64, 64]
        elif kind == "KSampler":
            values[2] = 2  # steps
        elif kind == "ImageScale":
            # The composite's background must match the clip; the inpainting input stays small.
            values[1:3] = list(CLIP_SIZE) if name.startswith("video") else [128, 96]
        elif kind == "VHS_LoadVideo" and video:
            values["video"] = video
        elif kind == "VHS_BatchManager" and video:
            values["frames_per_batch"] = 10_000  # the whole clip in one run
        if prefix and kind in ("SaveImage", "VHS_VideoCombine"):
            if isinstance(values, dict):
                values["filename_prefix"] = f"{prefix}/{values['filename_prefix']}"
            else:
                values[0] = f"{prefix}/{values[0]}"
    return workflow


def _saved_images(record: dict) -> list[dict]:
    return [image for output in record["outputs"].values() for image in output.get("images", [])
            if image.get("type") == "output"]


def _videos(record: dict) -> list[dict]:
    return [video for output in record["outputs"].values() for video in output.get("gifs", [])]


def _output_path(server: Server, item: dict) -> Path:
    return server.base / "output" / item["subfolder"] / item["filename"]


def _assert_png(server: Server, item: dict, size: tuple[int, int], mode: str) -> None:
    with Image.open(_output_path(server, item)) as png:
        assert (png.format, png.size, png.mode) == ("PNG", size, mode)
        if mode == "RGBA":
            low, high = png.getchannel("A").getextrema()
            assert low < high, "the alpha channel is flat"


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.stem)
def test_every_example_workflow_validates_and_runs(server, object_info, path):
    workflow = _prepared(path.stem)
    assert validate(workflow, object_info) == []
    record = server.run(to_api(workflow, object_info))
    images, videos = _saved_images(record), _videos(record)
    name = path.stem
    if name in ("photo_to_transparent_png", "highres_4k_cutout"):
        (image,) = images
        _assert_png(server, image, PHOTO_SIZE, "RGBA")
    elif name == "edge_tools_on_hair":
        assert len(images) == 6  # six edge treatments
        for image in images:
            _assert_png(server, image, PHOTO_SIZE, "RGB")
    elif name == "inpaint_new_background":
        (image,) = images
        _assert_png(server, image, (128, 96), "RGB")
    elif name == "text_to_image_cutout_harmonise":
        (image,) = images
        _assert_png(server, image, (64, 64), "RGB")
    elif name == "video_matte_alpha":
        assert len(images) == CLIP_FPS * CLIP_SECONDS
        for image in images:
            _assert_png(server, image, CLIP_SIZE, "RGBA")
        (video,) = videos
        (stream,) = server.probe(_output_path(server, video))
        assert "Video: prores" in stream and "(4444)" in stream and "yuva444p12le" in stream, stream
        assert "96x72" in stream
    elif name == "video_composite_background":
        (video,) = videos
        streams = server.probe(_output_path(server, video))
        assert len(streams) == 2, streams
        assert "Video: h264" in streams[0] and "96x72" in streams[0], streams
        assert "Audio:" in streams[1], streams
    else:
        pytest.fail(f"no expectations written for {name}")


# --- the server's controls ---------------------------------------------------------------------

def test_interrupt_stops_video_matte_within_a_chunk_and_the_next_prompt_runs(server, object_info):
    prompt = to_api(_prepared("video_matte_alpha", video="long.mp4", prefix="interrupted"), object_info)
    prompt_id = server.queue(prompt)
    deadline = time.monotonic() + 120
    while not server.request("/queue")["queue_running"]:
        assert time.monotonic() < deadline, "the prompt never started"
        time.sleep(0.1)
    # Loading 480 small frames and the model takes a second or two; Video Matte then runs for
    # a minute or more, one frame per chunk on the CPU.
    time.sleep(5)
    interrupted = time.monotonic()
    server.request("/interrupt", {})
    record = server.wait(prompt_id, timeout=120)
    stopped_after = time.monotonic() - interrupted
    status = record["status"]
    assert status["status_str"] == "error", status
    events = {event: details for event, details in status["messages"]}
    assert events["execution_interrupted"]["node_type"] == "MeticulousVideoMatte", events
    # One frame takes well under a second on an idle CPU; the margin is for a busy machine.
    assert stopped_after < 30, f"Video Matte went on for {stopped_after:.1f} s after the interrupt"
    assert not _videos(record)
    record = server.run(to_api(_prepared("photo_to_transparent_png", prefix="after_interrupt"), object_info))
    (image,) = _saved_images(record)
    _assert_png(server, image, PHOTO_SIZE, "RGBA")


def test_free_unloads_the_model_and_a_rerun_works(server, object_info):
    prompt = to_api(_prepared("photo_to_transparent_png", prefix="before_free"), object_info)
    first = _saved_images(server.run(prompt))
    server.request("/free", {"unload_models": True, "free_memory": True})
    prompt = to_api(_prepared("photo_to_transparent_png", prefix="after_free"), object_info)
    (second,) = _saved_images(server.run(prompt))
    with Image.open(_output_path(server, first[0])) as before, Image.open(_output_path(server, second)) as after:
        assert before.tobytes() == after.tobytes()  # the reloaded model gives the same cut-out


def test_basnet_from_the_model_combo_loads_and_segments(server, object_info):
    prompt = to_api(_prepared("photo_to_transparent_png", model="basnet", prefix="basnet"), object_info)
    segment = next(node for node in prompt.values() if node["class_type"] == "MeticulousSegment")
    segment["inputs"]["resolution"] = 0  # BASNet's native 256²
    (image,) = _saved_images(server.run(prompt))
    _assert_png(server, image, PHOTO_SIZE, "RGBA")


# --- memory management ---------------------------------------------------------------------------

def test_every_tensor_moves_with_the_model_patcher(host, tmp_path, det_weights, reference_dir):
    """ComfyUI's ModelPatcher moves a model module by module when it loads or unloads it partly,
    and skips modules that hold parameters beside children with parameters. In our networks
    only Swin attention is such a module (its bias table and index beside the qkv and proj
    layers), so the pack always asks for full loads (``test_nodes.py`` checks the request),
    which move the whole network: checked here against the real ModelPatcher for a PVT, a
    Swin and the BASNet network."""
    files = [_deterministic_weights(det_weights, reference_dir, keys, tmp_path / f"{name}.safetensors")
             for name, keys in (("pvt_b0", "birefnet/keys_pvt_v2_b0.tsv"), ("swin_t", "birefnet/keys_swin_v1_t.tsv"),
                                ("basnet", "basnet/keys.tsv"))]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "comfyui_meticulous").symlink_to(REPO, target_is_directory=True)
    done = subprocess.run([str(host.python), str(BUFFER_OWNERS), *map(str, files)], cwd=host.comfyui,
                          env=dict(os.environ, PYTHONPATH=f"{tmp_path / 'pkg'}{os.pathsep}{host.comfyui}"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    pvt, swin, basnet = (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    assert pvt["stranded"] == [] and basnet["stranded"] == []
    assert swin["stranded"] and all(re.fullmatch(r"bb\.layers\.\d+\.blocks\.\d+\.attn\."
                                                 r"relative_position_(bias_table|index)", name)
                                    for name in swin["stranded"]), swin["stranded"]
