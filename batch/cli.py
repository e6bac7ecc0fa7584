"""The ``batch`` command: ``cut`` over a folder or a list file, locally or on a Ray cluster."""

import argparse
import sys
from pathlib import Path

DEFAULT_MODEL = "birefnet"
FAILURES_SHOWN = 10  # the rest are in the report file


def add_batch_parser(subparsers) -> None:
    batch = subparsers.add_parser(
        "batch", help="cut out a whole folder or list of images, resumably, locally or on a Ray cluster",
        description="Cut the main object out of every input: writes NAME.png (RGBA, straight alpha) and "
                    "NAME_mask.png into OUTDIR, skipping inputs whose two files already exist, and "
                    "OUTDIR/batch_report.json. Exit status 1 if any input failed.")
    batch.add_argument("input", metavar="INPUT",
                       help="a folder of images, an image, or a list file with one path or URI per line")
    batch.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR",
                       help="output folder (on a cluster: a folder every worker sees)")
    source = batch.add_mutually_exclusive_group()
    source.add_argument("--weights", type=Path, metavar="FILE", help="a BiRefNet or BASNet .safetensors file")
    source.add_argument("--model", default=DEFAULT_MODEL, metavar="ID",
                        help=f"model id from the catalogue (default: {DEFAULT_MODEL})")
    batch.add_argument("--resolution", type=int, metavar="N",
                       help="run the model at N×N (multiple of 32) instead of its native size")
    batch.add_argument("--keep-aspect", action="store_true",
                       help="keep the image's aspect ratio at the model's pixel count")
    batch.add_argument("--hires", action="store_true",
                       help="refine the uncertain band at full image resolution (for 2K-8K images)")
    batch.add_argument("--max-patches", type=int, metavar="N", help="with --hires: at most N windows per image")
    batch.add_argument("--respect-alpha", action="store_true",
                       help="keep a transparent input's own transparency (output alpha = model alpha × input "
                            "alpha); without it transparent inputs are flattened onto white first")
    batch.add_argument("--device", default="auto",
                       help="local engine, or Ray workers without GPUs: auto, cpu, cuda, mps (default: auto)")
    batch.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                       help="auto: bf16/fp16 on CUDA GPUs, fp32 on CPU and MPS")
    batch.add_argument("--batch-size", type=int, default=0, metavar="N",
                       help="images per model pass (same-size images only); 0: 1 on CPU, 4 on GPU")
    batch.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: this process; ray: a Ray Data pipeline (needs the [distributed] extra)")
    batch.add_argument("--address", metavar="ADDR",
                       help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray started for the run)")
    batch.add_argument("--num-gpus-per-worker", type=float, default=0.0, metavar="F",
                       help="GPUs per Ray actor (0.5: two actors share a GPU; 0: CPU actors)")
    batch.add_argument("--workers", type=int, metavar="N",
                       help="most Ray actors (default: cluster GPUs / --num-gpus-per-worker, or CPUs - 1)")
    batch.add_argument("--frames", action="store_true",
                       help="INPUT is a folder of one clip's frames (sorted by name): matte them with "
                            "temporal smoothing, in chunks that may run on different workers")
    batch.add_argument("--temporal-smoothing", type=float, default=0.5, metavar="S",
                       help="with --frames: 0..1, 0 = every frame on its own (default: 0.5)")
    batch.add_argument("--chunk-frames", type=int, default=48, metavar="N",
                       help="with --frames: frames per worker job (default: 48)")
    batch.set_defaults(func=run_batch_command)


def run_batch_command(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..inference.cutout import CutOptions
    from .io import is_local
    from .job import JobOptions, list_inputs, make_plan, resolve

    cut = CutOptions(resolution=args.resolution, keep_aspect=args.keep_aspect, hires=args.hires,
                     max_patches=args.max_patches, respect_alpha=args.respect_alpha)
    options = JobOptions(cut, device=args.device, precision=args.precision, batch_size=args.batch_size)
    inputs = list_inputs(args.input)
    if args.engine == "local" and not all(map(is_local, inputs)):
        raise InputError("URIs are read through Ray's file readers: use --engine ray")
    args.output.mkdir(parents=True, exist_ok=True)
    weights = resolve(model=None if args.weights else args.model, weights=args.weights)
    if args.frames:
        from .frames import FrameOptions, run_frames

        frame_options = FrameOptions(strength=args.temporal_smoothing, chunk=args.chunk_frames)
        report = run_frames(inputs, args.output, weights, options, frame_options, engine=args.engine,
                            address=args.address, num_gpus_per_worker=args.num_gpus_per_worker,
                            workers=args.workers)
    else:
        plan = make_plan(inputs, args.output)
        if args.engine == "ray":
            from .ray_engine import run_ray

            report = run_ray(plan, weights, options, address=args.address,
                             num_gpus_per_worker=args.num_gpus_per_worker, workers=args.workers)
        else:
            from .local import run_local

            report = run_local(plan, weights, options)
    report.write()
    print(report.summary(), file=sys.stderr)
    for failure in report.failed[:FAILURES_SHOWN]:
        # The reader's messages name the file already.
        reason = failure["error"] if failure["input"] in failure["error"] else f"{failure['input']}: {failure['error']}"
        print(f"  failed: {reason}", file=sys.stderr)
    return 1 if report.failed else 0
