"""Does a learned fusion (HRSOD's GLFN) beat the training-free band fusion? Held-out synthetic
scenes, mBA and MQ.

The scenes (``training.synthetic``) have hair-like strands, thin lines and holes over textured
backgrounds. Both fusions start from the same global and local predictions, made by the
high-resolution pipeline with a stand-in segmenter that is perfect except for its input
resolution: it is shown an image that encodes each pixel's true object coverage and decodes it,
so its only errors are those of resizing (the coarse pass squeezes the whole image to
``native``², each window shows its crop at ``zoom``).

- one_shot: the coarse pass alone.
- rule: the pipeline's training-free fusion (:class:`~comfyui_meticulous.highres.BandFusion`).
- learned: :class:`~comfyui_meticulous.highres.learned.LearnedFusion` with the band fusion as its
  base, i.e. a GLFN run at full resolution on the rule's combined map and the *colour* image,
  trained here on other scenes (random crops, rule outputs precomputed, cross-entropy loss, CPU).
  ``paper`` is the released GLFN; ``residual`` has the same layers but adds their output to the
  combined map's logit (``GLFN(residual=True)``), so it starts as the identity.

``zoom`` 0.5 has the windows see the image at half scale, as when an 8K photo is refined with a
1024² model. At ``zoom`` 1 the stand-in's windows are exact and the rule already scores mBA 1.0 on
these scenes, leaving nothing to learn.

    python bench/train_glfn_vs_rule.py                  # a few minutes on 2 CPU cores
    python bench/train_glfn_vs_rule.py --steps 600 --json results.json
"""

import argparse
import json
import sys
import tempfile
import time

import numpy as np
import torch

from comfyui_meticulous.highres import HighResOptions, segment_highres
from comfyui_meticulous.highres.learned import refine_prediction
from comfyui_meticulous.inference import Prediction
from comfyui_meticulous.metrics import mba_mq
from comfyui_meticulous.training import TensorPairs, Trainer, TrainOptions
from comfyui_meticulous.training.synthetic import CoverageModel, synthetic_pairs


def pipeline(masks: torch.Tensor, native: int, zoom: float):
    """Coarse and rule-fused predictions ``[N,1,S,S]`` logits for scenes of coverage ``masks``."""
    model = CoverageModel(native)
    coarse, rule = [], []
    for mask in masks:
        coverage_image = mask[0][None, :, :, None].expand(1, *mask.shape[-2:], 3)
        result = segment_highres(model, coverage_image, HighResOptions(zoom=zoom))
        coarse.append(result.coarse.logits_at())
        rule.append(result.prediction.logits)
    return torch.cat(coarse), torch.cat(rule)


def scores(logits: torch.Tensor, masks: torch.Tensor) -> dict:
    values = [mba_mq((l[0] > 0).numpy(), (m[0] > 0.5).numpy()) for l, m in zip(logits, masks)]
    return {"mBA": float(np.mean([v[0] for v in values])), "MQ": float(np.mean([v[1] for v in values]))}


VARIANTS = {"paper": {}, "residual": {"residual": True}}


def train_glfn(args, images, masks, rule, config: dict) -> tuple[torch.nn.Module, list[float], float]:
    started = time.perf_counter()
    train = TensorPairs(images, masks, "synthetic scenes with strands", coarse=rule)
    options = TrainOptions(block="glfn", config=config, size=args.size, crop=args.crop, batch_size=args.batch_size,
                           steps=args.steps, lr=args.lr, seed=args.seed, val_every=10 ** 9, checkpoint_every=10 ** 9)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(options, train, out)
        losses = trainer.run()
    return trainer.model.eval(), losses, time.perf_counter() - started


def experiment(args, zoom: float) -> dict:
    images, masks = synthetic_pairs(args.train, args.size, seed=0)
    _, rule = pipeline(masks, args.native, zoom)
    held_images, held_masks = synthetic_pairs(args.test, args.size, seed=10_000)
    held_coarse, held_rule = pipeline(held_masks, args.native, zoom)
    result = {"zoom": zoom, "one_shot": scores(held_coarse, held_masks), "rule": scores(held_rule, held_masks)}
    for variant in args.variants:
        glfn, losses, seconds = train_glfn(args, images, masks, rule, VARIANTS[variant])
        learned = torch.cat([
            refine_prediction(glfn, image.permute(1, 2, 0)[None], Prediction(logits[None], (args.size, args.size))).logits
            for image, logits in zip(held_images, held_rule)])
        result[f"learned_{variant}"] = {**scores(learned, held_masks), "loss_first": losses[0],
                                        "loss_last": float(np.mean(losses[-20:])), "train_seconds": seconds}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=768, help="scene side (default: %(default)s)")
    parser.add_argument("--native", type=int, default=192, help="stand-in model input side (default: %(default)s)")
    parser.add_argument("--zoom", type=float, nargs="+", default=[0.5])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="paper: the released GLFN; residual: the same layers predicting a correction "
                             "added to the combined map's logit")
    parser.add_argument("--train", type=int, default=8, help="training scenes (default: %(default)s)")
    parser.add_argument("--test", type=int, default=8, help="held-out scenes (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for zoom in args.zoom:
        result = experiment(args, zoom)
        results.append(result)
        print(f"zoom {zoom}, {args.test} held-out {args.size}² scenes:", file=sys.stderr)
        for name, figures in result.items():
            if name == "zoom":
                continue
            line = f"  {name:17s} mBA {figures['mBA']:.4f}  MQ {figures['MQ']:.4f}"
            if "loss_first" in figures:
                line += (f"  (trained {figures['train_seconds']:.0f} s, loss {figures['loss_first']:.3f} -> "
                         f"{figures['loss_last']:.3f})")
            print(line, file=sys.stderr)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"settings": vars(args), "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
