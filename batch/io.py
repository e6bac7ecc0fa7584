"""The batch job's image reader, per-image cut and writer: ``cut``'s own, adapted to bytes.

Reading, the cut itself and writing are those of the ``cut`` command (:mod:`..files.images`,
:mod:`..inference.cutout`), so a batch output is byte for byte what ``cut`` writes. Two things
are added here because Ray hands a worker an encoded file, not a path: reading from bytes,
and the cut split into "what the model does" and "what is written", so that the model's actor
and the writing task can be different processes.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files.images import IMAGE_SUFFIXES, Picture, find_images, read_image, write_cutout
from ..files.naming import MASK_SUFFIX
from ..inference.cutout import CutOptions

__all__ = ["IMAGE_SUFFIXES", "CutOptions", "Cutout", "find_images", "is_local", "output_names",
           "read_image_bytes", "write_cutout_files"]


def read_image_bytes(data: bytes, name: str) -> Picture:
    """:func:`..files.images.read_image` for an encoded file's bytes; ``name`` is used in errors."""
    return read_image(name, data)


@dataclass
class Cutout:
    """What is written for one image: 8-bit straight ``colour`` ``uint8 [H,W,3]``, ``alpha``
    float32 ``[H,W]`` in 0..1, and the ``icc_profile`` to embed.

    The colour is kept in 8 bits, which is exactly what the RGBA file stores: a quarter of the
    bytes of float colour to move from the model's actor to the writer.
    """

    colour: np.ndarray
    alpha: np.ndarray
    icc_profile: bytes | None


def model_input(picture: Picture) -> torch.Tensor:
    """``[1,H,W,3]``: what the model sees, as ``cut`` gives it (transparency over white)."""
    return picture.flattened()


def cutout(picture: Picture, alpha: torch.Tensor, options: CutOptions) -> Cutout:
    """The outputs of ``picture`` from the model's ``alpha`` ``[H,W]``, as ``cut_one`` makes them."""
    colour = picture.flattened()
    if options.respect_alpha and picture.alpha is not None:
        alpha = alpha * picture.alpha[0]
        colour = picture.rgb
    eight_bit = colour[0].clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return Cutout(eight_bit, alpha.float().cpu().numpy(), picture.icc_profile)


def output_names(source: str | os.PathLike) -> tuple[str, str]:
    """``(RGBA file, mask file)`` names for an input path or URI: ``NAME.png``, ``NAME_mask.png``."""
    stem = Path(str(source).rstrip("/").rsplit("/", 1)[-1]).stem
    return f"{stem}.png", f"{stem}{MASK_SUFFIX}.png"


def write_cutout_files(output: Path, source: str, result: Cutout) -> None:
    """Write ``source``'s cut-out and mask into ``output`` with ``cut``'s writer (mask first, each
    file renamed into place complete; a finished item is one whose two files both exist)."""
    rgba_name, mask_name = output_names(source)
    colour = torch.from_numpy(result.colour.astype(np.float32) / 255.0)
    write_cutout(output / rgba_name, output / mask_name, colour, torch.from_numpy(result.alpha),
                 icc_profile=result.icc_profile, overwrite=True)


def is_local(source: str) -> bool:
    """True for a plain path; False for a URI (``s3://``, ``gs://``, ...) that Ray's readers fetch."""
    return "://" not in source
