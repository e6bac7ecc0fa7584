"""The high-resolution pipeline recovers detail that a one-shot prediction loses to resizing.

The scene is drawn procedurally: a body with holes, hair-like strands and thin lines. The image
encodes the ground truth's coverage in its pixels, and the stand-in model decodes it, so the
model is a pure function of what it is shown: a perfect segmenter whose only limit is its
input resolution. The one-shot prediction sees the whole image squeezed to the model's size;
the pipeline also shows it full-resolution windows of the uncertain band.

Run as a script to print the figures at 2048² and 4096² (the second takes a few minutes).
"""

import math
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from comfyui_meticulous.highres import HighResOptions, UncertainBand, segment_highres
from comfyui_meticulous.metrics import mba_mq, mba_radii
from comfyui_meticulous.metrics.morphology import gradient
from comfyui_meticulous.training.synthetic import CoverageModel

SUPERSAMPLING = 2


def _strand(rng, start, heading, length, step):
    points = [start]
    for _ in range(max(2, int(length / step))):
        heading += rng.normal(0, 0.12)
        x, y = points[-1]
        points.append((x + step * math.cos(heading), y + step * math.sin(heading)))
    return points


def draw_scene(size: int, seed: int = 0) -> np.ndarray:
    """Ground-truth coverage ``[size,size]`` float32 in 0..1: a wobbly body with hair-like
    strands on its upper rim, long thin lines, rigging across the frame and small holes."""
    rng = np.random.default_rng(seed)
    ss = SUPERSAMPLING
    side = size * ss
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, rx, ry = 0.5 * side, 0.56 * side, 0.25 * side, 0.2 * side
    t = np.linspace(0, 2 * math.pi, 720, endpoint=False)
    wobble = 1 + 0.06 * np.sin(3 * t + rng.uniform(0, 6)) + 0.04 * np.sin(7 * t + rng.uniform(0, 6))
    draw.polygon(list(zip(cx + rx * wobble * np.cos(t), cy + ry * wobble * np.sin(t))), fill=255)

    def rim(angle, inset=0.97):
        k = 1 + 0.06 * math.sin(3 * angle) + 0.04 * math.sin(7 * angle)
        return cx + inset * rx * k * math.cos(angle), cy + inset * ry * k * math.sin(angle)

    for _ in range(160):                                             # hair: 1-3 px, curly
        angle = rng.uniform(1.05 * math.pi, 1.95 * math.pi)
        points = _strand(rng, rim(angle), angle + rng.normal(0, 0.3), rng.uniform(0.03, 0.12) * side, 3 * ss)
        draw.line(points, fill=255, width=int(rng.integers(1, 4)) * ss, joint="curve")
    for _ in range(5):                                               # antennae: 2 px, long
        angle = rng.uniform(1.2 * math.pi, 1.8 * math.pi)
        points = _strand(rng, rim(angle), angle, rng.uniform(0.2, 0.3) * side, 8 * ss)
        draw.line(points, fill=255, width=2 * ss, joint="curve")
    for _ in range(3):                                               # rigging: 2 px straight lines
        angle = rng.uniform(0.1 * math.pi, 0.9 * math.pi)
        x, y = rim(angle, 0.9)
        draw.line([(x, y), (x + math.cos(angle) * side, y + math.sin(angle) * side)], fill=255, width=2 * ss)
    for _ in range(40):                                              # holes: radius 2-10 px
        angle, radius = rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.8)
        x, y = cx + radius * rx * math.cos(angle), cy + radius * ry * math.sin(angle)
        r = rng.uniform(2, 10) * ss
        draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255




def body_accuracy(pred: np.ndarray, gt: np.ndarray) -> float:
    """Pixel accuracy outside the widest mBA band (MQ's body term)."""
    outside = ~gradient(gt, max(mba_radii(*gt.shape)))
    return float(((pred == gt) & outside).sum() / outside.sum())


def compare(size: int, native: int, options: HighResOptions = HighResOptions(), seed: int = 0) -> dict:
    gt_cover = draw_scene(size, seed)
    gt = gt_cover > 0.5
    images = torch.from_numpy(gt_cover)[None, :, :, None].expand(1, size, size, 3)
    started = time.perf_counter()
    result = segment_highres(CoverageModel(native), images, options)
    seconds = time.perf_counter() - started
    figures = {"size": size, "native": native, "windows": len(result.plans[0]), "seconds": seconds}
    for name, prediction in (("one_shot", result.coarse), ("highres", result.prediction)):
        mask = (prediction.probabilities()[0] > 0.5).numpy()
        mba, mq = mba_mq(mask, gt)
        figures[name] = {"mBA": mba, "MQ": mq, "body": body_accuracy(mask, gt)}
    return figures


SETTINGS = {
    "defaults": (HighResOptions(), 0.15),
    "hrsod rule": (HighResOptions(band=UncertainBand(rule="hrsod")), 0.15),
    "8 windows": (HighResOptions(max_patches=8), 0.1),
    "zoom 0.5": (HighResOptions(zoom=0.5), 0.05),
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_highres_recovers_fine_detail_without_hurting_the_body(setting):
    # 2048² seen by a 512² model: the same 4x squeeze as a 4K photo through a 1024² model.
    options, gain = SETTINGS[setting]
    figures = compare(2048, 512, options)
    one, high = figures["one_shot"], figures["highres"]
    assert high["mBA"] >= one["mBA"] + gain
    assert high["MQ"] >= one["MQ"] + gain / 2
    assert high["body"] >= one["body"]


if __name__ == "__main__":
    for size, native in ((2048, 512), (4096, 1024)):
        for setting, (options, _) in SETTINGS.items():
            f = compare(size, native, options)
            print(f"{size}² image, {native}² model, {setting}: {f['windows']} windows, {f['seconds']:.1f} s")
            for name in ("one_shot", "highres"):
                print(f"  {name:9s} mBA {f[name]['mBA']:.4f}  MQ {f[name]['MQ']:.4f}  body {f[name]['body']:.5f}")
