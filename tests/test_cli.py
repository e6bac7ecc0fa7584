"""The `cut` command end to end, on a small deterministic model."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from comfyui_meticulous.cli import main
from comfyui_meticulous.inference.device import default_model
from comfyui_meticulous.weights import get_entry


@pytest.fixture(scope="module")
def weights(reference_dir, det_weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "pvt.safetensors"
    spec = det_weights.load_spec(reference_dir / "birefnet" / "keys_pvt_v2_b0.tsv")
    save_file(det_weights.deterministic_state_dict(spec), str(path))
    return path


def _write_images(folder):
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (40, 30, 4), dtype=np.uint8), mode="RGBA").save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")


def test_cut_writes_rgba_and_mask_per_image(weights, tmp_path, capsys):
    _write_images(tmp_path / "in")
    out = tmp_path / "out"
    assert main(["cut", str(tmp_path / "in"), "-o", str(out), "--weights", str(weights),
                 "--resolution", "64"]) == 0
    for stem, size in (("a", (70, 50)), ("b", (30, 40))):
        rgba, mask = Image.open(out / f"{stem}.png"), Image.open(out / f"{stem}_mask.png")
        assert rgba.mode == "RGBA" and mask.mode == "L" and rgba.size == mask.size == size
        # Straight alpha: the mask is the alpha channel, colours are not multiplied by it.
        assert np.array_equal(np.asarray(rgba)[..., 3], np.asarray(mask))
    original = np.asarray(Image.open(tmp_path / "in" / "a.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(out / "a.png"))[..., :3], original)
    assert "[2/2]" in capsys.readouterr().err


def test_default_model_is_the_full_birefnet_on_a_gpu_and_the_lite_one_on_the_cpu():
    # Swin-T needs 2-3x less time than Swin-L on the CPU (README, "Which model `cut` uses").
    full, lite = get_entry(default_model(torch.device("cuda"))), get_entry(default_model(torch.device("cpu")))
    assert (full.id, full.backbone) == ("birefnet", "swin_v1_l")
    assert (lite.id, lite.backbone) == ("birefnet-lite", "swin_v1_t")
    assert lite.resolution == full.resolution and lite.task == full.task
    assert get_entry(default_model(torch.device("mps"))) == full


def test_cut_reports_bad_input_without_traceback(weights, tmp_path):
    result = subprocess.run([sys.executable, "-m", "comfyui_meticulous", "cut", str(tmp_path / "missing.jpg"),
                             "-o", str(tmp_path / "out"), "--weights", str(weights)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "input not found" in result.stderr and "Traceback" not in result.stderr
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 100)
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    result = subprocess.run([sys.executable, "-m", "comfyui_meticulous", "cut", str(tmp_path / "in.png"),
                             "-o", str(tmp_path / "out"), "--weights", str(broken)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "broken.safetensors" in result.stderr and "Traceback" not in result.stderr


def test_cut_hires_refines_and_writes_full_size_outputs(weights, tmp_path):
    photo = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (160, 224, 3), dtype=np.uint8)).save(photo)
    out = tmp_path / "out"
    assert main(["cut", str(photo), "-o", str(out), "--weights", str(weights),
                 "--resolution", "64", "--hires", "--max-patches", "2"]) == 0
    mask = np.asarray(Image.open(out / "big_mask.png"))
    assert mask.shape == (160, 224)
    one_shot = tmp_path / "one"
    assert main(["cut", str(photo), "-o", str(one_shot), "--weights", str(weights), "--resolution", "64"]) == 0
    # The refined windows change the mask somewhere; outside the band the coarse result stays.
    assert not np.array_equal(mask, np.asarray(Image.open(one_shot / "big_mask.png")))


def test_outputs_are_renamed_into_place_never_left_half_written(tmp_path, monkeypatch):
    from comfyui_meticulous.inference import files

    target = tmp_path / "cut.png"
    target.write_bytes(b"previous result")

    def crash(self, fp, format=None, **params):
        Path(fp).write_bytes(b"\x89PNG truncated")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        files.save_mask(target, torch.ones(4, 4))
    assert target.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [target]
    monkeypatch.undo()
    files.save_mask(target, torch.ones(4, 4))
    assert np.asarray(Image.open(target)).min() == 255 and list(tmp_path.iterdir()) == [target]
