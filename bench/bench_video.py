"""Frames per second and peak memory of video matting: chunked vs one frame at a time.

    python bench/bench_video.py --frames 300            # 1080p, CPU (and CUDA when present)
    python bench/bench_video.py --frames 30 --device cpu

Modes, each measured in its own process so peak memory is not shared between them:
  batched          matte_video with the automatic chunk size
  batched+smooth   the same with temporal_smoothing 0.5 (the stabiliser's cost)
  per-frame        matte_video with batch_size 1
  naive            a per-frame loop that keeps a list of full-size results and concatenates
                   them at the end, as single-image nodes do when fed a video

Host memory is the peak resident size above what the process held before the run (input
frames included there); device memory is PyTorch's peak allocation on CUDA. "cpu ms/frame" is
the process's CPU time (all threads), steadier than fps on a shared machine.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from torch import nn

from comfyui_meticulous.inference import predict_logits
from comfyui_meticulous.video import matte_video, model_runner
from comfyui_meticulous.models.base import SegmentationModel

MODES = ("batched", "batched+smooth", "per-frame", "naive")


class TinyNet(SegmentationModel):
    """A small encoder-decoder with the model protocol, native 512x512."""

    native_resolution = (512, 512)
    size_multiple = 32
    input_normalisation = "imagenet"

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(64, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.encoder(x))
        return nn.functional.interpolate(logits, size=x.shape[-2:], mode="bilinear",
                                         align_corners=False)


def naive(model: nn.Module, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    masks = []
    for frame in frames:
        probabilities = predict_logits(model, frame[None]).probabilities()
        masks.append(probabilities.cpu())
    masks = torch.cat(masks)
    return masks, torch.cat([frames, masks[..., None]], dim=-1)


def _resident_peak() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_resident_peak() -> int:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _resident_peak()


def worker(mode: str, count: int, device: str) -> dict:
    torch.manual_seed(0)
    model = TinyNet().to(device).eval()
    # A textured still scene with noise, so the stabiliser has work to do.
    frames = (torch.rand(1, 1080, 1920, 3) + 0.02 * torch.randn(count, 1080, 1920, 3)).clamp_(0, 1)
    run = model_runner(model)
    matte_video(frames[:2], run, device=device, batch_size=2)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = _reset_resident_peak()
    start, cpu_start = time.perf_counter(), time.process_time()
    batch_size = None
    if mode == "naive":
        with torch.inference_mode():
            naive(model, frames)
    else:
        chunks = []
        matte_video(frames, run, device=device, batch_size=1 if mode == "per-frame" else 0,
                    temporal_smoothing=0.5 if mode == "batched+smooth" else 0.0,
                    progress=lambda done, total: chunks.append(done))
        batch_size = chunks[0] if len(chunks) == 1 else chunks[1] - chunks[0]
    if device == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return {"mode": mode, "device": device, "frames": count, "seconds": seconds,
            "fps": count / seconds, "cpu_ms_per_frame": 1000 * cpu_seconds / count,
            "batch_size": batch_size,
            "host_peak_mb": (_resident_peak() - baseline) / 2**20,
            "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--device", choices=["cpu", "cuda"], action="append",
                        help="repeatable; default: cpu, plus cuda when available")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.frames, args.worker[1])))
        return
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    outputs_mb = args.frames * 1080 * 1920 * 5 * 4 / 2**20
    print(f"{args.frames} frames 1920x1080, TinyNet at 512x512; outputs (MASK + RGBA) "
          f"{outputs_mb:.0f} MB, input {args.frames * 1080 * 1920 * 3 * 4 / 2**20:.0f} MB")
    for device in devices:
        results = {}
        for mode in args.modes:
            completed = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--frames", str(args.frames),
                 "--threads", str(torch.get_num_threads()), "--worker", mode, device],
                capture_output=True, text=True, check=True)
            results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
        reference = results.get("per-frame")
        print(f"\n{device} ({results[args.modes[0]]['threads']} threads)")
        print(f"{'mode':16}{'batch':>6}{'fps':>9}{'x fps':>7}{'cpu ms/frame':>14}{'host MB':>10}"
              f"{'device MB':>11}")
        for mode, r in results.items():
            ratio = f"{r['fps'] / reference['fps']:.2f}" if reference else "-"
            device_mb = "-" if r["device_peak_mb"] is None else f"{r['device_peak_mb']:.0f}"
            print(f"{mode:16}{r['batch_size'] or 1:>6}{r['fps']:>9.2f}{ratio:>7}"
                  f"{r['cpu_ms_per_frame']:>14.0f}{r['host_peak_mb']:>10.0f}{device_mb:>11}")


if __name__ == "__main__":
    main()
