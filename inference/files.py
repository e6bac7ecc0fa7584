"""Reading images and writing cut-outs with Pillow, for the command line."""

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def find_images(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the given folders."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found.extend(sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        elif item.is_file():
            found.append(item)
        else:
            raise InputError(f"input not found: {item}")
    if not found:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {', '.join(map(str, inputs))}")
    return found


def load_image(path: str | Path) -> torch.Tensor:
    """RGB image as a float ``[1,H,W,3]`` tensor in 0..1, upright according to its EXIF tag."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"cannot read image {path}: {err}") from None
    return torch.from_numpy(array).unsqueeze(0)


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    return (tensor.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _save_png(image: Image.Image, path: str | Path) -> None:
    # Written beside the target and renamed into place, so an interrupted run never leaves a
    # truncated PNG where a finished one is expected.
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        image.save(partial, format="PNG")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def save_mask(path: str | Path, mask: torch.Tensor) -> None:
    """Write a ``[H,W]`` mask in 0..1 as an 8-bit greyscale PNG."""
    _save_png(Image.fromarray(_to_uint8(mask), mode="L"), path)


def save_rgba(path: str | Path, rgb: torch.Tensor, alpha: torch.Tensor) -> None:
    """Write straight (unpremultiplied) ``[H,W,3]`` colour with ``[H,W]`` alpha as an RGBA PNG."""
    _save_png(Image.fromarray(_to_uint8(torch.cat([rgb, alpha.unsqueeze(-1)], dim=-1)), mode="RGBA"), path)
