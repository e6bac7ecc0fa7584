"""Uncertainty selection, window planning, local refinement and global-local fusion."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from comfyui_meticulous.errors import InputError
from comfyui_meticulous.highres import (
    BandFusion,
    HighResOptions,
    Plan,
    UncertainBand,
    Window,
    blend,
    plan_windows,
    refine_windows,
    segment_highres,
    select_hrsod,
    select_mos,
    uncertainty_map,
    uncertainty_preview,
    uncertainty_refine,
    window_size,
    window_weight,
)
from comfyui_meticulous.highres.resample import resize_rows, row_stripes
from comfyui_meticulous.inference import Prediction
from comfyui_meticulous.inference.images import IMAGENET_MEAN, IMAGENET_STD
from comfyui_meticulous.models.base import SegmentationModel


class PixelModel(SegmentationModel):
    """Stand-in network: logits are a per-pixel function of the normalised input."""

    input_normalisation = "imagenet"

    def __init__(self, fn, native=64, multiple=32):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.native_resolution = (native, native)
        self.size_multiple = multiple
        self.fn = fn
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fn(x) + self.anchor


def red_logits(x):
    return 3 * x[:, :1]


def red_logits_of_image(images):
    """What ``red_logits`` gives for ``[B,H,W,3]`` pixels at full resolution: ``[B,1,H,W]``."""
    red = (images[..., 0] - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    return 3 * red.unsqueeze(1)


def coverage(plan: Plan) -> torch.Tensor:
    covered = torch.zeros(plan.image_size, dtype=torch.bool)
    for window in plan.windows:
        top, left, bottom, right = plan.core(window)
        covered[top:bottom, left:right] = True
    return covered


def footprint_mask(selected: torch.Tensor, size) -> torch.Tensor:
    """Image pixels that a selected grid pixel stands for: grid row i spans image rows
    floor(i·H/h) .. ceil((i+1)·H/h) - 1 (and likewise for columns)."""
    (h, w), (height, width) = selected.shape, size
    out = torch.zeros(size, dtype=torch.bool)
    for i, j in selected.nonzero().tolist():
        out[i * height // h: -(-(i + 1) * height // h), j * width // w: -(-(j + 1) * width // w)] = True
    return out


def max_step(x: torch.Tensor) -> float:
    x = x.reshape(x.shape[-2:]) if x.ndim > 2 else x
    return max((x[1:] - x[:-1]).abs().max().item(), (x[:, 1:] - x[:, :-1]).abs().max().item())


# ----------------------------------------------------------------------------------- selection

def test_uncertainty_map_values():
    p = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]])
    assert torch.allclose(uncertainty_map(p), torch.tensor([[0.0, 0.5, 1.0, 0.5, 0.0]]))


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.37, 1.0])
def test_select_mos_takes_exact_fraction_of_most_uncertain(fraction):
    prob = torch.rand(3, 37, 53, generator=torch.Generator().manual_seed(1))
    selected = select_mos(prob, fraction)
    k = round(fraction * 37 * 53)
    assert selected.shape == prob.shape and selected.dtype == torch.bool
    assert selected.flatten(1).sum(1).tolist() == [k] * 3
    distance = (prob - 0.5).abs()
    for b in range(3):
        if 0 < k < 37 * 53:
            assert distance[b][selected[b]].max() <= distance[b][~selected[b]].min()


def test_select_hrsod_thresholds_are_strict():
    values = torch.tensor([[0.0, 50 / 255, 50 / 255 + 1e-4, 0.5, 200 / 255 - 1e-4, 200 / 255, 1.0]])
    expected = [[False, False, True, True, True, False, False]]
    assert select_hrsod(values).tolist() == expected
    assert select_hrsod(values, low=0.0, high=1.0).tolist() == [[False, True, True, True, True, True, False]]


def test_selection_rejects_bad_parameters():
    with pytest.raises(InputError):
        select_mos(torch.rand(1, 4, 4), 1.5)
    with pytest.raises(InputError):
        select_hrsod(torch.rand(1, 4, 4), 0.8, 0.2)
    with pytest.raises(InputError):
        UncertainBand(rule="random")


def test_band_weight_is_one_on_selection_and_smooth():
    logits = torch.full((1, 1, 64, 64), 8.0)
    logits[..., 20:30, 10:50] = 0.0                       # an uncertain bar
    prediction = Prediction(logits, (256, 256))
    band = UncertainBand(rule="hrsod", dilation=2, feather=4)
    selected, weight = band.select(prediction), band.weight(prediction)
    assert selected[0, 18:32, 8:52].all() and selected.sum() == 14 * 44
    assert (weight[0, 0][selected[0]] == 1).all()
    assert weight.min() >= 0 and weight.max() <= 1
    far = F.max_pool2d(selected.float().unsqueeze(1), 2 * 8 + 1, stride=1, padding=8)[0, 0] == 0
    assert (weight[0, 0][far] == 0).all()
    assert max_step(weight[0, 0]) <= 1 / 5 + 1e-6       # box radii 2 and 2: the ramp climbs 1/5 per pixel at most


def test_band_grid_is_capped_for_full_size_predictions():
    prediction = Prediction(torch.zeros(1, 1, 300, 200), (300, 200))
    band = UncertainBand(max_side=100)
    assert band.select(prediction).shape == (1, 100, 67)


# -------------------------------------------------------------------------------------- planner

def test_window_size_zoom_interpolates_between_coarse_and_full_scale():
    assert window_size((64, 64), (1024, 1024), (64, 64), zoom=1.0) == (64, 64)
    assert window_size((64, 64), (1024, 1024), (64, 64), zoom=0.0) == (1024, 1024)
    assert window_size((64, 64), (1024, 1024), (64, 64), zoom=0.5) == (256, 256)
    assert window_size((64, 64), (100, 1024), (64, 64), zoom=1.0) == (64, 64)
    assert window_size((64, 64), (40, 1024), (64, 64), zoom=1.0) == (40, 64)
    with pytest.raises(InputError):
        window_size((64, 64), (1024, 1024), (64, 64), zoom=1.5)


def random_selection(generator, shape):
    kind = torch.randint(3, (1,), generator=generator).item()
    if kind == 0:                                            # scattered points
        density = 10 ** (-3 * torch.rand(1, generator=generator).item())
        return torch.rand(shape, generator=generator) < density
    if kind == 1:                                            # blobs
        noise = torch.rand(1, 1, *shape, generator=generator)
        blurred = F.avg_pool2d(noise, 9, stride=1, padding=4)[0, 0]
        return blurred > blurred.quantile(0.9)
    selected = torch.zeros(shape, dtype=torch.bool)          # a few lines
    for _ in range(3):
        row = torch.randint(shape[0], (1,), generator=generator).item()
        selected[row, torch.randint(shape[1], (1,), generator=generator).item():] = True
    return selected


@pytest.mark.parametrize("seed", range(12))
def test_planner_covers_every_selected_pixel(seed):
    generator = torch.Generator().manual_seed(seed)
    height, width = [int(v) for v in torch.randint(40, 360, (2,), generator=generator)]
    window = (64, 48) if seed % 3 else (96, 96)
    margin, overlap = (8, 0) if seed % 2 else (12, 5)
    scale = 1 if seed < 6 else 4
    grid = (max(1, height // scale), max(1, width // scale))
    selected = random_selection(generator, grid)
    plan = plan_windows(selected, (height, width), window, margin=margin, overlap=overlap)
    wanted = footprint_mask(selected, (height, width))
    assert not (wanted & ~coverage(plan)).any()
    for w in plan.windows:
        top, left, bottom, right = plan.box(w)
        assert 0 <= top and bottom <= height and 0 <= left and right <= width
        assert (bottom - top, right - left) == (min(window[0], height), min(window[1], width))
    if not selected.any():
        assert len(plan) == 0


def test_planner_context_margin_around_selected_pixels():
    selected = torch.zeros(300, 300, dtype=torch.bool)
    selected[150, 150] = True
    plan = plan_windows(selected, (300, 300), (64, 64), margin=10)
    assert len(plan) == 1
    top, left, bottom, right = plan.box(plan.windows[0])
    assert top + 10 <= 150 < bottom - 10 and left + 10 <= 150 < right - 10


def test_merging_removes_near_duplicate_windows():
    # A small detail on the corner where four grid cells meet (cells are 64 - 2*8 = 48 px).
    selected = torch.zeros(200, 200, dtype=torch.bool)
    selected[44:52, 44:52] = True
    unmerged = plan_windows(selected, (200, 200), (64, 64), margin=8, merge=False)
    merged = plan_windows(selected, (200, 200), (64, 64), margin=8)
    assert len(unmerged) == 4 and len(merged) == 1
    assert not (selected & ~coverage(merged)).any()
    assert merged.windows[0].score == pytest.approx(sum(w.score for w in unmerged.windows))


def test_merging_never_merges_what_does_not_fit_one_core():
    selected = torch.zeros(200, 200, dtype=torch.bool)
    selected[10, 10] = selected[10, 100] = True               # 91 px apart, core is 48 px
    assert len(plan_windows(selected, (200, 200), (64, 64), margin=8)) == 2


def test_budget_keeps_the_most_uncertain_windows():
    generator = torch.Generator().manual_seed(3)
    selected = torch.rand(256, 256, generator=generator) < 0.01
    score = torch.rand(256, 256, generator=generator)
    full = plan_windows(selected, (256, 256), (64, 64), margin=8, score=score)
    budget = plan_windows(selected, (256, 256), (64, 64), margin=8, score=score, max_patches=3)
    scores = [w.score for w in full.windows]
    assert len(full) > 3 and scores == sorted(scores, reverse=True)
    assert budget.windows == full.windows[:3]
    raster = plan_windows(selected, (256, 256), (64, 64), margin=8, order="raster")
    assert [(w.top, w.left) for w in raster.windows] == sorted((w.top, w.left) for w in raster.windows)
    assert len(plan_windows(selected, (256, 256), (64, 64), margin=8, max_patches=0)) == 0


def test_planner_rejects_impossible_geometry():
    selected = torch.ones(100, 100, dtype=torch.bool)
    with pytest.raises(InputError):
        plan_windows(selected, (100, 100), (64, 64), margin=32)
    with pytest.raises(InputError):
        plan_windows(selected, (100, 100), (64, 64), margin=8, order="random")


# ------------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("source,target", [((7, 9), (50, 61)), ((40, 30), (13, 17)), ((16, 16), (16, 16))])
def test_resize_rows_matches_interpolate(source, target):
    x = torch.randn(2, 1, *source, generator=torch.Generator().manual_seed(0))
    whole = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
    stripes = torch.cat([resize_rows(x, target, a, b) for a, b in row_stripes(*target, pixels=3 * target[1])], 2)
    assert torch.allclose(stripes, whole, atol=1e-5)


# --------------------------------------------------------------------------------- refinement

def test_window_weight_is_one_on_core_and_feathered_in_margins():
    plan = Plan((200, 200), (64, 64), (8, 8), (Window(0, 50, 1.0), Window(70, 70, 1.0)))
    border, inner = plan.windows
    weight = window_weight(plan, inner)
    assert (weight[8:56, 8:56] == 1).all()
    assert (weight[:8] < 1).all() and (weight[:8] > 0).all() and (weight[-8:] < 1).all()
    assert torch.allclose(weight, weight.flip(0)) and torch.allclose(weight, weight.T)
    assert (window_weight(plan, border)[0, 8:56] == 1).all()     # no ramp along the image border


def _plans_for(images, model, fraction=0.2, seed=0, **kwargs):
    b, h, w = images.shape[:3]
    generator = torch.Generator().manual_seed(seed)
    return [plan_windows(torch.rand(h // 4, w // 4, generator=generator) < fraction * 0.05, (h, w),
                         model.native_resolution, margin=kwargs.get("margin", 8)) for _ in range(b)]


def test_refine_maps_window_results_back_exactly():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 200, 263, 3, generator=generator)
    model = PixelModel(red_logits)
    coarse = Prediction(torch.randn(2, 1, 32, 32, generator=generator), (200, 263))
    plans = _plans_for(images, model)
    refined = refine_windows(model, images, coarse, plans, batch_size=3)
    support = refined.support
    truth = red_logits_of_image(images)
    base = F.interpolate(coarse.logits, size=(200, 263), mode="bilinear", align_corners=False)
    assert refined.logits.shape == (2, 1, 200, 263) and support.shape == (2, 1, 200, 263)
    full, none, partial = support == 1, support == 0, (support > 0) & (support < 1)
    assert full.any() and none.any() and partial.any()
    assert torch.allclose(refined.logits[full], truth[full], atol=1e-4)
    assert torch.allclose(refined.logits[none], base[none], atol=1e-5)
    mixed = base + support * (truth - base)
    assert torch.allclose(refined.logits[partial], mixed[partial], atol=1e-4)
    for b, plan in enumerate(plans):
        assert (coverage(plan) <= full[b, 0]).all()


class CoarseEcho(SegmentationModel):
    """A learned-refiner stand-in: returns the coarse logits it is handed for its window."""

    role = "refiner"
    takes_coarse = True
    input_normalisation = "imagenet"
    native_resolution = (64, 64)
    size_multiple = 32

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, coarse):
        assert coarse.shape == (x.shape[0], 1, *x.shape[-2:])
        return coarse + self.anchor


def test_learned_refiners_get_each_windows_crop_of_the_coarse_logits():
    generator = torch.Generator().manual_seed(4)
    images = torch.rand(2, 200, 263, 3, generator=generator)
    # Smooth logits: resampling a crop and pasting it back may only differ by interpolation error.
    ramp = torch.linspace(-3, 3, 32)
    coarse = Prediction(torch.stack([ramp.view(1, 32) + ramp.view(32, 1), ramp.view(1, 32) - ramp.view(32, 1)])
                        .unsqueeze(1), (200, 263))
    model = CoarseEcho()
    refined = refine_windows(model, images, coarse, _plans_for(images, model), batch_size=3)
    base = F.interpolate(coarse.logits, size=(200, 263), mode="bilinear", align_corners=False)
    assert (refined.support == 1).any()
    assert torch.allclose(refined.logits, base, atol=0.02)


def test_refine_zoomed_out_windows_see_downscaled_crops():
    images = torch.rand(1, 256, 256, 3, generator=torch.Generator().manual_seed(1))
    model = PixelModel(red_logits)
    coarse = Prediction(torch.zeros(1, 1, 64, 64), (256, 256))
    plan = Plan((256, 256), (128, 128), (16, 16), (Window(64, 64, 1.0),))
    refined = refine_windows(model, images, coarse, [plan])
    crop = images[:, 64:192, 64:192].permute(0, 3, 1, 2)
    seen = F.interpolate(F.interpolate(crop, size=(64, 64), mode="bilinear", antialias=True, align_corners=False),
                         size=(128, 128), mode="bilinear", align_corners=False)
    expected = 3 * (seen[:, :1] - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(refined.logits[:, :, 80:176, 80:176], expected[:, :, 16:112, 16:112], atol=1e-4)


def test_refine_is_batch_independent():
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(3, 160, 180, 3, generator=generator)
    model = PixelModel(lambda x: torch.tanh(x[:, :1] * x[:, 1:2]) * 4 + x.mean(dim=(1, 2, 3), keepdim=True))
    coarse = Prediction(torch.randn(3, 1, 40, 40, generator=generator), (160, 180))
    plans = _plans_for(images, model, fraction=0.5)
    one = refine_windows(model, images, coarse, plans, batch_size=1)
    many = refine_windows(model, images, coarse, plans, batch_size=7)
    assert torch.allclose(one.logits, many.logits, atol=1e-5) and torch.equal(one.support, many.support)
    alone = refine_windows(model, images[1:2], Prediction(coarse.logits[1:2], (160, 180)), plans[1:2], batch_size=2)
    assert torch.allclose(alone.logits, one.logits[1:2], atol=1e-5)


def test_progress_callback_can_interrupt():
    images = torch.rand(1, 200, 200, 3)
    model = PixelModel(red_logits)
    plans = _plans_for(images, model, fraction=1.0)
    calls = []

    def progress(done, total):
        calls.append((done, total))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        refine_windows(model, images, Prediction(torch.zeros(1, 1, 50, 50), (200, 200)), plans,
                       batch_size=2, progress=progress)
    assert model.calls == 1 and calls == [(2, len(plans[0]))] and len(plans[0]) > 2


def test_time_budget_zero_runs_no_window():
    images = torch.rand(1, 128, 128, 3)
    model = PixelModel(red_logits)
    coarse = Prediction(torch.randn(1, 1, 32, 32), (128, 128))
    refined = refine_windows(model, images, coarse, _plans_for(images, model, fraction=1.0), max_seconds=0)
    assert model.calls == 0 and (refined.support == 0).all()
    assert torch.allclose(refined.logits, coarse.logits_at(), atol=1e-5)


def test_refine_rejects_mismatched_inputs():
    model = PixelModel(red_logits)
    images = torch.rand(1, 128, 128, 3)
    plans = _plans_for(images, model)
    with pytest.raises(InputError):
        refine_windows(model, images, Prediction(torch.zeros(1, 1, 8, 8), (100, 128)), plans)
    with pytest.raises(InputError):
        refine_windows(model, images, Prediction(torch.zeros(1, 1, 8, 8), (128, 128)), plans * 2)


# ------------------------------------------------------------------------------------- fusion

def test_fusion_of_constant_predictions_has_no_seams():
    a, b = -3.0, 5.0
    size, margin = (256, 256), 16
    images = torch.rand(1, *size, 3)
    model = PixelModel(lambda x: torch.full_like(x[:, :1], b))
    global_pred = Prediction(torch.full((1, 1, 64, 64), a), size)
    selected = torch.zeros(64, 64, dtype=torch.bool)
    selected[20:34, 8:40] = True
    plan = plan_windows(selected, size, (64, 64), margin=margin)
    local = refine_windows(model, images, global_pred, [plan])
    assert len(plan) > 1
    patch_slope = math.pi / (2 * margin)
    assert max_step(local.logits) <= abs(b - a) * patch_slope + 1e-4

    # The band comes from another prediction with an uncertain rectangle; on the 64² grid the
    # ramp climbs at most 1/5 per grid pixel, i.e. 1/20 per image pixel.
    source = torch.full((1, 1, 64, 64), 9.0)
    source[..., 22:32, 12:36] = 0.0
    band = UncertainBand(rule="hrsod", dilation=2, feather=4)
    weight = band.weight(Prediction(source, size))
    fused = blend(global_pred, local, weight).logits
    assert max_step(fused) <= abs(b - a) * (patch_slope + 1 / 20) + 1e-4
    full_weight = F.interpolate(weight, size=size, mode="bilinear", align_corners=False) >= 1 - 1e-6
    inside = full_weight & (local.support == 1)
    assert inside.sum() > 1000 and torch.allclose(fused[inside], torch.tensor(b), atol=1e-5)
    outside = F.interpolate(weight, size=size, mode="bilinear", align_corners=False) == 0
    assert outside.sum() > 1000 and torch.allclose(fused[outside], torch.tensor(a), atol=1e-5)


def test_band_fusion_keeps_confident_global_pixels():
    size = (128, 128)
    logits = torch.full((1, 1, 32, 32), -8.0)
    logits[..., 10:20, 10:20] = 0.0
    global_pred = Prediction(logits, size)
    local = Prediction(torch.full((1, 1, *size), 4.0), size, support=torch.ones(1, 1, *size))
    fused = BandFusion(UncertainBand(rule="hrsod", dilation=0, feather=1))(global_pred, local)
    assert fused.logits.shape == (1, 1, *size)
    assert torch.allclose(fused.logits[..., 50:70, 50:70], torch.tensor(4.0))
    assert torch.allclose(fused.logits[..., :20, :], torch.tensor(-8.0))
    with pytest.raises(InputError):
        BandFusion()(global_pred, Prediction(torch.zeros(1, 1, 8, 8), (64, 64)))


# ----------------------------------------------------------------------------------- pipeline

def test_segment_highres_end_to_end():
    generator = torch.Generator().manual_seed(5)
    images = torch.zeros(2, 256, 320, 3)
    images[:, 60:200, 80:250] = 1.0
    images[:, 100:101, 20:300] = 1.0                           # a 1-px line the coarse pass blurs
    images += 0.01 * torch.rand(images.shape, generator=generator)
    model = PixelModel(lambda x: 6 * (x[:, :1] - 0.3))
    seen = []
    result = segment_highres(model, images, HighResOptions(batch_size=3),
                             progress=lambda done, total: seen.append((done, total)))
    assert result.prediction.logits.shape == (2, 1, 256, 320)
    assert result.coarse.logits.shape == (2, 1, 64, 64)
    assert all(len(plan) > 0 for plan in result.plans)
    assert seen[-1][0] == seen[-1][1] == sum(len(plan) for plan in result.plans)
    line = result.prediction.probabilities()[:, 100, 40:280]
    assert (line > 0.5).all() and (result.coarse.probabilities()[:, 100, 40:60] < 0.5).all()
    preview = uncertainty_preview(result.coarse, HighResOptions().band, result.plans)
    assert preview.shape == (2, 64, 64) and preview.max() == 1 and preview.min() >= 0


def test_segment_highres_returns_coarse_for_small_images():
    model = PixelModel(red_logits)
    result = segment_highres(model, torch.rand(1, 60, 60, 3))
    assert result.prediction is result.coarse and result.plans == []


def test_uncertainty_refine_budget_limits_windows():
    images = torch.rand(1, 256, 256, 3, generator=torch.Generator().manual_seed(9))
    model = PixelModel(red_logits)
    coarse = Prediction(torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(9)), (256, 256))
    refined, plans = uncertainty_refine(model, images, coarse, max_patches=2, batch_size=1)
    assert len(plans[0]) == 2 and model.calls == 2
    assert refined.support.shape == (1, 1, 256, 256)


@pytest.mark.parametrize("bad", [dict(zoom=1.5), dict(margin=0.5), dict(overlap=0.8), dict(order="random"),
                                 dict(max_patches=-1), dict(batch_size=0), dict(max_seconds=-1.0)])
def test_options_reject_bad_settings(bad):
    with pytest.raises(InputError):
        HighResOptions(**bad)
