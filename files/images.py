"""The one image reader and writer of the package: every file the command line, ``eval`` and
``train`` read, and every cut-out and mask they write.

Reading gives what an image viewer shows, as float 0..1:

* every Pillow mode: 1-bit, 8-bit grey (``L``/``LA``), palette (``P``, its transparency as
  alpha), RGB/RGBA, CMYK, 16-bit grey (``I;16``, ``I;16B``, 16-bit PNG/TIFF: /65535), 32-bit
  integer ``I`` (/65535 when every value fits 16 bits, else /(2³¹-1)) and 32-bit float ``F``
  (taken as 0..1; values beyond 0..1 are refused rather than guessed at);
* upright according to the EXIF orientation tag;
* the alpha channel, if any pixel is not opaque, separately (``Picture.alpha``);
* the ICC profile: RGB images keep their pixel values and the profile goes into the outputs, so
  a colour-managed viewer shows the cut-out in the colours of the source. CMYK images are
  converted to sRGB through their own profile (Pillow's formula when they have none) and
  written untagged (sRGB); grey images are written untagged too (a grey profile cannot describe
  an RGBA file).

One image per file: animated GIF/PNG/WebP and multi-page TIFF are refused with a clear error
(extract the frames first); a camera JPEG's embedded preview (MPO) is ignored. Sides above
:data:`~..checks.MAX_SIDE` are refused from the header alone, before decoding; Pillow's own
decompression-bomb limit is raised to the same size so the two never disagree.

Writing streams: the 8-bit arrays are filled a strip of rows at a time from the float tensors
(no full-size float temporaries) and Pillow's PNG encoder compresses from that buffer, so saving
a cut-out needs little more than the RGBA file's own size in memory.
"""

import io
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ..checks import MAX_SIDE
from ..errors import InputError
from .atomic import atomic_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
# Values converted to 8 bits at a time when writing (about 4 MiB of float temporaries), so the
# temporaries stay small beside the 8-bit image whatever its width.
STRIP_VALUES = 1 << 20
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_PILLOW_LIMIT = threading.Lock()


@dataclass
class Picture:
    """A decoded image: ``rgb`` float32 ``[1,H,W,3]`` in 0..1 (straight colour), ``alpha``
    float32 ``[1,H,W]`` or None when the file has no transparent pixel, the ``icc_profile`` to
    embed in outputs (None: sRGB), and the ``source`` path."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    icc_profile: bytes | None
    source: Path

    def flattened(self, background: float = 1.0) -> torch.Tensor:
        """``[1,H,W,3]`` as a viewer shows it: the colour over ``background`` where transparent."""
        if self.alpha is None:
            return self.rgb
        a = self.alpha.unsqueeze(-1)
        return self.rgb * a + background * (1 - a)


def find_images(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly, or found (not recursively, sorted by name) in the folders
    given; hidden files (``.name``: editors' and the OS's side files, unfinished writes) are
    skipped in folders."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir()
                                if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                                and p.is_file()))
        elif item.is_file():
            found.append(item)
        else:
            raise InputError(f"input not found: {item}")
    if not found:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, inputs))}")
    return found


@contextmanager
def open_image(path: str | Path, data: bytes | None = None) -> Iterator[Image.Image]:
    """The file opened by Pillow (header read, pixels not yet decoded), checked: one frame,
    sides within :data:`MAX_SIDE`. Errors are :class:`InputError` naming the file.

    ``data``: the file's bytes, already read (e.g. from object storage); ``path`` then only
    names it in messages.
    """
    path = Path(path)
    try:
        with _PILLOW_LIMIT:
            saved = Image.MAX_IMAGE_PIXELS
            # Pillow refuses ~179 MP by default; our limit is per side. The lock keeps the
            # change from leaking into another thread's Image.open in between.
            Image.MAX_IMAGE_PIXELS = MAX_SIDE * MAX_SIDE
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    image = Image.open(path if data is None else io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnidentifiedImageError:
        empty = path.stat().st_size == 0 if data is None else not data
        kind = "an empty file" if empty else "not an image Pillow can read"
        raise InputError(f"{path}: {kind}") from None
    except (OSError, Image.DecompressionBombError, ValueError) as err:
        raise InputError(f"{path}: cannot read image: {err}") from None
    with image:
        width, height = image.size
        if max(width, height) > MAX_SIDE:
            raise InputError(f"{path}: image is {width}x{height}; the largest supported side is {MAX_SIDE} px")
        if getattr(image, "n_frames", 1) > 1 and image.format != "MPO":
            raise InputError(f"{path}: has {image.n_frames} frames (animated or multi-page); "
                             f"one image per file is supported: extract the frames first")
        yield image


def probe_image(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the header, after every check :func:`open_image` makes."""
    with open_image(path) as image:
        return image.size


def read_image(path: str | Path, data: bytes | None = None) -> Picture:
    """The image at ``path`` (or in ``data``, named ``path``: see :func:`open_image`) as a
    :class:`Picture` (see the module notes for each mode)."""
    path = Path(path)
    with open_image(path, data) as image:
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            rgb, alpha = _decode(image, path)
            icc = image.info.get("icc_profile")
        except (OSError, ValueError, SyntaxError) as err:
            raise InputError(f"{path}: cannot decode image: {err}") from None
    keep_icc = icc if icc and image.mode != "CMYK" and _profile_space(icc) == b"RGB " else None
    return Picture(rgb, alpha, keep_icc, path)


def read_mask(path: str | Path) -> torch.Tensor:
    """A mask file as float32 ``[H,W]`` in 0..1: its alpha channel if any pixel is transparent,
    otherwise its brightness (16-bit masks keep their precision)."""
    picture = read_image(path)
    if picture.alpha is not None:
        return picture.alpha[0]
    r, g, b = picture.rgb[0].unbind(-1)
    # ITU-R 601 luma, as Pillow's convert("L"): identical to the value for a grey file.
    return (0.299 * r + 0.587 * g + 0.114 * b).clamp_(0, 1)


def _profile_space(icc: bytes) -> bytes:
    return icc[16:20] if len(icc) >= 20 else b""


def _decode(image: Image.Image, path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    mode = image.mode
    if mode == "CMYK":
        return _to_tensor(np.asarray(_cmyk_to_rgb(image)), 255), None
    if mode in _SIXTEEN_BIT:
        return _grey(np.asarray(image), 65535), None
    if mode == "I":
        values = np.asarray(image)
        scale = 65535 if values.max(initial=0) <= 65535 else 2 ** 31 - 1
        return _grey(np.clip(values, 0, None), scale), None
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        if not np.isfinite(values).all():
            raise InputError(f"{path}: floating-point image contains NaN or infinite values")
        low, high = float(values.min(initial=0)), float(values.max(initial=0))
        if low < 0 or high > 1:
            raise InputError(f"{path}: floating-point image values are {low:g}..{high:g}; 0..1 is expected")
        return _grey(values, 1), None
    transparent = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
    if mode in ("L", "1") and not transparent:
        return _grey(np.asarray(image.convert("L")), 255), None
    if not transparent:
        return _to_tensor(np.asarray(image if mode == "RGB" else image.convert("RGB")), 255), None
    rgba = np.asarray(image if mode == "RGBA" else image.convert("RGBA"))
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return _to_tensor(rgba[..., :3], 255), None
    return _to_tensor(rgba[..., :3], 255), _to_tensor(alpha, 255)


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    icc = image.info.get("icc_profile")
    if icc and _profile_space(icc) == b"CMYK":
        try:
            return ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                             ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a damaged profile: fall back to the plain formula rather than fail the image
    return image.convert("RGB")


def _to_tensor(array: np.ndarray, scale: float) -> torch.Tensor:
    """uint8/uint16/int/float ``[H,W(,C)]`` -> float32 ``[1,H,W(,C)]`` / scale: one float copy
    (astype also reads big-endian 16-bit data correctly)."""
    values = array.astype(np.float32)
    values /= scale
    return torch.from_numpy(values).unsqueeze(0)


def _grey(array: np.ndarray, scale: float) -> torch.Tensor:
    grey = _to_tensor(array, scale)
    return grey.unsqueeze(-1).expand(*grey.shape, 3).contiguous()


# --- writing ------------------------------------------------------------------------------

def _fill_uint8(dest: np.ndarray, source: torch.Tensor) -> None:
    """``dest[...] = round(clamp(source, 0, 1) * 255)`` a strip of rows at a time."""
    rows = max(1, STRIP_VALUES // max(1, source[0].numel()))
    for top in range(0, source.shape[0], rows):
        strip = source[top:top + rows].detach().to("cpu", torch.float32)
        dest[top:top + rows] = strip.clamp(0, 1).mul_(255).round_().to(torch.uint8).numpy()


def mask_bytes(mask: torch.Tensor) -> np.ndarray:
    """A ``[H,W]`` mask in 0..1 as uint8 ``[H,W]``."""
    out = np.empty(tuple(mask.shape), np.uint8)
    _fill_uint8(out, mask)
    return out


def _save_png(array: np.ndarray, mode: str, path: Path, *, overwrite: bool, icc_profile: bytes | None) -> None:
    height, width = array.shape[:2]
    # frombuffer shares the array's memory: no second full-size copy for the encoder.
    image = Image.frombuffer(mode, (width, height), array, "raw", mode, 0, 1)
    extra = {"icc_profile": icc_profile} if icc_profile else {}
    with atomic_path(path, overwrite=overwrite) as staging:
        image.save(staging, format="PNG", **extra)


def write_mask(path: str | Path, mask: torch.Tensor, *, overwrite: bool = True) -> None:
    """Write a ``[H,W]`` mask in 0..1 as an 8-bit greyscale PNG (atomically)."""
    _save_png(mask_bytes(mask), "L", Path(path), overwrite=overwrite, icc_profile=None)


def write_rgba(path: str | Path, rgb: torch.Tensor, alpha: torch.Tensor | np.ndarray, *,
               icc_profile: bytes | None = None, overwrite: bool = True) -> None:
    """Write straight (unpremultiplied) ``[H,W,3]`` colour with ``[H,W]`` alpha (0..1 floats, or
    uint8 already) as an 8-bit RGBA PNG, with ``icc_profile`` embedded if given."""
    height, width = rgb.shape[:2]
    rgba = np.empty((height, width, 4), np.uint8)
    _fill_uint8(rgba[..., :3], rgb)
    rgba[..., 3] = alpha if isinstance(alpha, np.ndarray) else mask_bytes(alpha)
    _save_png(rgba, "RGBA", Path(path), overwrite=overwrite, icc_profile=icc_profile)


def write_cutout(rgba_path: str | Path, mask_path: str | Path, rgb: torch.Tensor, alpha: torch.Tensor, *,
                 icc_profile: bytes | None = None, overwrite: bool = False) -> None:
    """Write a cut-out and its mask. The mask goes first, so whenever a cut-out exists under
    its final name its mask does too (an interrupted run leaves at most a lone mask)."""
    mask = mask_bytes(alpha)
    _save_png(mask, "L", Path(mask_path), overwrite=overwrite, icc_profile=None)
    height, width = mask.shape
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., 3] = mask
    del mask  # the RGBA array holds it now: one 8-bit image in memory while the PNG is encoded
    _fill_uint8(rgba[..., :3], rgb)
    _save_png(rgba, "RGBA", Path(rgba_path), overwrite=overwrite, icc_profile=icc_profile)
