"""BiRefNet forward time and peak memory, and the deformable convolution against a per-tap loop.

    python bench/bench_birefnet.py [--size 1024] [--backbones swin_v1_t swin_v1_l] [--device cpu]

Each model runs in a fresh subprocess so its peak resident memory (CPU) is its own. Weights are
random (the speed of a network does not depend on its values). Prints one table; the ratios in
it come from this one run.
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from comfyui_meticulous.inference.device import PRECISIONS
from comfyui_meticulous.models import BiRefNet
from comfyui_meticulous.models.deform_conv import modulated_deform_conv2d


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_model(backbone: str, size: int, device: str, precision: str, repeats: int) -> dict:
    device = torch.device(device)
    model = BiRefNet(backbone).eval().requires_grad_(False).to(device, PRECISIONS[precision])
    x = torch.randn(1, 3, size, size, device=device, dtype=PRECISIONS[precision])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(x)  # warm-up: caches, allocator, kernel selection
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            model(x)
        _sync(device)
    seconds = (time.perf_counter() - started) / repeats
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"backbone": backbone, "size": size, "device": str(device), "precision": precision,
            "seconds": seconds, "peak_bytes": peak, "rss_before_forward": rss_before * 1024}


def naive_deform_conv(x, offset, mask, weight, padding):
    """One grid_sample and one contraction per kernel tap: the straightforward implementation."""
    b, c, h, w = x.shape
    kh, kw = weight.shape[-2:]
    ys = torch.arange(h, dtype=x.dtype).view(h, 1) - padding
    xs = torch.arange(w, dtype=x.dtype).view(1, w) - padding
    out = 0
    for i in range(kh):
        for j in range(kw):
            k = i * kw + j
            y = ys + i + offset[:, 2 * k]
            xx = xs + j + offset[:, 2 * k + 1]
            grid = torch.stack(((2 * xx + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
            taps = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out = out + torch.einsum("oc,bchw->bohw", weight[:, :, i, j], taps * mask[:, k:k + 1])
    return out


def measure_deform_conv(size: int, kernel: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 64, size, size, generator=g)
    weight = torch.randn(256, 64, kernel, kernel, generator=g) / kernel
    offset = 2 * torch.randn(1, 2 * kernel * kernel, size, size, generator=g)
    mask = torch.rand(1, kernel * kernel, size, size, generator=g)
    timings = {}
    for name, fn in (("vectorised", lambda: modulated_deform_conv2d(x, offset, mask, weight, padding=kernel // 2)),
                     ("per_tap_loop", lambda: naive_deform_conv(x, offset, mask, weight, kernel // 2))):
        with torch.inference_mode():
            result = fn()
            started = time.perf_counter()
            for _ in range(repeats):
                fn()
        timings[name] = ((time.perf_counter() - started) / repeats, result)
    diff = (timings["vectorised"][1] - timings["per_tap_loop"][1]).abs().max().item()
    return {"kernel": kernel, "size": size, "vectorised_s": timings["vectorised"][0],
            "per_tap_loop_s": timings["per_tap_loop"][0], "max_abs_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--backbones", nargs="+", default=["swin_v1_t", "swin_v1_l"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one model case, print JSON
    args = parser.parse_args()
    if args.one:
        backbone, precision = args.one.split(",")
        print(json.dumps(measure_model(backbone, args.size, args.device, precision, args.repeats)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    print(f"{'backbone':<10} {'precision':<9} {'size':>5} {'s/image':>8} {'peak MiB':>9}")
    for backbone in args.backbones:
        for precision in args.precisions:
            out = subprocess.run([sys.executable, __file__, "--one", f"{backbone},{precision}",
                                  "--size", str(args.size), "--device", args.device,
                                  "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{backbone:<10} {precision:<9} {args.size:>5} {r['seconds']:>8.2f} {r['peak_bytes'] / 2**20:>9.0f}")
    print("\ndeformable conv, 64 -> 256 channels, one 1024² image's stride-4 map (256²):")
    print(f"{'kernel':>6} {'vectorised s':>12} {'per-tap s':>10} {'speed-up':>8} {'max |diff|':>10}")
    for kernel in (3, 7):
        r = measure_deform_conv(256, kernel, args.repeats)
        print(f"{kernel:>6} {r['vectorised_s']:>12.3f} {r['per_tap_loop_s']:>10.3f} "
              f"{r['per_tap_loop_s'] / r['vectorised_s']:>7.1f}x {r['max_abs_diff']:>10.1e}")


if __name__ == "__main__":
    main()
