"""Procedural scenes with fine structure, for tests, experiments and smoke-testing a setup.

A scene is an object over a background, both textured in random colours: a wobbly body with
holes, hair-like strands along part of its rim (0.6-3 px wide, curly), a few long thin antennae and
straight rigging lines. Shapes are drawn at 4x and box-filtered down, so the ground truth is the
object's exact coverage of each pixel and the image is the coverage-weighted mix of the two
textures, as a camera would record it. Object and background colours differ, but each texture
varies enough that colour alone does not separate them everywhere.
"""

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from ..inference.images import IMAGENET_MEAN, IMAGENET_STD
from ..models.base import SegmentationModel

SUPERSAMPLING = 4


def _curve(rng: np.random.Generator, start, heading: float, length: float, step: float, curl: float):
    points = [start]
    for _ in range(max(2, int(length / step))):
        heading += rng.normal(0, curl)
        x, y = points[-1]
        points.append((x + step * math.cos(heading), y + step * math.sin(heading)))
    return points


def draw_coverage(size: int, rng: np.random.Generator) -> np.ndarray:
    """Object coverage ``[size,size]`` float32 in 0..1 of a random scene (see the module docstring)."""
    s = SUPERSAMPLING
    side = size * s
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = rng.uniform(0.4, 0.6) * side, rng.uniform(0.5, 0.62) * side
    rx, ry = rng.uniform(0.18, 0.28) * side, rng.uniform(0.14, 0.22) * side
    phases = rng.uniform(0, 2 * math.pi, 2)

    def radius(angle: float) -> float:
        return 1 + 0.07 * math.sin(3 * angle + phases[0]) + 0.04 * math.sin(7 * angle + phases[1])

    def rim(angle: float, inset: float = 0.96):
        k = inset * radius(angle)
        return cx + k * rx * math.cos(angle), cy + k * ry * math.sin(angle)

    angles = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    draw.polygon([rim(a, 1.0) for a in angles], fill=255)
    hair_from, hair_span = rng.uniform(0.9, 1.3) * math.pi, rng.uniform(0.5, 0.9) * math.pi
    for _ in range(int(rng.integers(60, 140))):
        angle = hair_from + rng.uniform(0, hair_span)
        points = _curve(rng, rim(angle), angle + rng.normal(0, 0.35), rng.uniform(0.04, 0.14) * side, 2 * s, 0.15)
        draw.line(points, fill=255, width=max(1, int(rng.uniform(0.6, 3.0) * s)), joint="curve")
    for _ in range(int(rng.integers(2, 6))):
        angle = hair_from + rng.uniform(0, hair_span)
        points = _curve(rng, rim(angle), angle, rng.uniform(0.15, 0.3) * side, 6 * s, 0.06)
        draw.line(points, fill=255, width=2 * s, joint="curve")
    for _ in range(int(rng.integers(1, 4))):
        angle = rng.uniform(0.1, 0.9) * math.pi
        x, y = rim(angle, 0.9)
        draw.line([(x, y), (x + math.cos(angle) * side, y + math.sin(angle) * side)], fill=255, width=2 * s)
    for _ in range(int(rng.integers(5, 25))):
        angle, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.75)
        x, y = cx + distance * rx * math.cos(angle), cy + distance * ry * math.sin(angle)
        r = rng.uniform(1.5, 8) * s
        draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255


def texture(size: int, rng: np.random.Generator, colour: np.ndarray, amount: float) -> np.ndarray:
    """``[size,size,3]`` float32: ``colour`` modulated by smooth blotches and fine grain."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    field = np.zeros((size, size, 3), np.float32)
    for _ in range(4):
        fx, fy = rng.uniform(1, 6, 2)
        phase = rng.uniform(0, 2 * math.pi)
        field += np.sin(2 * math.pi * (fx * x + fy * y) + phase)[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
    grain = rng.normal(0, 1, (size, size, 3)).astype(np.float32)
    return np.clip(colour + amount * (0.15 * field + 0.25 * grain), 0, 1)


def synthetic_scene(size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One scene: image ``[size,size,3]`` and coverage ``[size,size]``, float32 in 0..1."""
    rng = np.random.default_rng(seed)
    coverage = draw_coverage(size, rng)
    background = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    # The object's colour sits at a fixed distance from the background's, in a random direction.
    direction = rng.normal(0, 1, 3).astype(np.float32)
    foreground = np.clip(background + 0.45 * direction / np.linalg.norm(direction), 0, 1)
    image = (coverage[..., None] * texture(size, rng, foreground, 0.5)
             + (1 - coverage[..., None]) * texture(size, rng, background, 0.5))
    return torch.from_numpy(image), torch.from_numpy(coverage)


def synthetic_pairs(count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` scenes (seeds ``seed .. seed+count-1``): images ``[N,3,S,S]``, masks ``[N,1,S,S]``."""
    scenes = [synthetic_scene(size, seed + index) for index in range(count)]
    images = torch.stack([image.permute(2, 0, 1) for image, _ in scenes])
    masks = torch.stack([mask[None] for _, mask in scenes])
    return images, masks


def write_scenes(folder: str | Path, count: int, size: int, seed: int = 0) -> Path:
    """Write ``count`` scenes as ``folder/images/NNNN.jpg`` and ``folder/masks/NNNN.png``."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image, mask = synthetic_scene(size, seed + index)
        Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(folder / "images" / f"{index:04d}.jpg",
                                                                              quality=95)
        Image.fromarray((mask.numpy() * 255).round().astype(np.uint8)).save(folder / "masks" / f"{index:04d}.png")
    return folder


class CoverageModel(SegmentationModel):
    """A stand-in segmenter for scenes whose red channel is the object's coverage: it reads the
    coverage back from its (resized, normalised) input, so it is perfect except for the
    resolution it runs at. Used to measure what refinement and fusion recover."""

    size_multiple = 32
    input_normalisation = "imagenet"

    def __init__(self, native: int):
        super().__init__()
        self.native_resolution = (native, native)
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        cover = (x[:, :1] * IMAGENET_STD[0] + IMAGENET_MEAN[0]).clamp(1e-3, 1 - 1e-3)
        return torch.log(cover / (1 - cover)) + self.anchor
