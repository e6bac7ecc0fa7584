"""What bf16 costs in accuracy: BiRefNet on the parity cases, and the high-resolution pipeline's mBA.

    python bench/bench_bf16_accuracy.py [--scene-size 2048]

1. Every BiRefNet parity case in ``../shared/reference/birefnet`` (or ``$METICULOUS_SHARED``):
   the official code's fp32 output against ours in fp32 and in bf16 (weights and activations),
   as probabilities: largest and mean absolute difference, and the share of pixels whose 0.5
   threshold flips.
2. The synthetic scene of ``tests/test_highres_quality.py`` (a stand-in model that reads the
   object's coverage back from the image, so only the pipeline's arithmetic differs): mBA, MQ
   and body accuracy of the one-shot and high-resolution results, fp32 against bf16.
"""

import argparse
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from fileimport import load_module  # this folder's helper: the scripts run as files

from comfyui_meticulous.highres import HighResOptions, segment_highres
from comfyui_meticulous.metrics import mba_mq
from comfyui_meticulous.models import build_from_state_dict
from comfyui_meticulous.training.synthetic import CoverageModel

REPO = Path(__file__).resolve().parent.parent
REFERENCE = Path(os.environ.get("METICULOUS_SHARED", REPO.parent / "shared")) / "reference"


def parity_cases() -> None:
    # The suite's own weight generator (the shared folder adds the larger cases).
    weights = load_module("parity_fixtures", REPO / "tests" / "parity_fixtures.py")
    print(f"{'case':<34} {'prec':<5} {'max |dp|':>9} {'mean |dp|':>10} {'flipped':>8}")
    for meta_path in sorted((REFERENCE / "birefnet").glob("birefnet_*.json")):
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(meta_path.with_suffix(".safetensors")))
        state_dict = weights.deterministic_state_dict(weights.load_spec(REFERENCE / "birefnet" / meta["manifest"]))
        expected = torch.sigmoid(tensors["output"].double())
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            model = build_from_state_dict(state_dict).to(dtype)
            with torch.inference_mode():
                prob = torch.sigmoid(model(tensors["input"].to(dtype)).double())
            diff = (prob - expected).abs()
            flipped = ((prob > 0.5) != (expected > 0.5)).double().mean().item()
            print(f"{meta['case']:<34} {name:<5} {diff.max().item():>9.2e} {diff.mean().item():>10.2e} "
                  f"{flipped:>8.2%}")


def synthetic_scene(size: int) -> None:
    quality = load_module("test_highres_quality", REPO / "tests" / "test_highres_quality.py")
    body_accuracy, draw_scene = quality.body_accuracy, quality.draw_scene

    gt_cover = draw_scene(size, 0)
    gt = gt_cover > 0.5
    images = torch.from_numpy(gt_cover)[None, :, :, None].expand(1, size, size, 3)
    print(f"\nsynthetic scene {size}², stand-in model at {size // 4}², default HighResOptions")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        result = segment_highres(CoverageModel(size // 4).to(dtype), images, HighResOptions())
        for label, prediction in (("one-shot", result.coarse), ("highres", result.prediction)):
            mask = (prediction.probabilities()[0] > 0.5).numpy()
            mba, mq = mba_mq(mask, gt)
            print(f"  {name} {label:<9} mBA {mba:.4f}  MQ {mq:.4f}  body {body_accuracy(mask, gt):.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene-size", type=int, default=2048)
    args = parser.parse_args()
    parity_cases()
    synthetic_scene(args.scene_size)


if __name__ == "__main__":
    main()
