"""The image reader and writer (files.images), output naming (files.naming), per-file batches
and interrupts: real image files made here from small arrays."""

import os
import signal
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from comfyui_meticulous.checks import MAX_SIDE
from comfyui_meticulous.errors import InputError
from comfyui_meticulous.files.batch import BatchReport, run_each
from comfyui_meticulous.files.images import (find_images, mask_bytes, probe_image, read_image, read_mask,
                                             write_cutout)
from comfyui_meticulous.files.interrupts import Terminated, signals_as_exceptions
from comfyui_meticulous.files.naming import plan_outputs, prepare_folder

RNG = np.random.default_rng(0)


def _rgb(picture) -> np.ndarray:
    return picture.rgb[0].numpy()


# --- every mode and bit depth, as a viewer shows it -----------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_grey_keeps_its_range_and_precision(tmp_path, suffix):
    values = RNG.integers(0, 65536, (6, 9), dtype=np.uint16)
    values[0, 0], values[0, 1] = 0, 65535
    Image.fromarray(values).save(tmp_path / f"g{suffix}")
    picture = read_image(tmp_path / f"g{suffix}")
    assert picture.rgb.shape == (1, 6, 9, 3) and picture.alpha is None
    for channel in range(3):
        np.testing.assert_allclose(_rgb(picture)[..., channel], values / 65535, atol=1e-6)


def test_big_endian_sixteen_bit_tiff(tmp_path):
    values = RNG.integers(0, 65536, (5, 7), dtype=np.uint16)
    Image.frombytes("I;16B", (7, 5), values.astype(">u2").tobytes()).save(tmp_path / "b.tif")
    with Image.open(tmp_path / "b.tif") as image:
        assert image.mode == "I;16B"
    np.testing.assert_allclose(_rgb(read_image(tmp_path / "b.tif"))[..., 1], values / 65535, atol=1e-6)


def test_thirty_two_bit_integer_grey(tmp_path):
    values = RNG.integers(0, 65536, (4, 4)).astype(np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "i.tif")
    np.testing.assert_allclose(_rgb(read_image(tmp_path / "i.tif"))[..., 0], values / 65535, atol=1e-6)


def test_float_tiff_is_read_as_zero_to_one_and_out_of_range_is_refused(tmp_path):
    values = RNG.random((5, 6), dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(_rgb(read_image(tmp_path / "f.tif"))[..., 2], values, atol=1e-7)
    Image.fromarray(values * 255, mode="F").save(tmp_path / "f255.tif")
    with pytest.raises(InputError, match="0..1 is expected"):
        read_image(tmp_path / "f255.tif")


def test_one_bit_and_grey_and_rgb(tmp_path):
    bits = RNG.integers(0, 2, (8, 8)).astype(bool)
    Image.fromarray(bits).convert("1").save(tmp_path / "bits.png")
    np.testing.assert_array_equal(_rgb(read_image(tmp_path / "bits.png"))[..., 0], bits.astype(np.float32))
    rgb = RNG.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_allclose(_rgb(read_image(tmp_path / "rgb.png")), rgb / 255, atol=1e-7)


def test_palette_transparency_and_rgba_become_alpha(tmp_path):
    palette = Image.new("P", (4, 2))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    palette.save(tmp_path / "p.png", transparency=1)
    picture = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(picture.alpha[0].numpy(), [[1, 0, 1, 0], [0, 0, 1, 1]])
    np.testing.assert_array_equal(_rgb(picture)[0, 0], [1, 0, 0])
    rgba = RNG.integers(0, 256, (3, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    picture = read_image(tmp_path / "rgba.png")
    np.testing.assert_allclose(picture.alpha[0].numpy(), rgba[..., 3] / 255, atol=1e-7)
    np.testing.assert_allclose(_rgb(picture), rgba[..., :3] / 255, atol=1e-7)
    # Flattened, as a viewer shows it: the colour over white where transparent.
    a = rgba[..., 3:] / 255
    np.testing.assert_allclose(picture.flattened()[0].numpy(), rgba[..., :3] / 255 * a + (1 - a), atol=1e-6)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    Image.fromarray(opaque, mode="RGBA").save(tmp_path / "opaque.png")
    assert read_image(tmp_path / "opaque.png").alpha is None
    grey_alpha = RNG.integers(0, 256, (3, 3, 2), dtype=np.uint8)
    Image.fromarray(grey_alpha, mode="LA").save(tmp_path / "la.png")
    picture = read_image(tmp_path / "la.png")
    np.testing.assert_allclose(picture.alpha[0].numpy(), grey_alpha[..., 1] / 255, atol=1e-7)


def test_cmyk_is_converted_to_rgb(tmp_path):
    cmyk = np.array([[[255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 0, 255], [0, 0, 0, 0]]], np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    picture = read_image(tmp_path / "c.tif")
    np.testing.assert_allclose(_rgb(picture)[0], [[0, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 1]], atol=1e-6)
    assert picture.icc_profile is None


def test_exif_orientation_gives_the_upright_image(tmp_path):
    pixels = RNG.integers(0, 256, (2, 3, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it 90° clockwise
    Image.fromarray(pixels).save(tmp_path / "r.png", exif=exif)
    picture = read_image(tmp_path / "r.png")
    np.testing.assert_allclose(_rgb(picture), np.rot90(pixels, k=-1) / 255, atol=1e-7)


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_icc_profile_goes_into_the_cut_out(tmp_path):
    icc = _srgb_profile()
    Image.fromarray(RNG.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / "in.png", icc_profile=icc)
    picture = read_image(tmp_path / "in.png")
    assert picture.icc_profile == icc
    write_cutout(tmp_path / "out.png", tmp_path / "out_mask.png", picture.rgb[0], torch.ones(4, 4),
                 icc_profile=picture.icc_profile)
    with Image.open(tmp_path / "out.png") as out:
        assert out.info.get("icc_profile") == icc
    with Image.open(tmp_path / "out_mask.png") as mask:
        assert "icc_profile" not in mask.info


def test_animated_and_multi_page_files_are_refused(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    for name in ("a.gif", "pages.tif"):
        with pytest.raises(InputError, match="2 frames"):
            read_image(tmp_path / name)


def _grey_png(path, width, height):
    """A valid all-black 8-bit grey PNG of any size, written without holding it in memory."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    packer = zlib.compressobj(1)
    row = b"\x00" * (width + 1)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_size_limit_is_ours_not_pillows(tmp_path):
    # 180 megapixels: above Pillow's own decompression-bomb limit, within ours (16384 a side).
    assert probe_image(_grey_png(tmp_path / "wide.png", MAX_SIDE, 11000)) == (MAX_SIDE, 11000)
    with pytest.raises(InputError, match="largest supported side is 16384"):
        probe_image(_grey_png(tmp_path / "wider.png", MAX_SIDE + 1, 8))


def test_unreadable_files_are_input_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"not a png at all")
    Image.new("RGB", (64, 64)).save(tmp_path / "cut.jpg")
    (tmp_path / "cut2.jpg").write_bytes((tmp_path / "cut.jpg").read_bytes()[:200])
    for name, message in (("empty.jpg", "empty file"), ("junk.png", "not an image"),
                          ("cut2.jpg", "cannot"), ("missing.png", "not found")):
        with pytest.raises(InputError, match=message):
            read_image(tmp_path / name)


def test_masks_keep_sixteen_bits_and_use_alpha_when_transparent(tmp_path):
    values = RNG.integers(0, 65536, (5, 5), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "m16.png")
    np.testing.assert_allclose(read_mask(tmp_path / "m16.png").numpy(), values / 65535, atol=1e-6)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = [[0, 255], [128, 10]]
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "ma.png")
    np.testing.assert_allclose(read_mask(tmp_path / "ma.png").numpy() * 255, rgba[..., 3], atol=1e-4)


def test_folder_scan_skips_hidden_and_unfinished_files(tmp_path):
    for name in ("b.png", "a.JPG", ".hidden.png", "._a.jpg", ".a.png.123-abcd.partial", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in find_images([tmp_path])] == ["a.JPG", "b.png"]


# --- writing -------------------------------------------------------------------------------

def test_cut_out_and_mask_round_trip_and_are_never_silently_replaced(tmp_path):
    rgb = torch.rand(7, 5, 3, generator=torch.Generator().manual_seed(1))
    alpha = torch.rand(7, 5, generator=torch.Generator().manual_seed(2))
    write_cutout(tmp_path / "a.png", tmp_path / "a_mask.png", rgb, alpha)
    rgba = np.asarray(Image.open(tmp_path / "a.png"))
    np.testing.assert_array_equal(rgba[..., 3], np.asarray(Image.open(tmp_path / "a_mask.png")))
    np.testing.assert_array_equal(rgba[..., :3], np.rint(rgb.numpy() * 255))
    np.testing.assert_array_equal(rgba[..., 3], mask_bytes(alpha))
    before = (tmp_path / "a.png").read_bytes()
    with pytest.raises(FileExistsError):
        write_cutout(tmp_path / "a.png", tmp_path / "a_mask2.png", 1 - rgb, alpha)
    assert (tmp_path / "a.png").read_bytes() == before
    write_cutout(tmp_path / "a.png", tmp_path / "a_mask.png", 1 - rgb, alpha, overwrite=True)
    assert (tmp_path / "a.png").read_bytes() != before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_writing_works_in_strips_of_rows(tmp_path, monkeypatch):
    from comfyui_meticulous.files import images
    monkeypatch.setattr(images, "STRIP_VALUES", 3 * 4 * 3)  # three rows of [10,4,3]
    rgb = torch.rand(10, 4, 3, generator=torch.Generator().manual_seed(3))
    write_cutout(tmp_path / "s.png", tmp_path / "s_mask.png", rgb, torch.linspace(0, 1, 40).view(10, 4))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "s.png"))[..., :3], np.rint(rgb.numpy() * 255))


# --- naming --------------------------------------------------------------------------------

def _touch(folder, *names):
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")
    return [folder / name for name in names]


def test_names_collide_deterministically(tmp_path):
    sources = _touch(tmp_path / "in", "a.jpg", "a.png", "b.png", "b_mask.png", "B.tif")
    plans = plan_outputs(sources, tmp_path / "out")
    assert [(p.rgba.name, p.mask.name) for p in plans] == [
        ("a.png", "a_mask.png"), ("a_png.png", "a_png_mask.png"), ("b.png", "b_mask.png"),
        ("b_mask_png.png", "b_mask_png_mask.png"), ("B_tif.png", "B_tif_mask.png")]
    again = _touch(tmp_path / "again", "a.jpg")
    plans = plan_outputs([sources[0], again[0]], tmp_path / "out")
    assert [p.rgba.name for p in plans] == ["a.png", "a_jpg.png"]


def test_an_output_folder_holding_inputs_is_refused_unless_allowed(tmp_path):
    sources = _touch(tmp_path, "x.png", "x_mask.png")
    with pytest.raises(InputError, match="holds 2 of the input images"):
        plan_outputs(sources, tmp_path)
    plans = plan_outputs(sources, tmp_path, allow_input_folder=True)
    outputs = {p.name for plan in plans for p in (plan.rgba, plan.mask)}
    assert outputs == {"x_png.png", "x_png_mask.png", "x_mask_png.png", "x_mask_png_mask.png"}
    assert not outputs & {"x.png", "x_mask.png"}


def test_existing_outputs_need_overwrite_and_a_file_is_not_a_folder(tmp_path):
    sources = _touch(tmp_path / "in", "a.jpg")
    _touch(tmp_path / "out", "a_mask.png")
    with pytest.raises(InputError, match="1 output files already exist.*--overwrite"):
        plan_outputs(sources, tmp_path / "out")
    assert plan_outputs(sources, tmp_path / "out", overwrite=True)[0].mask.name == "a_mask.png"
    with pytest.raises(InputError, match="is an existing file"):
        plan_outputs(sources, sources[0])
    with pytest.raises(InputError, match="is an existing file"):
        prepare_folder(sources[0])


# --- batches and interrupts ----------------------------------------------------------------

def test_a_failing_item_is_reported_and_the_rest_go_on():
    def job(item):
        if item == "bad":
            raise InputError("bad: empty file")
        if item == "io":
            raise PermissionError(13, "Permission denied", "/x/io.png")
    report = run_each(["a", "bad", "b", "io", "c"], job)
    assert report.done == ["a", "b", "c"] and report.exit_status == 1
    assert [(f.name, f.reason) for f in report.failed] == [("bad", "bad: empty file"),
                                                           ("io", "Permission denied: /x/io.png")]
    assert report.summary() == "3 of 5 images done, 2 failed: bad, io"
    assert BatchReport(done=["a"]).exit_status == 0


def test_an_interrupt_ends_the_batch():
    def job(item):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_each(["a", "b"], job)


def test_sigterm_becomes_an_exception_that_cleanup_sees(tmp_path):
    from comfyui_meticulous.files.atomic import atomic_path
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as caught:
        with signals_as_exceptions(), atomic_path(tmp_path / "f.bin") as staging:
            staging.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
    assert caught.value.signum == signal.SIGTERM
    assert list(tmp_path.iterdir()) == [] and signal.getsignal(signal.SIGTERM) is previous
