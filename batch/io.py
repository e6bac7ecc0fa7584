"""The image reader and writer of a batch job: the same decoding, naming and PNGs as ``cut``.

Every engine goes through these functions, so a file processed locally and one processed on a
Ray worker come out byte for byte the same. Ray hands a worker the file's bytes, not a path,
hence :func:`decode_image` on bytes.
"""

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..files.atomic import atomic_path
from ..inference.files import IMAGE_SUFFIXES, find_images, save_mask, save_rgba

__all__ = ["IMAGE_SUFFIXES", "decode_image", "find_images", "image_tensor", "output_names",
           "write_outputs"]


def decode_image(data: bytes, name: str) -> np.ndarray:
    """``uint8 [H,W,3]`` RGB of an encoded image, upright according to its EXIF tag.

    Kept as 8-bit until the model needs it: a quarter of the bytes of float32 to move between
    Ray workers. ``InputError`` naming ``name`` if the bytes are not a readable image.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:
        raise InputError(f"cannot read image {name}: not an image format Pillow recognises") from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read image {name}: {err}") from None


def image_tensor(pixels: np.ndarray) -> torch.Tensor:
    """``uint8 [H,W,3]`` -> float ``[1,H,W,3]`` in 0..1, computed as ``cut``'s reader does."""
    return torch.from_numpy(pixels.astype(np.float32) / 255.0).unsqueeze(0)


def output_names(source: str | os.PathLike) -> tuple[str, str]:
    """``(RGBA file, mask file)`` names for an input path or URI, as ``cut`` names them."""
    stem = Path(str(source).rstrip("/").rsplit("/", 1)[-1]).stem
    return f"{stem}.png", f"{stem}_mask.png"


def write_outputs(output: Path, source: str, pixels: np.ndarray, alpha: torch.Tensor) -> None:
    """Write the straight-alpha RGBA and the mask PNG of ``source`` into ``output``.

    Each file appears under its final name complete or not at all; the mask is written last,
    so a finished item is one whose two files both exist.
    """
    rgba_name, mask_name = output_names(source)
    with atomic_path(output / rgba_name) as staging:
        save_rgba(staging, image_tensor(pixels)[0], alpha)
    with atomic_path(output / mask_name) as staging:
        save_mask(staging, alpha)


def is_local(source: str) -> bool:
    """True for a plain path; False for a URI (``s3://``, ``gs://``, ...) that Ray's readers fetch."""
    return "://" not in source
