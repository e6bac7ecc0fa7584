"""``python -m comfyui_meticulous train``: train a learned block on image/mask folders."""

import argparse
import json
import sys
from pathlib import Path

from ..errors import InputError
from ..models.registry import build, trainable_ids
from .losses import LOSSES
from .trainer import ProgressLine, Trainer, TrainOptions

DEFAULTS = TrainOptions(block="glfn")


def add_train_parser(subparsers) -> None:
    train = subparsers.add_parser(
        "train", help="train a learned block (GLFN, HierPR, RefineMask, GSN/LRN, BASNet) on your own data",
        description="Train a learned block on image/mask pairs (DIS5K, HRSOD or images/ + masks/ layouts). "
                    "Refiners and fusions learn to improve a coarse mask: from a frozen BiRefNet/BASNet "
                    "(--coarse MODEL) or from perturbed ground truth (--coarse perturb). Training resumes "
                    "from OUT/checkpoint.safetensors when it exists; the result is exported to "
                    "OUT/<id>.safetensors with an entry in OUT/learned_models.json.")
    train.add_argument("--block", required=True, choices=trainable_ids(), help="what to train")
    train.add_argument("--data", required=True, type=Path, metavar="DIR", help="dataset folder")
    train.add_argument("--val", type=Path, metavar="DIR",
                       help="validation folder (default: the layout's own, e.g. DIS-VD, else 5%% held out)")
    train.add_argument("--out", type=Path, metavar="DIR", help="checkpoint and export folder (default: runs/BLOCK)")
    train.add_argument("--config", default="{}", metavar="JSON",
                       help='architecture options, e.g. \'{"encoder": "mobilenetv3"}\' for hierpr '
                            '(default: the paper\'s)')
    train.add_argument("--init", metavar="FILE", help="start from these weights (.safetensors)")
    train.add_argument("--coarse", default="perturb", metavar="MODEL",
                       help="coarse input for refiners and fusions: 'perturb' (degraded ground truth) or a "
                            "BiRefNet/BASNet .safetensors file or catalogue id (frozen)")
    train.add_argument("--coarse-highres", action="store_true",
                       help="with a model: feed the training-free high-resolution pipeline's fused result "
                            "(what a learned fusion sees at inference) instead of the one-shot prediction")
    train.add_argument("--size", type=int, default=DEFAULTS.size,
                       help="images are resized to SIZE² (default: %(default)s)")
    train.add_argument("--crop", type=int, help="train on random CROP² windows (default: whole images)")
    train.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    train.add_argument("--steps", type=int, default=DEFAULTS.steps)
    train.add_argument("--lr", type=float, default=DEFAULTS.lr)
    train.add_argument("--weight-decay", type=float, default=DEFAULTS.weight_decay)
    train.add_argument("--warmup", type=int, default=DEFAULTS.warmup)
    train.add_argument("--schedule", choices=["cosine", "constant"], default=DEFAULTS.schedule)
    train.add_argument("--grad-clip", type=float)
    train.add_argument("--loss", choices=["auto", *LOSSES], default="auto",
                       help="auto: the block's own paper loss: cross-entropy for gsn/lrn/glfn (HRSOD), the "
                            "MOS losses for hierpr, RefineMask's for refinemask, BASNet's BCE+SSIM+IoU hybrid "
                            "for basnet")
    train.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")
    train.add_argument("--seed", type=int, default=DEFAULTS.seed)
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    train.add_argument("--no-amp", action="store_true", help="full precision on CUDA too")
    train.add_argument("--workers", type=int, default=2, help="data-loading processes (default: %(default)s)")
    train.add_argument("--val-every", type=int, default=DEFAULTS.val_every)
    train.add_argument("--val-limit", type=int, default=64, help="validate on at most N images (default: %(default)s)")
    train.add_argument("--checkpoint-every", type=int, default=DEFAULTS.checkpoint_every)
    train.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint in OUT and start over")
    train.add_argument("--id", help="id of the exported model (default: BLOCK-DATANAME)")
    train.add_argument("--data-description",
                       help="what the training data is, for the manifest (default: its folders)")
    train.add_argument("--push-to-hub", metavar="REPO",
                       help="upload the export and its manifest entry to this Hub repository")
    train.set_defaults(func=run_train)


def _coarse_source(args, device):
    from ..highres import HighResOptions
    from ..inference.device import pick_dtype
    from ..models import load_model
    from .coarse import FrozenModel, PerturbedTruth

    if args.coarse == "perturb":
        if args.coarse_highres:
            raise InputError("--coarse-highres needs a frozen model: give --coarse MODEL")
        return PerturbedTruth(), "perturbed ground truth"
    model = load_model(args.coarse, device=device, dtype=pick_dtype(device), role="coarse")
    mode = "high-resolution pipeline" if args.coarse_highres else "one-shot prediction"
    return FrozenModel(model, highres=args.coarse_highres, options=HighResOptions()), f"{args.coarse} ({mode})"


def run_train(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import Subset

    from ..inference.device import pick_device
    from ..models.loading import read_safetensors
    from .data import FolderPairs, find_pairs, hold_out

    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as err:
        raise InputError(f"--config is not valid JSON: {err}") from None
    options = TrainOptions(
        block=args.block, config=config, loss=args.loss, size=args.size, crop=args.crop, batch_size=args.batch_size,
        steps=args.steps, lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, schedule=args.schedule,
        grad_clip=args.grad_clip, flip=not args.no_flip, seed=args.seed, amp=not args.no_amp,
        val_every=args.val_every, checkpoint_every=args.checkpoint_every)
    train_pairs, val_pairs = find_pairs(args.data)
    if args.val is not None:
        val_pairs = find_pairs(args.val)[0]
    elif val_pairs is None:
        train_pairs, val_pairs = hold_out(train_pairs)
        if val_pairs is train_pairs:
            print(f"note: {len(train_pairs)} pairs are too few to hold some out; validating on the training set",
                  file=sys.stderr)
    train_set = FolderPairs(train_pairs, options.size)
    val_set = FolderPairs(val_pairs, options.size)
    if args.val_limit is not None and len(val_set) > args.val_limit:
        val_set = Subset(val_set, range(args.val_limit))
    device = pick_device(args.device)
    out = args.out or Path("runs") / args.block
    with torch.device("meta"):
        needs_coarse = build(args.block, config).takes_coarse
    coarse, coarse_text = _coarse_source(args, device) if needs_coarse else (None, None)
    init = read_safetensors(args.init) if args.init else None
    trainer = Trainer(options, train_set, out, val=val_set, coarse=coarse, device=device, init=init,
                      resume=not args.fresh, workers=args.workers)
    if trainer.step:
        print(f"resuming from {out / 'checkpoint.safetensors'} at step {trainer.step}", file=sys.stderr)
    trainer.run(progress=ProgressLine(options.steps))
    description = args.data_description or train_set.describe()
    if coarse_text:
        description += f"; coarse input: {coarse_text}"
    model_id = args.id or f"{args.block}-{args.data.resolve().name}".lower().replace("_", "-")
    path = trainer.export(model_id, data=description)
    print(f"exported {path} (entry '{model_id}' in {path.parent / 'learned_models.json'})", file=sys.stderr)
    if trainer.metrics:
        print(json.dumps(trainer.metrics), file=sys.stderr)
    if args.push_to_hub:
        push_to_hub(path, args.push_to_hub)
    return 0


def push_to_hub(path: Path, repo: str) -> None:
    """Upload an exported block and its manifest entry (as ``<id>.json``) to Hub repository ``repo``."""
    import huggingface_hub

    from ..weights.trained import read_manifest

    entry = next(item for item in read_manifest(path.parent) if item["filename"] == path.name)
    huggingface_hub.upload_file(path_or_fileobj=str(path), path_in_repo=path.name, repo_id=repo)
    huggingface_hub.upload_file(path_or_fileobj=(json.dumps(entry, indent=2) + "\n").encode(),
                                path_in_repo=path.with_suffix(".json").name, repo_id=repo)
    print(f"uploaded {path.name} to https://huggingface.co/{repo}", file=sys.stderr)
