"""Command line: ``python -m comfyui_meticulous <command>``.

Commands:
  cut       cut objects out of images: a straight-alpha RGBA PNG and a mask PNG per image
  batch     the same job over a folder or list file, resumable, locally or on a Ray cluster
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
from .checks import MAX_MODEL_SIDE
from .errors import InputError, MeticulousError
from .files.batch import BatchReport, Failure, readable_images, run_each
from .files.images import find_images
from .files.interrupts import Terminated, signals_as_exceptions
from .files.naming import plan_outputs, prepare_folder
from .metrics.cli import add_eval_parser
from .training.cli import add_train_parser
from .progress import bars_wanted, progress_bar
from .weights.cli import add_download_parser, add_models_parser


def _add_cut_parser(subparsers) -> None:
    cut = subparsers.add_parser(
        "cut", help="cut the main object out of images",
        description="Cut the main object out of each image: writes NAME.png (RGBA, straight alpha) and "
                    "NAME_mask.png into OUTDIR. Inputs are never modified and existing files are never "
                    "replaced unless --overwrite; when two inputs would share a name the later one becomes "
                    "NAME_ext.png (a.jpg -> a.png, a.png -> a_png.png). A file that fails is reported and "
                    "the others go on. Exit status: 0 all done, 1 some files failed, 2 nothing done "
                    "(bad arguments), 130 interrupted, 143 terminated.")
    cut.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    cut.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    source = cut.add_mutually_exclusive_group()
    source.add_argument("--weights", type=Path, metavar="FILE",
                        help="a .safetensors file: published BiRefNet/BASNet weights or a network trained with "
                             "`train` that predicts on its own (GSN, BASNet, MeticulousNet L)")
    source.add_argument("--model", metavar="ID",
                        help="model id from the catalogue (default: birefnet on a GPU, birefnet-lite on the "
                             "CPU; see `python -m comfyui_meticulous models`)")
    cut.add_argument("--resolution", type=int, metavar="N",
                     help=f"run the model at N×N (rounded to a multiple of 32, at most {MAX_MODEL_SIDE}) "
                          f"instead of its native size")
    cut.add_argument("--keep-aspect", action="store_true",
                     help="keep the image's aspect ratio at the model's pixel count instead of squashing to a square")
    cut.add_argument("--hires", action="store_true",
                     help="refine the uncertain band at full image resolution (for 2K-8K images)")
    cut.add_argument("--max-patches", type=int, metavar="N",
                     help="with --hires: refine at most N windows per image, most uncertain first")
    cut.add_argument("--respect-alpha", action="store_true",
                     help="keep the inputs' own transparency: output alpha = model alpha × input alpha, so "
                          "transparent pixels stay transparent (default: transparent inputs are flattened "
                          "onto white, as a viewer shows them)")
    cut.add_argument("--overwrite", action="store_true", help="replace outputs that already exist in OUTDIR")
    cut.add_argument("--allow-input-folder", action="store_true",
                     help="allow OUTDIR to hold input images (they are never overwritten: outputs whose "
                          "names they hold get NAME_ext.png)")
    cut.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    cut.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                     help="auto: bf16/fp16 on CUDA GPUs, fp32 on CPU and MPS")
    cut.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bars (they are only drawn when stderr is a terminal anyway)")
    cut.set_defaults(func=run_cut)


def run_cut(args: argparse.Namespace) -> int:
    """Check everything that can be checked without the model, load it, cut each file out."""
    from .inference.cutout import CutOptions, cut_one
    from .inference.device import default_model, pick_device, pick_dtype
    from .models import load_model

    options = CutOptions(resolution=args.resolution, keep_aspect=args.keep_aspect, hires=args.hires,
                         max_patches=args.max_patches, respect_alpha=args.respect_alpha, overwrite=args.overwrite)
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.precision)
    if args.weights is not None and args.weights.is_dir():
        raise InputError(f"--weights {args.weights} is a folder; give the .safetensors file inside it")
    if args.weights is not None and not args.weights.is_file():
        raise InputError(f"weights file not found: {args.weights}")
    paths = find_images(args.inputs)
    plans = {plan.source: plan for plan in plan_outputs(paths, args.output, overwrite=args.overwrite,
                                                        allow_input_folder=args.allow_input_folder)}
    prepare_folder(args.output)
    bars = bars_wanted(args.quiet)
    report = BatchReport()
    with progress_bar("images", enabled=bars, unit="image") as images_bar:
        def failed(failure: Failure) -> None:
            # The reader's messages name the file already.
            reason = failure.reason if failure.name in failure.reason else f"{failure.name}: {failure.reason}"
            images_bar.write(f"failed: {reason}")

        # Headers first: unreadable files and sizes beyond the limit are reported before the
        # model loads, and a run with nothing readable stops there.
        readable = readable_images(paths, report, failed if len(paths) > 1 else None)
        if not readable:
            raise InputError(report.failed[0].reason if len(paths) == 1
                             else f"none of the {len(paths)} images can be read")
        model = load_model(args.weights or args.model or default_model(device), device=device, dtype=dtype,
                           role="coarse")
        finished = 0

        def job(path: Path) -> None:
            images_bar.describe(path.name)
            started = time.perf_counter()
            cut_one(model, plans[path], options, progress=windows_bar if args.hires else None)
            if not bars and not args.quiet:
                images_bar.write(f"[{finished + 1}/{len(readable)}] {path} -> {plans[path].rgba} "
                                 f"({time.perf_counter() - started:.1f}s)")

        def advance() -> None:
            nonlocal finished
            finished += 1
            images_bar(finished, len(readable))

        images_bar(0, len(readable))
        with progress_bar("high-res windows", enabled=bars and args.hires, unit="window",
                          position=1) as windows_bar:
            run_each(readable, job, name=str, report=report, on_failure=failed, on_item=advance)
    print(report.summary(), file=sys.stderr)
    return report.exit_status


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
    """Run a command; user errors end in one ``error:`` line on stderr and exit status 2,
    Ctrl-C in 130 and SIGTERM/SIGHUP in 128 + the signal number, with no traceback."""
    try:
        with signals_as_exceptions():
            args = build_parser().parse_args(argv)
            return args.func(args)
    except MeticulousError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; finished files are complete, unfinished ones were removed", file=sys.stderr)
        return 130
    except Terminated as err:
        print(f"error: {err}; finished files are complete, unfinished ones were removed", file=sys.stderr)
        return 128 + err.signum
