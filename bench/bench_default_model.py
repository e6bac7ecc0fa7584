"""Seconds per photo of the catalogue models `cut` may pick by default, the way `cut` runs them.

    python bench/bench_default_model.py [--models birefnet birefnet-lite] [--device cpu]
                                        [--repeats 2] [--image samples/cat.jpg]

Each model runs in a fresh subprocess at its catalogue resolution, through ``predict`` (resize,
normalise, forward, resize back) on one photo, once to warm up and then ``--repeats`` times.
The weights are regenerated from the official key manifests in ``tests/fixtures`` (no download:
a network's speed does not depend on its values, and deterministic values keep runs alike).
Prints wall and process CPU seconds per photo (the CPU time is steadier on a busy machine) and
the peak resident memory.
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from fileimport import load_module  # this folder's helper: the scripts run as files

REPO = Path(__file__).resolve().parents[1]


def measure(model_id: str, device: str, repeats: int, image_path: Path) -> dict:
    # The manifests' weight generator lives with the tests.
    fixtures = load_module("parity_fixtures", REPO / "tests" / "parity_fixtures.py")
    REFERENCE, deterministic_state_dict, load_spec = (fixtures.REFERENCE, fixtures.deterministic_state_dict,
                                                      fixtures.load_spec)

    from comfyui_meticulous.inference import predict
    from comfyui_meticulous.files.images import read_image
    from comfyui_meticulous.models import load_model
    from comfyui_meticulous.weights import get_entry

    entry = get_entry(model_id)
    spec = load_spec(REFERENCE / "birefnet" / f"keys_{entry.backbone}.tsv")
    model = load_model(deterministic_state_dict(spec), device=device)
    entry.configure(model)
    image = read_image(image_path).flattened()
    predict(model, image)  # warm-up: allocator, kernel selection
    walls, cpus = [], []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        predict(model, image)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"model": model_id, "backbone": entry.backbone, "resolution": entry.resolution,
            "wall_s": walls, "cpu_s": cpus, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["birefnet", "birefnet-lite"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--image", type=Path, default=REPO / "samples" / "cat.jpg")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.device, args.repeats, args.image)))
        return

    print(f"{time.strftime('%Y-%m-%d', time.gmtime())}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, image {args.image.name}")
    print(f"{'model':<15} {'backbone':<10} {'size':>9} {'wall s/photo':>13} {'CPU s/photo':>12} {'peak MiB':>9}")
    for model_id in args.models:
        out = subprocess.run([sys.executable, __file__, "--one", model_id, "--device", args.device,
                              "--repeats", str(args.repeats), "--image", str(args.image)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        size = "x".join(map(str, r["resolution"]))
        walls = ", ".join(f"{s:.1f}" for s in r["wall_s"])
        print(f"{model_id:<15} {r['backbone']:<10} {size:>9} {statistics.median(r['wall_s']):>13.1f} "
              f"{statistics.median(r['cpu_s']):>12.1f} {r['peak_rss_mib']:>9.0f}   (runs: {walls})")


if __name__ == "__main__":
    main()
