"""Quality metrics for segmentation and matting, in numpy, and a dataset evaluator.

Per image: :func:`mae`, :func:`fmeasure_curve`, :func:`adaptive_fmeasure`,
:func:`weighted_fmeasure`, :func:`smeasure`, :func:`emeasure_curve` (SOD metrics),
:func:`iou`, :func:`boundary_iou`, :func:`mba`, :func:`mq` and :func:`hce`. Over a dataset:
:class:`Evaluator` and :func:`evaluate_folders`, whose :func:`format_table` is what
``python -m comfyui_meticulous eval`` prints.
"""

from .boundary import mba, mba_mq, mba_radii, mq
from .correction import hce
from .evaluate import METRICS, Evaluator, Report, evaluate_folders, format_table, load_mask, pair_files
from .region import boundary_iou, iou
from .sod import adaptive_fmeasure, emeasure_curve, fmeasure_curve, mae, smeasure, weighted_fmeasure

__all__ = [
    "METRICS", "Evaluator", "Report", "adaptive_fmeasure", "boundary_iou", "emeasure_curve",
    "evaluate_folders", "fmeasure_curve", "format_table", "hce", "iou", "load_mask", "mae", "mba",
    "mba_mq", "mba_radii", "mq", "pair_files", "smeasure", "weighted_fmeasure",
]
