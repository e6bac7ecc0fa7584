"""The ``batch`` command: local and Ray engines, resuming, failures, a killed worker, ``--frames``.

The Ray tests run a local Ray with 2 CPUs. Without Ray installed they are skipped, except under
``CI=true``, where a missing Ray is a failure: CI installs the ``[test]`` extra, which has it.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from comfyui_meticulous.batch.frames import Stitcher, chunk_bounds, chunk_logits, probabilities
from comfyui_meticulous.batch.job import REPORT_NAME
from comfyui_meticulous.cli import main
from comfyui_meticulous.inference import Prediction, resize_images
from comfyui_meticulous.models import load_model
from comfyui_meticulous.video import matte_video, model_runner

STANDIN = Path(__file__).resolve().parent / "comfy_standin"
MODEL = ["--resolution", "64"]


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("ray is not installed, but CI must run the Ray tests: pip install -e '.[test]'",
                        pytrace=False)
        pytest.skip("ray is not installed (pip install -e '.[distributed]')")
    return ray


@pytest.fixture(scope="module")
def local_ray():
    ray = _require_ray()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def weights(reference_dir, det_weights, tmp_path_factory):
    """Deterministic BiRefNet (PVT-v2-b0) weights: a real model file, small enough for the CPU."""
    path = tmp_path_factory.mktemp("weights") / "pvt.safetensors"
    spec = det_weights.load_spec(reference_dir / "birefnet" / "keys_pvt_v2_b0.tsv")
    save_file({key: value.contiguous() for key, value in det_weights.deterministic_state_dict(spec).items()},
              str(path))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Seven small images of two sizes and one file that is not an image."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for index in range(7):
        shape = (40, 52, 3) if index % 2 else (36, 30, 3)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(folder / f"p{index}.png")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    return folder


def _report(output: Path) -> dict:
    return json.loads((output / REPORT_NAME).read_text())


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: _pixels(path) for path in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def local_run(photos, weights, tmp_path_factory):
    output = tmp_path_factory.mktemp("local")
    status = main(["batch", str(photos), "-o", str(output), "--weights", str(weights), *MODEL])
    return status, output


@pytest.fixture(scope="module")
def ray_run(local_ray, photos, weights, tmp_path_factory):
    output = tmp_path_factory.mktemp("ray")
    status = main(["batch", str(photos), "-o", str(output), "--weights", str(weights), *MODEL, "--engine", "ray"])
    return status, output


def test_core_package_and_nodes_never_import_ray():
    code = f"""
import importlib, pkgutil, sys
sys.path.insert(0, {str(STANDIN)!r})
import comfyui_meticulous, comfyui_meticulous.cli, comfyui_meticulous.nodes
import comfyui_meticulous.batch.cli, comfyui_meticulous.batch.job, comfyui_meticulous.batch.local
import comfyui_meticulous.batch.frames
for module in pkgutil.iter_modules(comfyui_meticulous.nodes.__path__):
    importlib.import_module("comfyui_meticulous.nodes." + module.name)
comfyui_meticulous.cli.build_parser()
loaded = sorted(name for name in sys.modules if name == "ray" or name.startswith("ray."))
assert not loaded, loaded
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_local_engine_writes_every_image_and_reports_the_corrupt_one(local_run, photos):
    status, output = local_run
    assert status == 1  # an input failed
    report = _report(output)
    assert (report["engine"], report["inputs"], report["done"], report["skipped"]) == ("local", 8, 7, 0)
    assert [item["input"] for item in report["failed"]] == [str(photos / "corrupt.jpg")]
    assert "not an image" in report["failed"][0]["error"]
    for index in range(7):
        rgba, mask = _pixels(output / f"p{index}.png"), _pixels(output / f"p{index}_mask.png")
        assert np.array_equal(rgba[..., 3], mask)
        assert np.array_equal(rgba[..., :3], _pixels(photos / f"p{index}.png"))
    assert not list(output.glob(".*"))  # no temporary files left behind


def test_batch_writes_what_cut_writes(local_run, photos, weights, tmp_path):
    _, output = local_run
    sources = [photos / "p0.png", photos / "p1.png"]
    assert main(["cut", *map(str, sources), "-o", str(tmp_path), "--weights", str(weights), *MODEL]) == 0
    for name, pixels in _outputs(tmp_path).items():
        assert np.array_equal(pixels, _pixels(output / name)), name


def test_ray_engine_output_is_pixel_identical_to_local(local_run, ray_run):
    (_, local), (status, remote) = local_run, ray_run
    assert status == 1
    report = _report(remote)
    assert (report["engine"], report["done"], report["skipped"], len(report["failed"])) == ("ray", 7, 0, 1)
    assert "not an image" in report["failed"][0]["error"]
    expected = _outputs(local)
    assert len(expected) == 14
    got = _outputs(remote)
    assert got.keys() == expected.keys()
    for name, pixels in expected.items():
        assert np.array_equal(got[name], pixels), name


def test_rerun_processes_nothing_new(ray_run, photos, weights):
    _, output = ray_run
    written = {path.name: path.stat().st_mtime_ns for path in output.glob("*.png")}
    status = main(["batch", str(photos), "-o", str(output), "--weights", str(weights), *MODEL, "--engine", "ray"])
    report = _report(output)
    # The corrupt input has no outputs, so it is tried again, and fails again.
    assert status == 1 and (report["done"], report["skipped"], len(report["failed"])) == (0, 7, 1)
    assert {path.name: path.stat().st_mtime_ns for path in output.glob("*.png")} == written


def test_list_file_with_relative_paths_and_uris_goes_through_rays_readers(local_ray, local_run, photos, weights,
                                                                         tmp_path):
    listing = tmp_path / "inputs.txt"
    relative = os.path.relpath(photos / "p1.png", tmp_path)
    listing.write_text(f"# two inputs\n{relative}\n\n{(photos / 'p2.png').as_uri()}\n")
    output = tmp_path / "out"
    assert main(["batch", str(listing), "-o", str(output), "--weights", str(weights), *MODEL,
                 "--engine", "ray"]) == 0
    assert _report(output)["done"] == 2
    got = _outputs(output)
    assert sorted(got) == ["p1.png", "p1_mask.png", "p2.png", "p2_mask.png"]
    for name, pixels in got.items():
        assert np.array_equal(pixels, _pixels(local_run[1] / name)), name


def test_uri_folder_is_listed_through_pyarrow_and_local_engine_refuses_uris(photos, weights, tmp_path):
    pytest.importorskip("pyarrow")
    from comfyui_meticulous.batch.job import list_inputs

    listed = list_inputs(photos.as_uri())
    assert listed == [(photos / name).as_uri() for name in ["corrupt.jpg", *(f"p{i}.png" for i in range(7))]]
    listing = tmp_path / "inputs.txt"
    listing.write_text(listed[1] + "\n")
    result = subprocess.run([sys.executable, "-m", "comfyui_meticulous", "batch", str(listing), "-o",
                             str(tmp_path / "out"), "--weights", str(weights)], capture_output=True, text=True)
    assert result.returncode == 2 and "--engine ray" in result.stderr and "Traceback" not in result.stderr


def _actor_processes(busy: bool = False) -> list[int]:
    """Process ids of Ray's model actors; ``busy``: only those running a batch right now (Ray
    names an actor's process after its class, plus ``.submit`` while a batch is running)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if b"MatteActor" in command and (not busy or b".submit" in command):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the actor's process through /proc")
def test_killed_worker_loses_only_its_items_which_are_retried(local_ray, photos, weights, local_run, tmp_path):
    output = tmp_path / "out"
    killed, replacements = [], set()
    running = threading.Event()

    def kill_a_busy_actor_then_watch_for_its_replacement():
        deadline = time.monotonic() + 300
        while running.is_set() and time.monotonic() < deadline:
            busy = _actor_processes(busy=True)
            if busy and not killed:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            elif killed:
                replacements.update(pid for pid in busy if pid != killed[0])
            time.sleep(0.005)

    running.set()
    killer = threading.Thread(target=kill_a_busy_actor_then_watch_for_its_replacement, daemon=True)
    killer.start()
    try:
        status = main(["batch", str(photos), "-o", str(output), "--weights", str(weights), *MODEL,
                       "--engine", "ray", "--workers", "1"])
    finally:
        running.clear()
        killer.join(timeout=10)
    assert killed, "the model actor was never seen running a batch"
    assert killed[0] not in _actor_processes()
    assert replacements, "no restarted actor ran the lost batch"
    report = _report(output)
    assert status == 1 and report["done"] == 7 and len(report["failed"]) == 1
    expected, got = _outputs(local_run[1]), _outputs(output)
    assert got.keys() == expected.keys()
    for name, pixels in expected.items():
        assert np.array_equal(got[name], pixels), name


# --- --frames ----------------------------------------------------------------------------

def _clip(count: int = 5) -> torch.Tensor:
    """A still noisy scene with a square that appears and moves: the gate opens and closes."""
    generator = torch.Generator().manual_seed(0)
    scene = torch.rand(1, 44, 52, 3, generator=generator)
    frames = (scene + 0.03 * torch.rand(count, 44, 52, 3, generator=generator)).clamp(0, 1)
    for index in range(2, count):
        frames[index, 8:20, 4 + 6 * index:16 + 6 * index] = 0.95
    return frames


def _cheap_run(frames: torch.Tensor) -> Prediction:
    """A stand-in segmenter: logits from brightness at 24×28, so a long clip costs nothing."""
    small = resize_images(frames, (24, 28)).mean(dim=1, keepdim=True)
    return Prediction(12.0 * (small - 0.5), tuple(frames.shape[1:3]))


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_chunks_stitched_equal_one_matte_video_run(strength):
    frames = _clip(40)
    whole = matte_video(frames, _cheap_run, device="cpu", batch_size=1, temporal_smoothing=strength).masks
    for chunk, batch in ((7, 1), (16, 1), (40, 1)):
        stitcher, parts = Stitcher(), []
        for start, stop in chunk_bounds(len(frames), chunk):
            logits = chunk_logits(_cheap_run, frames[max(0, start - 1):stop], start, strength, batch,
                                  torch.device("cpu"))
            parts.append(probabilities(stitcher.smooth(logits), tuple(frames.shape[1:3])))
        assert (torch.cat(parts) - whole).abs().max().item() <= 1e-6
    # Smoothing changed the result, so the equality is about the carried state, not a no-op.
    unsmoothed = matte_video(frames, _cheap_run, device="cpu", batch_size=1).masks
    assert (whole - unsmoothed).abs().max().item() > 1e-3


@pytest.fixture(scope="module")
def clip(weights, tmp_path_factory):
    """The clip as 8-bit PNG frames, and the mask PNGs one ``matte_video`` run makes of them."""
    folder = tmp_path_factory.mktemp("clip")
    pixels = (_clip() * 255).round().to(torch.uint8).numpy()
    for index, frame in enumerate(pixels):
        Image.fromarray(frame).save(folder / f"frame_{index:04d}.png")
    frames = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    masks = matte_video(frames, model_runner(load_model(weights), resolution=64), device="cpu",
                        batch_size=1, temporal_smoothing=0.5).masks
    quantised = (masks.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return folder, {f"frame_{index:04d}_mask.png": mask for index, mask in enumerate(quantised)}


def test_frames_local_match_matte_video_and_resume_from_the_saved_state(clip, weights, tmp_path):
    folder, expected = clip
    output = tmp_path / "out"
    command = ["batch", str(folder), "-o", str(output), "--weights", str(weights), *MODEL,
               "--frames", "--chunk-frames", "2", "--temporal-smoothing", "0.5"]
    assert main(command) == 0
    written = _outputs(output)
    for name, mask in expected.items():
        assert np.array_equal(written[name], mask), name
    # Lose the middle chunk's outputs: the rerun starts there, from the state saved before it.
    (output / "frame_0002_mask.png").unlink()
    assert main(command) == 0
    report = _report(output)
    assert (report["done"], report["skipped"]) == (3, 2)
    assert _outputs(output).keys() == written.keys()
    for name, pixels in _outputs(output).items():
        assert np.array_equal(pixels, written[name]), name


def test_frames_on_ray_match_matte_video(local_ray, clip, weights, tmp_path):
    folder, expected = clip
    output = tmp_path / "out"
    assert main(["batch", str(folder), "-o", str(output), "--weights", str(weights), *MODEL,
                 "--frames", "--chunk-frames", "2", "--temporal-smoothing", "0.5", "--engine", "ray"]) == 0
    written = _outputs(output)
    for name, mask in expected.items():
        assert np.array_equal(written[name], mask), name
    assert _report(output)["done"] == 5
