"""Training the learned blocks (HRSOD GSN/LRN/GLFN, MeticulousNet HierPR, the RefineMask-style
refiner, BASNet) on image/mask folders, and procedural scenes to try them on.

:class:`Trainer` with :class:`TrainOptions` does the training; ``python -m comfyui_meticulous
train`` (:func:`add_train_parser`) is its command line.
"""

from .cli import add_train_parser
from .coarse import FrozenModel, PerturbedTruth
from .data import FolderPairs, TensorPairs, find_pairs, hold_out
from .losses import block_loss, hybrid_loss, iou_loss, mos_loss, refinemask_loss, ssim_loss
from .synthetic import synthetic_pairs, synthetic_scene, write_scenes
from .trainer import ProgressLine, Trainer, TrainOptions

__all__ = ["FolderPairs", "FrozenModel", "PerturbedTruth", "ProgressLine", "TensorPairs", "TrainOptions", "Trainer",
           "add_train_parser", "block_loss", "find_pairs", "hold_out", "hybrid_loss", "iou_loss", "mos_loss",
           "refinemask_loss", "ssim_loss", "synthetic_pairs", "synthetic_scene", "write_scenes"]
