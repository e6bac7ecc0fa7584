"""The `cut` command end to end, on a small deterministic model: outputs, naming, per-file
failures, one-line errors, concurrent runs and interrupts."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from comfyui_meticulous.cli import main

RNG = np.random.default_rng(0)
# Tiny tensors: extra torch threads only add synchronisation (and slow busy machines down).
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def weights(reference_dir, det_weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "pvt.safetensors"
    spec = det_weights.load_spec(reference_dir / "birefnet" / "keys_pvt_v2_b0.tsv")
    save_file(det_weights.deterministic_state_dict(spec), str(path))
    return path


def _cut(*args, weights=None):
    extra = ["--weights", str(weights), "--resolution", "64"] if weights else []
    return main(["cut", *map(str, args), *extra])


def _subprocess(*args, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "comfyui_meticulous", "cut", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _write_images(folder):
    folder.mkdir()
    Image.fromarray(RNG.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(RNG.integers(0, 255, (40, 30, 4), dtype=np.uint8), mode="RGBA").save(folder / "b.png")
    (folder / "notes.txt").write_text("not an image")


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_cut_writes_rgba_and_mask_per_image(weights, tmp_path, capsys):
    _write_images(tmp_path / "in")
    out = tmp_path / "out"
    before = _digests(tmp_path / "in")
    assert _cut(tmp_path / "in", "-o", out, weights=weights) == 0
    for stem, size in (("a", (70, 50)), ("b", (30, 40))):
        rgba, mask = Image.open(out / f"{stem}.png"), Image.open(out / f"{stem}_mask.png")
        assert rgba.mode == "RGBA" and mask.mode == "L" and rgba.size == mask.size == size
        # Straight alpha: the mask is the alpha channel, colours are not multiplied by it.
        assert np.array_equal(np.asarray(rgba)[..., 3], np.asarray(mask))
    original = np.asarray(Image.open(tmp_path / "in" / "a.jpg").convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(out / "a.png"))[..., :3], original)
    err = capsys.readouterr().err
    assert "[2/2]" in err and "2 of 2 images done" in err
    assert _digests(tmp_path / "in") == before


def test_inputs_are_never_modified_or_overwritten(weights, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(RNG.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "x.png")
    Image.fromarray(RNG.integers(0, 255, (20, 24), dtype=np.uint8)).save(folder / "x_mask.png")
    before = _digests(folder)
    assert _cut(folder, "-o", folder, weights=weights) == 2
    assert _error_lines(capsys.readouterr().err)[0].startswith("error: output folder")
    assert _digests(folder) == before
    assert main(["cut", str(folder), "-o", str(folder), "--weights", str(weights), "--resolution", "64",
                 "--allow-input-folder"]) == 0
    after = _digests(folder)
    assert {name: after[name] for name in before} == before
    assert set(after) - set(before) == {"x_png.png", "x_png_mask.png", "x_mask_png.png", "x_mask_png_mask.png"}


def test_same_stem_gets_two_outputs_and_existing_ones_need_overwrite(weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(RNG.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / "a.jpg")
    Image.fromarray(RNG.integers(0, 255, (16, 12, 3), dtype=np.uint8)).save(folder / "a.png")
    out = tmp_path / "out"
    assert _cut(folder, "-o", out, weights=weights) == 0
    assert Image.open(out / "a.png").size == (24, 20) and Image.open(out / "a_png.png").size == (12, 16)
    before = _digests(out)
    capsys.readouterr()
    assert _cut(folder, "-o", out, weights=weights) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "already exist" in lines[0] and "--overwrite" in lines[0]
    assert _digests(out) == before
    assert main(["cut", str(folder), "-o", str(out), "--weights", str(weights), "--resolution", "64",
                 "--overwrite"]) == 0


def test_one_bad_file_does_not_stop_the_batch(weights, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(4):
        Image.fromarray(RNG.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"img{index}.jpg")
    (folder / "img1b.jpg").write_bytes(b"")
    frames = [Image.new("RGB", (8, 8), c) for c in ("red", "blue")]
    frames[0].save(folder / "img2b.png", save_all=True, append_images=frames[1:], format="PNG")
    assert _cut(folder, "-o", tmp_path / "out", weights=weights) == 1
    err = capsys.readouterr().err
    for index in range(4):
        for suffix in ("", "_mask"):
            assert (tmp_path / "out" / f"img{index}{suffix}.png").is_file()
    assert "failed: " in err and "img1b.jpg: an empty file" in err and "2 frames" in err
    assert "4 of 6 images done, 2 failed" in err and "Traceback" not in err


def test_pixels_as_a_viewer_shows_them_reach_the_output(weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = RNG.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(folder / "turned.png", exif=exif)
    grey16 = RNG.integers(0, 65536, (24, 20), dtype=np.uint16)
    Image.fromarray(grey16).save(folder / "deep.tif")
    out = tmp_path / "out"
    assert _cut(folder, "-o", out, weights=weights) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "turned.png"))[..., :3], np.rot90(pixels, k=-1))
    deep = np.asarray(Image.open(out / "deep.png"))[..., 0].astype(int)
    assert np.abs(deep - np.rint(grey16 / 257)).max() <= 1


def test_respect_alpha_never_makes_transparent_pixels_opaque(weights, tmp_path):
    rgba = RNG.integers(0, 255, (24, 32, 4), dtype=np.uint8)
    rgba[:, :16, 3] = 0
    rgba[:, 16:, 3] = 255
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    assert main(["cut", str(tmp_path / "t.png"), "-o", str(tmp_path / "kept"), "--weights", str(weights),
                 "--resolution", "64", "--respect-alpha"]) == 0
    kept = np.asarray(Image.open(tmp_path / "kept" / "t.png"))
    assert kept[:, :16, 3].max() == 0 and np.array_equal(kept[..., :3], rgba[..., :3])
    assert _cut(tmp_path / "t.png", "-o", tmp_path / "flat", weights=weights) == 0
    flat = np.asarray(Image.open(tmp_path / "flat" / "t.png"))
    assert (flat[:, :16, :3] == 255).all()  # flattened onto white, as a viewer shows it


@pytest.fixture
def one_image(tmp_path):
    Image.fromarray(RNG.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    return tmp_path / "in.png"


def _read_only_folder(tmp_path) -> Path:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root ignores permissions: use a read-only system folder
        folder = Path("/sys")
        if not folder.is_dir() or os.access(folder, os.W_OK) and _writable(folder):
            pytest.skip("no read-only folder available to this user")
    return folder


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").touch()
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.mark.parametrize("case", ["output is a file", "read-only output", "cuda", "bogus device", "resolution",
                                  "too large", "max-patches without hires", "missing weights"])
def test_user_errors_are_one_line_before_the_model_loads(case, weights, one_image, tmp_path, capsys, monkeypatch):
    from comfyui_meticulous import models

    def no_load(*args, **kwargs):
        raise AssertionError("the model must not load before the arguments are checked")
    monkeypatch.setattr(models, "load_model", no_load)
    source, out, extra = one_image, tmp_path / "out", []
    if case == "output is a file":
        out = one_image
    elif case == "read-only output":
        out = _read_only_folder(tmp_path)
    elif case == "cuda":
        extra = ["--device", "cuda:99" if torch.cuda.is_available() else "cuda"]
    elif case == "bogus device":
        extra = ["--device", "bogus"]
    elif case == "resolution":
        extra = ["--resolution", "100000"]
    elif case == "too large":
        from test_image_files import _grey_png
        source = _grey_png(tmp_path / "huge.png", 16385, 4)
    elif case == "max-patches without hires":
        extra = ["--max-patches", "3"]
    args = ["cut", str(source), "-o", str(out), *extra]
    args += ["--weights", str(tmp_path / "nothing.safetensors" if case == "missing weights" else weights)]
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and captured.out == "", captured.err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_two_runs_into_one_folder_both_finish(weights, tmp_path):
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        for index in range(3):
            Image.fromarray(RNG.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{name}{index}.png")
    same = tmp_path / "same"
    same.mkdir()
    for index in range(3):
        Image.fromarray(RNG.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(same / f"one{index}.png")
    common = ["--weights", weights, "--resolution", "64", "--overwrite"]
    runs = [_subprocess(tmp_path / "one", "-o", tmp_path / "out", *common),
            _subprocess(tmp_path / "two", "-o", tmp_path / "out", *common),
            _subprocess(same, "-o", tmp_path / "out", *common)]  # the same names as the first run
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], results
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(f"{n}{i}{s}.png" for n in ("one", "two") for i in range(3) for s in ("", "_mask"))
    for name in names:
        Image.open(tmp_path / "out" / name).load()  # every file complete


def _slow_batch(tmp_path, count=40):
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(count):
        Image.fromarray(RNG.integers(0, 255, (600, 800, 3), dtype=np.uint8)).save(folder / f"p{index:02}.png",
                                                                                    compress_level=0)
    return folder


def _wait_for_first_output(out: Path, run, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None:
        if out.is_dir() and any(p.name.endswith("_mask.png") for p in out.iterdir()):
            return
        time.sleep(0.02)
    pytest.fail(f"the run ended or stalled before its first output: {run.communicate()}")


def _check_stopped_cleanly(out: Path):
    names = [p.name for p in out.iterdir()]
    assert not [n for n in names if n.endswith(".partial")], names
    for name in names:
        if not name.endswith("_mask.png"):
            assert name.replace(".png", "_mask.png") in names  # every cut-out has its mask
        Image.open(out / name).load()


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopping_a_run_leaves_no_partial_file(signum, status, weights, tmp_path):
    folder = _slow_batch(tmp_path)
    out = tmp_path / "out"
    run = _subprocess(folder, "-o", out, "--weights", weights, "--resolution", "64")
    _wait_for_first_output(out, run)
    run.send_signal(signum)
    _, err = run.communicate(timeout=120)
    assert run.returncode == status, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err
    _check_stopped_cleanly(out)


def test_bad_weights_are_one_error_line(tmp_path, one_image, capsys):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 100)
    assert main(["cut", str(one_image), "-o", str(tmp_path / "out"), "--weights", str(broken)]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "broken.safetensors" in lines[0]


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


def test_a_failed_write_leaves_the_previous_file_and_no_partial(tmp_path, monkeypatch):
    from comfyui_meticulous.files import images

    target = tmp_path / "cut.png"
    target.write_bytes(b"previous result")

    def crash(self, fp, format=None, **params):
        Path(fp).write_bytes(b"\x89PNG truncated")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        images.write_mask(target, torch.ones(4, 4))
    assert target.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [target]
    monkeypatch.undo()
    images.write_mask(target, torch.ones(4, 4))
    assert np.asarray(Image.open(target)).min() == 255 and list(tmp_path.iterdir()) == [target]
