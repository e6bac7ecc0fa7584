"""The ``eval`` command: ``python -m comfyui_meticulous eval PRED_DIR GT_DIR``."""

import argparse
import json
import math

from .evaluate import METRICS, evaluate_folders, format_table, metric_names


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` on an ``argparse`` subparsers object; ``args.func(args)`` runs it."""
    parser = subparsers.add_parser(
        "eval",
        help="score predicted masks against ground-truth masks",
        description="Score every mask in PRED_DIR against the ground-truth mask with the same "
                    "file name (any image extension) in GT_DIR and print one line per metric. "
                    "Ground truth is foreground above 128; predictions of another size are "
                    "resized to the ground truth (bilinear).")
    parser.add_argument("pred_dir", metavar="PRED_DIR", help="folder of predicted masks (PNG/JPG, 0..255)")
    parser.add_argument("gt_dir", metavar="GT_DIR", help="folder of ground-truth masks")
    parser.add_argument("--metrics", metavar="NAMES", default=None,
                        help=f"comma-separated subset of: {', '.join(METRICS)} (default: all)")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    parser.set_defaults(func=run_eval)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate the folders named in ``args``, print the result, return the exit status."""
    report = evaluate_folders(args.pred_dir, args.gt_dir, metric_names(args.metrics))
    if args.json:
        # NaN is not JSON; an undefined score is null.
        scores = {k: None if math.isnan(v) else v for k, v in report.scores.items()}
        print(json.dumps({"pred_dir": report.pred_dir, "gt_dir": report.gt_dir,
                          "count": report.count, "scores": scores, "notes": report.notes}, indent=2))
    else:
        print(format_table(report))
    return 0
