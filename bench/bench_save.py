"""Peak memory of saving one cut-out (RGBA PNG + mask PNG), e.g. 12000×9000.

Each case runs in a fresh process. The colour ``[H,W,3]`` and alpha ``[H,W]`` float32 tensors
are made first; the peak is the growth of the resident set's high-water mark from there
(``/proc/self/clear_refs`` resets it; large allocations are forced onto ``mmap`` so freed
memory goes back and cannot hide a later peak). It is printed in MiB and as a multiple of the
image's RGBA size (4·H·W bytes), the bound the writer is built for (1.5×).

``streamed`` is :func:`comfyui_meticulous.files.images.write_cutout`; ``whole`` converts the
whole image at once (float concatenation, then uint8), for comparison.

    python bench/bench_save.py                       # 12000 x 9000, both methods
    python bench/bench_save.py --width 4000 --height 3000 --methods streamed
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from procmem import MIB, status_kib  # this folder's helper: the scripts run as files



def _save_whole(folder: Path, rgb, alpha) -> None:
    import torch
    from PIL import Image
    rgba = (torch.cat([rgb, alpha.unsqueeze(-1)], dim=-1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(rgba, mode="RGBA").save(folder / "cut.png")
    mask = (alpha.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(mask, mode="L").save(folder / "cut_mask.png")


def run_case(args) -> dict:
    import torch

    from comfyui_meticulous.files.images import write_cutout

    generator = torch.Generator().manual_seed(0)
    # Smooth content (a gradient with noise) compresses like a photo rather than like noise.
    rgb = torch.rand(args.height, args.width, 3, generator=generator).mul_(0.1)
    rgb += torch.linspace(0, 0.9, args.width).view(1, -1, 1)
    alpha = torch.rand(args.height, args.width, generator=generator)
    with tempfile.TemporaryDirectory() as folder:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        base = status_kib("VmRSS") * 1024
        started = time.perf_counter()
        if args.method == "streamed":
            write_cutout(Path(folder) / "cut.png", Path(folder) / "cut_mask.png", rgb, alpha)
        else:
            _save_whole(Path(folder), rgb, alpha)
        seconds = time.perf_counter() - started
        peak = status_kib("VmHWM") * 1024 - base
        size = sum(p.stat().st_size for p in Path(folder).iterdir())
    rgba = 4 * args.width * args.height
    return {"method": args.method, "width": args.width, "height": args.height, "seconds": round(seconds, 1),
            "peak_mib": round(peak / MIB), "rgba_mib": round(rgba / MIB), "ratio": round(peak / rgba, 2),
            "files_mib": round(size / MIB)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=12000)
    parser.add_argument("--height", type=int, default=9000)
    parser.add_argument("--methods", nargs="+", default=["streamed", "whole"], choices=["streamed", "whole"])
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(run_case(args)))
        return 0
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    for method in args.methods:
        out = subprocess.run([sys.executable, __file__, "--width", str(args.width), "--height", str(args.height),
                              "--method", method], env=env, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout)
        print(f"{method:9s} {result['width']}x{result['height']}: peak +{result['peak_mib']} MiB = "
              f"{result['ratio']}x the RGBA size ({result['rgba_mib']} MiB), {result['seconds']} s, "
              f"files {result['files_mib']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
