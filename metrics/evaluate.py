"""Dataset evaluation: pair prediction and ground-truth files, score them, print a table.

Aggregation follows the standard SOD toolboxes: max/mean F-measure and E-measure come from
the dataset-mean curve over the 256 thresholds; every other metric is the mean of per-image
scores (images whose ground truth has no boundary are left out of mBA and MQ).
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..files.images import IMAGE_SUFFIXES, read_mask
from .boundary import mba_mq
from .correction import hce
from .inputs import as_binary, as_scores, check_pair
from .region import boundary_iou, iou
from .sod import adaptive_fmeasure, emeasure_curve, fmeasure_curve, mae, smeasure, weighted_fmeasure

# name: (description, higher is better, decimals)
METRICS = {
    "MAE": ("mean absolute error", False, 4),
    "maxF": ("max F-measure, beta^2 = 0.3", True, 4),
    "meanF": ("mean F-measure, beta^2 = 0.3", True, 4),
    "adpF": ("adaptive F-measure, threshold 2 x mean", True, 4),
    "wF": ("weighted F-measure", True, 4),
    "Sm": ("S-measure, alpha = 0.5", True, 4),
    "maxE": ("max E-measure", True, 4),
    "meanE": ("mean E-measure", True, 4),
    "IoU": ("intersection over union", True, 4),
    "BIoU": ("boundary IoU, d = 2% of the diagonal", True, 4),
    "mBA": ("mean boundary accuracy", True, 4),
    "MQ": ("meticulosity quality", True, 4),
    "HCE": ("human correction efforts, gamma = 5 (clicks)", False, 1),
}


def metric_names(spec: str | None) -> list[str]:
    """Canonical metric names from a comma-separated, case-insensitive list (``None``: all)."""
    if spec is None:
        return list(METRICS)
    by_lower = {name.lower(): name for name in METRICS}
    names = []
    for item in spec.replace(",", " ").split():
        if item.lower() not in by_lower:
            raise InputError(f"unknown metric {item!r}; choose from {', '.join(METRICS)}")
        names.append(by_lower[item.lower()])
    if not names:
        raise InputError(f"no metric given; choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(names))


# Per-image metrics of the soft map and of the binarised prediction.
_SOFT = {"MAE": mae, "adpF": adaptive_fmeasure, "wF": weighted_fmeasure, "Sm": smeasure}
_BINARY = {"IoU": iou, "BIoU": boundary_iou, "HCE": hce}


class Evaluator:
    """Accumulates scores over image pairs; :meth:`results` gives the dataset scores."""

    def __init__(self, metrics: list[str] | None = None):
        self.metrics = metric_names(None if metrics is None else ",".join(metrics))
        self.count = 0
        self._scores = {name: [] for name in self.metrics}
        self._f_curves, self._e_curves = [], []

    def add(self, pred, gt) -> None:
        """Score one pair: ``pred`` float 0..1 or uint8 0..255 and ``gt``, both ``[H,W]``."""
        soft, hard, g = as_scores(pred), as_binary(pred, "prediction"), as_binary(gt)
        check_pair(soft, g)
        want = set(self.metrics)
        if want & {"maxF", "meanF"}:
            self._f_curves.append(fmeasure_curve(soft, g))
        if want & {"maxE", "meanE"}:
            self._e_curves.append(emeasure_curve(soft, g))
        scores = dict(zip(("mBA", "MQ"), mba_mq(hard, g))) if want & {"mBA", "MQ"} else {}
        scores.update({name: fn(soft, g) for name, fn in _SOFT.items() if name in want})
        scores.update({name: fn(hard, g) for name, fn in _BINARY.items() if name in want})
        for name in want & set(scores):
            self._scores[name].append(scores[name])
        self.count += 1

    def results(self) -> dict[str, float]:
        """Dataset scores, in the order of :attr:`metrics`."""
        if self.count == 0:
            raise InputError("no image pairs were evaluated")
        curves = {"F": np.mean(self._f_curves, axis=0) if self._f_curves else None,
                  "E": np.mean(self._e_curves, axis=0) if self._e_curves else None}
        out = {}
        for name in self.metrics:
            if name in ("maxF", "maxE"):
                out[name] = float(curves[name[-1]].max())
            elif name in ("meanF", "meanE"):
                out[name] = float(curves[name[-1]].mean())
            else:
                values = np.asarray(self._scores[name], dtype=np.float64)
                defined = values[~np.isnan(values)]
                out[name] = float(defined.mean()) if defined.size else float("nan")
        return out

    def undefined(self, name: str) -> int:
        """How many images had no defined score for ``name`` (NaN mBA / MQ)."""
        return int(np.isnan(np.asarray(self._scores.get(name, []), dtype=np.float64)).sum())


def load_mask(path: Path) -> np.ndarray:
    """A mask file as uint8 ``[H,W]``: the alpha channel if it is not fully opaque, else
    brightness (read by the package's one image reader: 16-bit, float and palette files too)."""
    return np.rint(read_mask(path).numpy() * 255).astype(np.uint8)


def _images_by_stem(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{role} folder {folder} does not exist or is not a folder")
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise InputError(
                    f"{role} folder has two images named {path.stem!r}: {found[path.stem].name} "
                    f"and {path.name}; keep one")
            found[path.stem] = path
    return found


def pair_files(pred_dir, gt_dir) -> tuple[list[tuple[Path, Path]], list[str]]:
    """``(prediction, ground truth)`` paths matched by file stem, and notes on unmatched files."""
    preds = _images_by_stem(Path(pred_dir), "prediction")
    gts = _images_by_stem(Path(gt_dir), "ground-truth")
    pairs = [(preds[stem], gts[stem]) for stem in gts if stem in preds]
    if not pairs:
        raise InputError(
            f"no prediction in {pred_dir} has the file name (without extension) of a ground-truth "
            f"mask in {gt_dir}; found {len(preds)} predictions and {len(gts)} masks")
    notes = []
    for missing, what in ((sorted(set(gts) - set(preds)), "ground-truth masks without a prediction"),
                          (sorted(set(preds) - set(gts)), "predictions without a ground-truth mask")):
        if missing:
            notes.append(f"{what}, skipped: {len(missing)} (first: {missing[0]})")
    return pairs, notes


@dataclass
class Report:
    """Dataset scores of one evaluation, with notes on what was skipped or adjusted."""

    scores: dict[str, float]
    count: int
    pred_dir: str = ""
    gt_dir: str = ""
    notes: list[str] = field(default_factory=list)


def evaluate_folders(pred_dir, gt_dir, metrics: list[str] | None = None) -> Report:
    """Score every prediction in ``pred_dir`` against the mask of the same stem in ``gt_dir``.

    Predictions of another size are resized to the ground-truth size (bilinear) first.
    """
    pairs, notes = pair_files(pred_dir, gt_dir)
    evaluator = Evaluator(metrics)
    resized = 0
    for pred_path, gt_path in pairs:
        pred, gt = load_mask(pred_path), load_mask(gt_path)
        if pred.shape != gt.shape:
            resized += 1
            size = (gt.shape[1], gt.shape[0])
            pred = np.asarray(Image.fromarray(pred).resize(size, Image.Resampling.BILINEAR))
        evaluator.add(pred, gt)
    if resized:
        notes.append(f"predictions resized to the ground-truth size (bilinear): {resized}")
    for name in ("mBA", "MQ"):
        if evaluator.undefined(name):
            notes.append(f"images left out of {name}, their ground truth has no boundary: "
                         f"{evaluator.undefined(name)}")
    return Report(evaluator.results(), len(pairs), str(pred_dir), str(gt_dir), notes)


def format_table(report: Report) -> str:
    """The report as a plain-text table: metric, value, what it measures and which way is better."""
    lines = [f"Evaluated {report.count} image pairs"]
    if report.pred_dir:
        lines += [f"predictions:  {report.pred_dir}", f"ground truth: {report.gt_dir}"]
    lines.append("")
    width = max(len("metric"), *map(len, report.scores))
    lines.append(f"{'metric':<{width}}  {'value':>10}  description")
    for name, value in report.scores.items():
        description, higher, decimals = METRICS[name]
        better = "higher is better" if higher else "lower is better"
        lines.append(f"{name:<{width}}  {value:>10.{decimals}f}  {description} ({better})")
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)
