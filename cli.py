"""Command line: ``python -m comfyui_meticulous <command>``.

Commands:
  cut       cut objects out of images: a straight-alpha RGBA PNG and a mask PNG per image
  models    list the model catalogue and where each file is installed
  download  fetch models from the Hugging Face Hub, verified by sha256
  eval      score predicted masks against ground truth (MAE, F, S, E, IoU, mBA, MQ, HCE, ...)
  train     train a learned block (GLFN, HierPR, RefineMask, GSN/LRN, BASNet) on image/mask folders
"""

import argparse
import sys
import time
from pathlib import Path

from .batch.cli import add_batch_parser
from .errors import MeticulousError
from .metrics.cli import add_eval_parser
from .training.cli import add_train_parser
from .weights.cli import add_download_parser, add_models_parser

DEFAULT_MODEL = "birefnet"


def _add_cut_parser(subparsers) -> None:
    cut = subparsers.add_parser("cut", help="cut the main object out of images",
                                description="Cut the main object out of each image: writes NAME.png "
                                            "(RGBA, straight alpha) and NAME_mask.png into OUTDIR.")
    cut.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    cut.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    source = cut.add_mutually_exclusive_group()
    source.add_argument("--weights", type=Path, metavar="FILE", help="a BiRefNet or BASNet .safetensors file")
    source.add_argument("--model", default=DEFAULT_MODEL, metavar="ID",
                        help=f"model id from the catalogue (default: {DEFAULT_MODEL}; "
                             f"see `python -m comfyui_meticulous models`)")
    cut.add_argument("--resolution", type=int, metavar="N",
                     help="run the model at N×N (multiple of 32) instead of its native size")
    cut.add_argument("--keep-aspect", action="store_true",
                     help="keep the image's aspect ratio at the model's pixel count instead of squashing to a square")
    cut.add_argument("--hires", action="store_true",
                     help="refine the uncertain band at full image resolution (for 2K-8K images)")
    cut.add_argument("--max-patches", type=int, metavar="N",
                     help="with --hires: refine at most N windows per image, most uncertain first")
    cut.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    cut.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                     help="auto: bf16/fp16 on CUDA GPUs, fp32 on CPU and MPS")
    cut.set_defaults(func=run_cut)


def run_cut(args: argparse.Namespace) -> int:
    from .highres import HighResOptions, segment_highres
    from .inference import predict
    from .inference.device import pick_device, pick_dtype
    from .inference.files import find_images, load_image, save_mask, save_rgba
    from .models import load_model

    paths = find_images(args.inputs)
    device = pick_device(args.device)
    model = load_model(args.weights or args.model, device=device, dtype=pick_dtype(device, args.precision))
    args.output.mkdir(parents=True, exist_ok=True)
    for index, path in enumerate(paths, start=1):
        started = time.perf_counter()
        image = load_image(path)
        if args.hires:
            options = HighResOptions(max_patches=args.max_patches, coarse_resolution=args.resolution)
            alpha = segment_highres(model, image, options).prediction.probabilities()[0].cpu()
        else:
            alpha = predict(model, image, resolution=args.resolution, keep_aspect=args.keep_aspect)[0]
        save_rgba(args.output / f"{path.stem}.png", image[0], alpha)
        save_mask(args.output / f"{path.stem}_mask.png", alpha)
        print(f"[{index}/{len(paths)}] {path.name} -> {path.stem}.png "
              f"({time.perf_counter() - started:.1f}s)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comfyui_meticulous",
                                     description="Meticulous high-resolution segmentation and matting.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_cut_parser(subparsers)
    add_models_parser(subparsers)
    add_download_parser(subparsers)
    add_eval_parser(subparsers)
    add_train_parser(subparsers)
    add_batch_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MeticulousError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
