"""BiRefNet forward time and peak memory: this tree against an earlier revision, and across precisions.

    python bench/bench_birefnet.py [--size 1024] [--backbones swin_v1_t swin_v1_l] [--rounds 3]
                                   [--baseline 32e3857] [--precisions fp32 bf16] [--device cpu]

The official BiRefNet code is not run here. Its times come from one measurement taken side by
side with it on this class of machine (2-core x86-64, torch 2.13 CPU, 2 threads, fp32, 1024²):
revision ``32e3857`` of this package ran Swin-T in 0.81x and Swin-L in 0.86-0.94x (0.90 taken)
of the official time, with 0.4 GB (Swin-T) and 1.0 GB (Swin-L) more peak memory. So this
script times the current tree against ``--baseline`` (extracted with ``git archive`` into a
temporary folder and imported as ``comfyui_meticulous_baseline``) in the same run, alternating
the two, and converts:

    ours / official = (ours / baseline) * OFFICIAL_FACTOR[backbone]
    official peak   = baseline peak - OFFICIAL_EXTRA_PEAK[backbone]

Each measurement runs in a fresh subprocess (so its peak resident memory is its own: weights,
activations and interpreter), does one warm-up forward and keeps the fastest of ``--repeats``
timed ones; over ``--rounds`` the minimum per case is reported. Weights are random (the speed of
a network does not depend on its values).
"""

import argparse
import importlib
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from fileimport import load_module  # this folder's helper: the scripts run as files

from comfyui_meticulous.inference.device import cpu_has_native_bf16

REPO = Path(__file__).resolve().parent.parent
BASELINE_PACKAGE = "comfyui_meticulous_baseline"
# Revision 32e3857 against the official code, fp32, 1024², 2 threads, alternated runs.
OFFICIAL_FACTOR = {"swin_v1_t": 0.81, "swin_v1_l": 0.90}
OFFICIAL_EXTRA_PEAK = {"swin_v1_t": 0.4 * 2**30, "swin_v1_l": 1.0 * 2**30}
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(package: str, backbone: str, size: int, device: str, precision: str, repeats: int) -> dict:
    """Fastest of ``repeats`` forwards of one model built from ``package``, after a warm-up."""
    device = torch.device(device)
    dtype = PRECISIONS[precision]
    BiRefNet = importlib.import_module(f"{package}.models").BiRefNet
    model = BiRefNet(backbone).eval().requires_grad_(False).to(device, dtype)
    x = torch.randn(1, 3, size, size, device=device, dtype=dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    best = best_cpu = float("inf")
    with torch.inference_mode():
        model(x)  # warm-up: allocator, kernel selection
        for _ in range(repeats):
            _sync(device)
            started, started_cpu = time.perf_counter(), time.process_time()
            model(x)
            _sync(device)
            best = min(best, time.perf_counter() - started)
            best_cpu = min(best_cpu, time.process_time() - started_cpu)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"seconds": best, "cpu_seconds": best_cpu, "peak_bytes": peak}


def extract_baseline(revision: str, into: Path) -> None:
    """``git archive revision`` of this repository as the package ``comfyui_meticulous_baseline``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision],
                             capture_output=True, check=True).stdout
    target = into / BASELINE_PACKAGE
    target.mkdir()
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(target, filter="data")


def run_case(args, impl: str, backbone: str, precision: str, baseline_dir: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--one", f"{impl},{backbone},{precision}", "--size", str(args.size),
         "--device", args.device, "--repeats", str(args.repeats), "--baseline-dir", str(baseline_dir)],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--backbones", nargs="+", default=["swin_v1_t", "swin_v1_l"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        help="precisions of the current tree; the baseline comparison is always fp32")
    parser.add_argument("--baseline", default="32e3857", help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of baseline and current tree")
    parser.add_argument("--repeats", type=int, default=1, help="timed forwards per subprocess")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: impl,backbone,precision -> JSON
    parser.add_argument("--baseline-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        impl, backbone, precision = args.one.split(",")
        if impl == "baseline":
            load_module(BASELINE_PACKAGE, Path(args.baseline_dir) / BASELINE_PACKAGE)
        package = BASELINE_PACKAGE if impl == "baseline" else "comfyui_meticulous"
        print(json.dumps(measure(package, backbone, args.size, args.device, precision, args.repeats)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {args.size}², "
          f"baseline {args.baseline}, {args.rounds} alternated rounds, minimum kept, "
          f"native CPU bf16: {'yes' if cpu_has_native_bf16() else 'no'}")
    print("official = baseline time / factor, official peak = baseline peak - extra; factor and extra "
          "measured against the official code on this machine class (see bench/bench_birefnet.py)")
    with tempfile.TemporaryDirectory() as tmp:
        extract_baseline(args.baseline, Path(tmp))
        best: dict[tuple, dict] = {}
        cases = [(impl, backbone, "fp32") for backbone in args.backbones for impl in ("baseline", "ours")]
        cases += [("ours", backbone, p) for backbone in args.backbones for p in args.precisions if p != "fp32"]
        for round_ in range(args.rounds):
            for case in cases:
                r = run_case(args, *case, Path(tmp))
                print(f"  round {round_ + 1} {','.join(case)}: {r['seconds']:.2f} s "
                      f"(CPU {r['cpu_seconds']:.2f} s), peak {r['peak_bytes'] / 2**20:.0f} MiB", flush=True)
                kept = best.setdefault(case, r)
                for key in r:
                    kept[key] = min(kept[key], r[key])

    print(f"\n{'backbone':<10} {'prec':<5} {'ours s':>7} {'base s':>7} {'ours/base':>9} {'≈official s':>11} "
          f"{'ours/official':>13} {'ours MiB':>9} {'≈official MiB':>13}")
    for backbone in args.backbones:
        ours, base = best[("ours", backbone, "fp32")], best[("baseline", backbone, "fp32")]
        factor = OFFICIAL_FACTOR.get(backbone)
        ratio = ours["seconds"] / base["seconds"]
        official_s = f"{base['seconds'] / factor:>11.2f}" if factor else f"{'?':>11}"
        official_ratio = f"{ratio * factor:>12.2f}x" if factor else f"{'?':>13}"
        official_mib = (f"{(base['peak_bytes'] - OFFICIAL_EXTRA_PEAK[backbone]) / 2**20:>13.0f}" if factor
                        else f"{'?':>13}")
        print(f"{backbone:<10} {'fp32':<5} {ours['seconds']:>7.2f} {base['seconds']:>7.2f} {ratio:>8.2f}x "
              f"{official_s} {official_ratio} {ours['peak_bytes'] / 2**20:>9.0f} {official_mib}")
        for precision in args.precisions:
            if precision == "fp32":
                continue
            low = best[("ours", backbone, precision)]
            print(f"{backbone:<10} {precision:<5} {low['seconds']:>7.2f} {'':>7} "
                  f"{low['seconds'] / ours['seconds']:>8.2f}x of ours fp32 {'':>13} {low['peak_bytes'] / 2**20:>9.0f}")


if __name__ == "__main__":
    main()
