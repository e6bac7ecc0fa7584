"""Training data: image/mask folder pairs in the common dataset layouts, loaded at a fixed size.

Recognised layouts of ``--data DIR`` (images and masks are paired by file name without suffix):

- DIS5K: ``DIR/DIS-TR/{im,gt}`` (validation from ``DIR/DIS-VD/{im,gt}`` when present), or a
  split folder itself, ``DIR/{im,gt}``.
- HRSOD: ``DIR/HRSOD_train`` and ``DIR/HRSOD_train_mask`` (validation from ``HRSOD_test`` and
  ``HRSOD_test_mask`` when present), or ``DIR`` itself with a sibling ``DIR_mask``.
- Plain: ``DIR/images`` and ``DIR/masks``.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import InputError
from ..files.images import IMAGE_SUFFIXES, read_image, read_mask

Pair = tuple[Path, Path]


def _files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def pair_folders(images: Path, masks: Path) -> list[Pair]:
    """Image/mask pairs matched by stem, sorted by name; images without a mask are left out."""
    masks_by_stem = _files(masks)
    pairs = [(path, masks_by_stem[stem]) for stem, path in _files(images).items() if stem in masks_by_stem]
    if not pairs:
        raise InputError(f"no image in {images} has a mask of the same name in {masks}")
    return pairs


def _split_folders(root: Path) -> tuple[tuple[Path, Path], tuple[Path, Path] | None]:
    """``((images, masks), validation (images, masks) or None)`` of a dataset folder."""
    def both(a: Path, b: Path) -> bool:
        return a.is_dir() and b.is_dir()

    if both(root / "DIS-TR" / "im", root / "DIS-TR" / "gt"):
        val = (root / "DIS-VD" / "im", root / "DIS-VD" / "gt")
        return (root / "DIS-TR" / "im", root / "DIS-TR" / "gt"), val if both(*val) else None
    if both(root / "HRSOD_train", root / "HRSOD_train_mask"):
        val = (root / "HRSOD_test", root / "HRSOD_test_mask")
        return (root / "HRSOD_train", root / "HRSOD_train_mask"), val if both(*val) else None
    for images, masks in (("im", "gt"), ("images", "masks")):
        if both(root / images, root / masks):
            return (root / images, root / masks), None
    sibling = root.with_name(root.name + "_mask")
    if both(root, sibling):
        return (root, sibling), None
    raise InputError(
        f"{root}: no image/mask folders found. Expected DIS5K (DIS-TR/im + DIS-TR/gt, or im + gt), "
        f"HRSOD (HRSOD_train + HRSOD_train_mask) or images + masks")


def find_pairs(root: str | Path) -> tuple[list[Pair], list[Pair] | None]:
    """Training pairs of a dataset folder, and its own validation pairs if the layout has them."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"dataset folder not found: {root}")
    train, val = _split_folders(root)
    return pair_folders(*train), (pair_folders(*val) if val else None)


def hold_out(pairs: list[Pair], fraction: float = 0.05) -> tuple[list[Pair], list[Pair]]:
    """Every ``1/fraction``-th pair (at least one) for validation, the rest for training; a set
    of fewer than 20 pairs is too small to split and validates on its training pairs."""
    if len(pairs) < 20:
        return pairs, pairs
    step = max(2, round(1 / fraction))
    return [p for i, p in enumerate(pairs) if i % step], pairs[::step]


def load_pair(image_path: Path, mask_path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``[3,S,S]`` and mask ``[1,S,S]`` float32 in 0..1, resized to ``size²`` (bilinear,
    antialiased); the mask keeps its grey levels. Both are read by the package's one image
    reader (every mode and bit depth, EXIF orientation; a transparent image on white)."""
    image = read_image(image_path).flattened()[0].permute(2, 0, 1)
    mask = read_mask(mask_path)[None]
    return _resize(image, size), _resize(mask, size)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (size, size):
        return x.contiguous()
    return F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp_(0, 1)


class FolderPairs(Dataset):
    """Image/mask files as ``(image [3,S,S], mask [1,S,S])`` at ``size²``."""

    def __init__(self, pairs: list[Pair], size: int):
        self.pairs, self.size = list(pairs), size

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return load_pair(*self.pairs[index], self.size)

    def describe(self) -> str:
        folders = sorted({str(image.parent) for image, _ in self.pairs})
        return f"{len(self)} image/mask pairs from {', '.join(folders)}"


class TensorPairs(Dataset):
    """Images ``[N,3,S,S]`` and masks ``[N,1,S,S]`` already in memory, and optionally the coarse
    logits ``[N,1,h,w]`` a refiner or fusion should start from (precomputed predictions)."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, description: str = "in-memory pairs",
                 coarse: torch.Tensor | None = None):
        if images.shape[0] != masks.shape[0] or images.shape[-2:] != masks.shape[-2:]:
            raise InputError(f"images {list(images.shape)} and masks {list(masks.shape)} do not pair up")
        if coarse is not None and (coarse.ndim != 4 or coarse.shape[:2] != (images.shape[0], 1)):
            raise InputError(f"coarse logits must be [N,1,h,w] with N={images.shape[0]}, got {list(coarse.shape)}")
        self.images, self.masks, self.coarse, self.description = images, masks, coarse, description

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        if self.coarse is None:
            return self.images[index], self.masks[index]
        return self.images[index], self.masks[index], self.coarse[index]

    def describe(self) -> str:
        return f"{len(self)} {self.description}"
