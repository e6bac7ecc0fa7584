"""Time and peak memory of the high-resolution pipeline on 2048², 4096² and 8192² images.

Every case runs in a fresh process. The peak is measured from the moment the image and the
model exist: on CPU as the growth of the resident set's high-water mark (reset through
``/proc/self/clear_refs``; large allocations are forced onto ``mmap`` so freed memory is
returned and cannot hide later peaks), on CUDA as ``torch.cuda.max_memory_allocated``. The
peak is reported in units of one full-size single-channel float32 map (``4·H·W`` bytes), and
what is left after subtracting the few full-size maps the pipeline keeps is the part that must
depend on the number of windows per batch only.

    python bench/bench_highres.py                      # CPU, all sizes, batches 1 4 8
    python bench/bench_highres.py --device cuda --sizes 8192 --batches 1 2 4 8 16
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

from procmem import MIB, status_kib  # this folder's helper: the scripts run as files



def _scene(size: int):
    """``[1,size,size,3]`` float32 image of a body with strands and lines, built channel by
    channel so no temporary is larger than one uint8 plane."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, rx, ry = 0.5 * size, 0.55 * size, 0.25 * size, 0.2 * size
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    for _ in range(200):
        angle = rng.uniform(math.pi, 2 * math.pi)
        x, y = cx + 0.97 * rx * math.cos(angle), cy + 0.97 * ry * math.sin(angle)
        points, heading = [(x, y)], angle
        for _ in range(40):
            heading += rng.normal(0, 0.12)
            x, y = x + size / 400 * math.cos(heading), y + size / 400 * math.sin(heading)
            points.append((x, y))
        draw.line(points, fill=255, width=int(rng.integers(1, 4)), joint="curve")
    plane = torch.from_numpy(np.array(canvas))
    image = torch.empty(1, size, size, 3)
    for channel in range(3):
        image[0, :, :, channel].copy_(plane).div_(255)
    return image


def _stand_in(native: int, width: int):
    """A small convolutional network with the model protocol; its activations (``width``
    channels at the input size) make the per-window memory visible."""
    from torch import nn

    from comfyui_meticulous.models.base import SegmentationModel

    class StandIn(SegmentationModel):
        native_resolution = (native, native)
        size_multiple = 32
        input_normalisation = "imagenet"

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, 1, 3, padding=1))

        def forward(self, x):
            return self.body(x)

    return StandIn()


def run_case(args) -> dict:
    import torch

    from comfyui_meticulous.highres import HighResOptions, segment_highres

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = _stand_in(args.native, args.width).to(device).eval()
    image = _scene(args.size)
    options = HighResOptions(batch_size=args.batch, max_patches=args.max_patches)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        base = status_kib("VmRSS") * 1024
    started = time.perf_counter()
    result = segment_highres(model, image, options)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda" else status_kib("VmHWM") * 1024) - base
    return {"size": args.size, "batch": args.batch, "windows": len(result.plans[0]), "seconds": seconds,
            "peak": peak, "map": 4 * args.size * args.size, "image": image.numel() * 4, "device": args.device}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--native", type=int, default=1024, help="stand-in model input size")
    parser.add_argument("--width", type=int, default=16, help="stand-in model channels")
    parser.add_argument("--max-patches", type=int, default=8, help="windows per image (same for every case)")
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args)))
        return 0

    # Force big allocations onto mmap, so that what is freed leaves the resident set at once.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    rows = []
    for size in args.sizes:
        for batch in args.batches:
            command = [sys.executable, __file__, "--case", "--size", str(size), "--batch", str(batch),
                       "--device", args.device, "--native", str(args.native), "--width", str(args.width),
                       "--max-patches", str(args.max_patches)]
            out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{size:5d}² batch {batch:2d}: {r['windows']:2d} windows {r['seconds']:6.1f} s  "
                  f"peak +{r['peak'] / MIB:7.0f} MiB = {r['peak'] / r['map']:5.2f} maps "
                  f"(image {r['image'] / MIB:.0f} MiB, one map {r['map'] / MIB:.0f} MiB)", flush=True)

    if len(args.batches) > 1:
        print("\nPeak growth per extra window in a batch (MiB), at each size:")
    for size in args.sizes:
        mine = [r for r in rows if r["size"] == size]
        if len(mine) > 1:
            first, last = mine[0], mine[-1]
            slope = (last["peak"] - first["peak"]) / (last["batch"] - first["batch"]) / MIB
            print(f"  {size:5d}²: {slope:6.1f}")
    if len(args.sizes) > 1:
        print("Peak growth per image pixel beyond the smallest image, at each batch (bytes/pixel):")
    for batch in args.batches:
        mine = [r for r in rows if r["batch"] == batch]
        if len(mine) > 1:
            first, last = mine[0], mine[-1]
            slope = (last["peak"] - first["peak"]) / (last["size"] ** 2 - first["size"] ** 2)
            print(f"  batch {batch:2d}: {slope:5.2f}  (one float32 map = 4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
