"""Tests of the quality metrics and the ``eval`` command.

The SOD metrics are cross-checked against PySODMetrics, the reference Python toolbox, on the
same uint8 maps; the boundary metrics and HCE against hand-derived values.
"""

import argparse
import json

import numpy as np
import py_sod_metrics
import pytest
import torch
from PIL import Image

from comfyui_meticulous.errors import InputError
from comfyui_meticulous.metrics import (
    Evaluator,
    adaptive_fmeasure,
    boundary_iou,
    emeasure_curve,
    evaluate_folders,
    fmeasure_curve,
    format_table,
    hce,
    iou,
    load_mask,
    mae,
    mba,
    mba_mq,
    mba_radii,
    mq,
    smeasure,
    weighted_fmeasure,
)
from comfyui_meticulous.metrics.cli import add_eval_parser
from comfyui_meticulous.metrics.distance import nearest_feature
from comfyui_meticulous.metrics.morphology import dilate, disc, erode
from comfyui_meticulous.metrics.region import boundary_width, inner_boundary

# Both sides evaluate the same float64 formulas on the same maps; only the summation order
# differs (~1e-15). 1e-6 leaves room for that, while a different convention (the ``>=`` of a
# threshold, std ddof, centroid rounding) moves these scores by 1e-3 or more.
TOL = 1e-6


def blob_pair(seed: int, h: int = 72, w: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 soft prediction (spanning exactly 0..255) and a 0/255 ground truth of a few discs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    gt = np.zeros((h, w), bool)
    soft = np.zeros((h, w))
    for _ in range(rng.integers(1, 4)):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(4, h / 3)
        gt |= (y - cy) ** 2 + (x - cx) ** 2 < r * r
        dist = np.hypot(y - cy - rng.normal(0, 2), x - cx - rng.normal(0, 2))
        edge = r * rng.uniform(0.8, 1.2)
        soft = np.maximum(soft, 1 / (1 + np.exp((dist - edge) / rng.uniform(0.5, 3))))
    soft = np.clip(soft + rng.normal(0, 0.05, soft.shape), 0, 1)
    pred = np.rint(soft * 255).astype(np.uint8)
    # PySODMetrics min-max stretches predictions; with 0 and 255 present that is a no-op.
    pred.flat[0], pred.flat[-1] = 0, 255
    return pred, (gt * 255).astype(np.uint8)


def half_pixel_centroid_pair() -> tuple[np.ndarray, np.ndarray]:
    """GT centroid at (24.5, 34.5): S-measure's split depends on how the centroid is rounded."""
    y, x = np.mgrid[:48, :64]
    gt = np.zeros((48, 64), np.uint8)
    gt[10:20, 20:30] = gt[30:40, 40:50] = 255
    soft = 1 / (1 + np.exp((np.hypot(y - 16, x - 26) - 8) / 2)) + 1 / (1 + np.exp((np.hypot(y - 34, x - 44) - 6) / 2))
    pred = np.rint(np.clip(soft, 0, 1) * 255).astype(np.uint8)
    pred.flat[0], pred.flat[-1] = 0, 255
    return pred, gt


def edge_pairs():
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (40, 56)).astype(np.uint8)
    noise.flat[0], noise.flat[-1] = 0, 255
    pred, gt = blob_pair(3)
    return [
        ("half-pixel centroid", *half_pixel_centroid_pair()),
        ("all-zero gt", noise, np.zeros_like(noise)),
        ("all-one gt", noise, np.full_like(noise, 255)),
        ("all-zero pred", np.zeros_like(pred), gt),
    ]


CASES = [(f"blobs {s}", *blob_pair(s)) for s in range(6)] + edge_pairs()


def reference_scores(pairs) -> dict:
    """Dataset scores from PySODMetrics, aggregated the way its users report them."""
    fm, em = py_sod_metrics.Fmeasure(), py_sod_metrics.Emeasure()
    sm, wfm, err = py_sod_metrics.Smeasure(), py_sod_metrics.WeightedFmeasure(), py_sod_metrics.MAE()
    for pred, gt in pairs:
        for m in (fm, em, sm, wfm, err):
            m.step(pred, gt)
    f, e = fm.get_results()["fm"], em.get_results()["em"]
    return {"MAE": err.get_results()["mae"], "maxF": f["curve"].max(), "meanF": f["curve"].mean(),
            "adpF": f["adp"], "wF": wfm.get_results()["wfm"], "Sm": sm.get_results()["sm"],
            "maxE": e["curve"].max(), "meanE": e["curve"].mean()}


# ---------------------------------------------------------------------------- SOD vs PySODMetrics

@pytest.mark.filterwarnings("ignore:This class will be removed")
@pytest.mark.parametrize("name,pred,gt", CASES, ids=[c[0] for c in CASES])
def test_sod_metrics_match_pysodmetrics(name, pred, gt):
    ref = reference_scores([(pred, gt)])
    f, e = fmeasure_curve(pred, gt), emeasure_curve(pred, gt)
    ours = {"MAE": mae(pred, gt), "maxF": f.max(), "meanF": f.mean(), "adpF": adaptive_fmeasure(pred, gt),
            "wF": weighted_fmeasure(pred, gt), "Sm": smeasure(pred, gt), "maxE": e.max(), "meanE": e.mean()}
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=TOL), key


@pytest.mark.filterwarnings("ignore:This class will be removed")
def test_dataset_aggregation_matches_pysodmetrics():
    pairs = [(pred, gt) for _, pred, gt in CASES]
    evaluator = Evaluator(["MAE", "maxF", "meanF", "adpF", "wF", "Sm", "maxE", "meanE"])
    for pred, gt in pairs:
        evaluator.add(pred, gt)
    ours, ref = evaluator.results(), reference_scores(pairs)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=TOL), key


def test_float_and_uint8_inputs_agree():
    pred, gt = blob_pair(11)
    soft = torch.from_numpy(pred.astype(np.float32) / 255).unsqueeze(0)  # a ComfyUI MASK [1,H,W]
    hard = torch.from_numpy(gt > 128)
    assert np.array_equal(fmeasure_curve(soft, hard), fmeasure_curve(pred, gt))
    assert smeasure(soft, hard) == pytest.approx(smeasure(pred, gt), abs=1e-6)


def test_perfect_prediction_scores():
    _, gt = blob_pair(5)
    assert mae(gt, gt) == 0
    assert fmeasure_curve(gt, gt).max() == pytest.approx(1)
    assert weighted_fmeasure(gt, gt) == pytest.approx(1)
    assert smeasure(gt, gt) == pytest.approx(1)
    assert emeasure_curve(gt, gt).max() == pytest.approx(1, abs=1e-3)  # sum / (N - 1)


# -------------------------------------------------------------------------------- input checks

def test_bad_inputs_raise_input_error():
    gt = np.zeros((8, 8), np.uint8)
    with pytest.raises(InputError, match="None"):
        mae(None, gt)
    with pytest.raises(InputError, match="8x8"):
        iou(np.zeros((8, 9), np.uint8), gt)
    with pytest.raises(InputError, match="empty"):
        smeasure(np.zeros((0, 8)), np.zeros((0, 8)))
    with pytest.raises(InputError, match="0..1"):
        mae(np.full((8, 8), 3.0), gt)
    with pytest.raises(InputError, match="single"):
        mba(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))


def test_ground_truth_binarised_above_128():
    gt = np.array([[128, 129]], np.uint8)
    assert iou(np.array([[False, True]]), gt) == 1.0
    assert iou(np.array([[0.5, 0.51]]), np.array([[0.0, 1.0]])) == 1.0


# --------------------------------------------------------------------------- distance transform

def test_distance_transform_is_exact():
    rng = np.random.default_rng(0)
    for density in (0.02, 0.2, 0.6):
        features = rng.random((23, 31)) < density
        sq, (row, col) = nearest_feature(features)
        fy, fx = np.nonzero(features)
        y, x = np.mgrid[:23, :31]
        brute = ((y[..., None] - fy) ** 2 + (x[..., None] - fx) ** 2).min(-1)
        assert np.array_equal(sq, brute)
        assert features[row, col].all()
        assert np.array_equal((row - y) ** 2 + (col - x) ** 2, brute)
    sq, index = nearest_feature(np.zeros((4, 5), bool))
    assert np.isinf(sq).all() and (index == -1).all()


# ----------------------------------------------------------------------------------- morphology

def test_disc_shapes():
    assert disc(0).tolist() == [[True]]
    assert disc(1).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disc(2).astype(int).tolist() == [[0, 0, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1],
                                            [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]]


def test_dilate_and_erode_match_definition():
    rng = np.random.default_rng(1)
    mask = rng.random((19, 23)) < 0.15
    for r in (1, 3, 6):
        offsets = np.argwhere(disc(r)) - r
        brute = np.zeros_like(mask)
        for y, x in np.argwhere(mask):
            for dy, dx in offsets:
                if 0 <= y + dy < 19 and 0 <= x + dx < 23:
                    brute[y + dy, x + dx] = True
        assert np.array_equal(dilate(mask, r), brute)
    full = np.ones((10, 10), bool)
    assert erode(full, 3).all()  # the frame is not a boundary


# ------------------------------------------------------------------------------------- mBA, MQ

def test_mba_radii():
    assert mba_radii(1024, 1024) == [1, 2, 3, 4, 5]
    assert mba_radii(1080, 1920) == [1, 2, 4, 6, 8]
    assert mba_radii(2160, 3840) == [1, 4, 8, 12, 16]
    assert mba_radii(256, 256) == [1] * 5


def square(size: int = 64, lo: int = 20, hi: int = 44) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[lo:hi, lo:hi] = True
    return mask


def test_mba_mq_hand_case():
    gt = square()  # 24x24 square; radius-1 bands (cross) at 64x64
    assert mba_mq(gt, gt) == (1.0, 1.0)
    # The band is the 96 outside pixels beside an edge plus the 92 border pixels inside.
    # Eroding the square by one pixel gets those 92 wrong and nothing outside the band.
    pred = square(lo=21, hi=43)
    assert mba(pred, gt) == pytest.approx(96 / 188)
    assert mq(pred, gt) == pytest.approx(0.5 + 0.5 * 96 / 188)


def test_mba_drops_with_shift():
    y, x = np.mgrid[:160, :200]
    gt = (y - 80) ** 2 + (x - 100) ** 2 < 50 ** 2
    scores = [mba_mq(np.roll(gt, k, axis=1), gt) for k in range(4)]
    assert scores[0] == (1.0, 1.0)
    for (a_mba, a_mq), (b_mba, b_mq) in zip(scores, scores[1:]):
        assert b_mba < a_mba and b_mq < a_mq


def test_mba_undefined_without_boundary():
    empty = np.zeros((32, 32), bool)
    assert all(np.isnan(mba_mq(empty, empty)))


# --------------------------------------------------------------------------------- Boundary IoU

def test_boundary_iou_hand_cases():
    assert boundary_width(64, 64) == 2  # 0.02 * 90.5 = 1.81
    assert boundary_width(10, 10) == 1
    gt = square()
    assert boundary_iou(gt, gt) == 1.0
    # d = 2: GT ring 24² - 20² = 176, prediction ring 22² - 18² = 160, shared ring 22² - 20² = 84.
    pred = square(lo=21, hi=43)
    assert boundary_iou(pred, gt) == pytest.approx(84 / (176 + 160 - 84))
    assert iou(pred, gt) == pytest.approx(22 ** 2 / 24 ** 2)
    assert inner_boundary(np.ones((16, 16), bool), 1).sum() == 16 ** 2 - 14 ** 2
    empty = np.zeros((16, 16), bool)
    assert boundary_iou(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert boundary_iou(np.zeros_like(gt), gt) == 0.0


# ------------------------------------------------------------------------------------------ HCE

def test_hce_hand_cases():
    gt = np.zeros((96, 96), bool)
    gt[10:40, 10:50] = True
    gt[60:80, 55:85] = True
    assert hce(gt, gt) == 0
    missed = gt.copy()
    missed[60:80, 55:85] = False
    assert hce(missed, gt) == 4  # the missed rectangle's corners
    spurious = gt.copy()
    spurious[85:92, 5:15] = True
    assert hce(spurious, gt) == 3  # a loose polygon around it
    holed = gt.copy()
    holed[20:28, 25:33] = False
    assert hce(holed, gt) == 3
    speck = gt.copy()
    speck[88:91, 30:33] = True  # 3x3, within the 5 px tolerance
    assert hce(speck, gt) == 0
    assert hce(speck, gt, gamma=0) == 3


def test_hce_missing_shape_counts_its_corners():
    gt = np.zeros((64, 64), bool)
    gt[10:50, 10:25] = True
    gt[35:50, 25:50] = True  # an L of six corners
    assert hce(np.zeros_like(gt), gt) == 6


def test_hce_relaxation():
    gt = square(96, 20, 76)
    jitter = square(96, 22, 74)  # 2 px too small all round
    assert hce(jitter, gt) == 0
    assert hce(jitter, gt, gamma=0) >= 3
    shifted = np.roll(gt, 12, axis=0)  # far beyond gamma = 5
    assert hce(shifted, gt) >= 6
    thin = gt.copy()
    thin[5:20, 48] = True  # a one-pixel hair the prediction misses
    assert hce(gt, thin) >= 2


# ------------------------------------------------------------------------------- folders and CLI

@pytest.fixture
def folders(tmp_path):
    """Three prediction/GT pairs (one prediction at half size), one unmatched prediction."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir(), gt_dir.mkdir()
    for i in range(3):
        pred, gt = blob_pair(20 + i, 64, 80)
        Image.fromarray(gt).save(gt_dir / f"img{i}.png")
        image = Image.fromarray(pred)
        if i == 2:
            image = image.resize((40, 32), Image.Resampling.BILINEAR)
        image.save(pred_dir / f"img{i}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred_dir / "stray.png")
    return pred_dir, gt_dir


def direct_scores(pred_dir, gt_dir) -> dict:
    preds, gts = [], []
    for i in range(3):
        gt = load_mask(gt_dir / f"img{i}.png")
        pred = Image.open(pred_dir / f"img{i}.png").convert("L")
        pred = np.asarray(pred.resize((gt.shape[1], gt.shape[0]), Image.Resampling.BILINEAR))
        preds.append(pred), gts.append(gt)
    f = np.mean([fmeasure_curve(p, g) for p, g in zip(preds, gts)], axis=0)
    e = np.mean([emeasure_curve(p, g) for p, g in zip(preds, gts)], axis=0)
    per_image = {"MAE": mae, "adpF": adaptive_fmeasure, "wF": weighted_fmeasure, "Sm": smeasure,
                 "IoU": iou, "BIoU": boundary_iou, "mBA": mba, "MQ": mq, "HCE": hce}
    out = {name: float(np.mean([fn(p, g) for p, g in zip(preds, gts)])) for name, fn in per_image.items()}
    out.update(maxF=f.max(), meanF=f.mean(), maxE=e.max(), meanE=e.mean())
    return out


def run_cli(argv) -> None:
    parser = argparse.ArgumentParser(prog="meticulous")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert args.func(args) == 0


def test_eval_command_prints_table(folders, capsys):
    pred_dir, gt_dir = folders
    run_cli(["eval", str(pred_dir), str(gt_dir)])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[4:] if line and not line.startswith("note")}
    expected = direct_scores(pred_dir, gt_dir)
    assert set(rows) == set(expected) | {"metric"}
    for name, value in expected.items():
        decimals = 1 if name == "HCE" else 4
        assert rows[name] == f"{value:.{decimals}f}", name
    assert "Evaluated 3 image pairs" in out
    assert "resized to the ground-truth size (bilinear): 1" in out
    assert "predictions without a ground-truth mask, skipped: 1 (first: stray)" in out


def test_eval_command_json_subset(folders, capsys):
    pred_dir, gt_dir = folders
    run_cli(["eval", str(pred_dir), str(gt_dir), "--metrics", "mae,maxF,mBA", "--json"])
    result = json.loads(capsys.readouterr().out)
    expected = direct_scores(pred_dir, gt_dir)
    assert result["count"] == 3
    assert list(result["scores"]) == ["MAE", "maxF", "mBA"]
    for name, value in result["scores"].items():
        assert value == pytest.approx(expected[name], abs=1e-12)


def test_eval_errors(folders, tmp_path):
    pred_dir, gt_dir = folders
    with pytest.raises(InputError, match="unknown metric"):
        evaluate_folders(pred_dir, gt_dir, ["MAE", "Fancy"])
    with pytest.raises(InputError, match="does not exist"):
        evaluate_folders(tmp_path / "nowhere", gt_dir)
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match="no prediction"):
        evaluate_folders(tmp_path / "other", gt_dir)


def test_format_table_reports_undefined_scores(tmp_path):
    for sub in ("p", "g"):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / sub / "a.png")
    report = evaluate_folders(tmp_path / "p", tmp_path / "g", ["MAE", "mBA"])
    assert report.scores["MAE"] == 0.0 and np.isnan(report.scores["mBA"])
    assert "images left out of mBA, their ground truth has no boundary: 1" in format_table(report)


def test_load_mask_uses_alpha_and_16_bit(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 200
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    assert load_mask(tmp_path / "cutout.png")[0, 0] == 0 and load_mask(tmp_path / "cutout.png")[1, 1] == 200
    deep = np.full((4, 4), 65535, np.uint16)
    deep[0, 0] = 257 * 100
    Image.fromarray(deep).save(tmp_path / "deep.png")
    loaded = load_mask(tmp_path / "deep.png")
    assert loaded.dtype == np.uint8 and loaded[0, 0] == 100 and loaded[1, 1] == 255
