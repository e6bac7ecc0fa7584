"""The papers' learned blocks: HRSOD's GSN/LRN/GLFN, MeticulousNet's HierPR decoder and the
RefineMask-style refiner, and their use as refine and fuse steps."""

import pytest
import torch
import torch.nn.functional as F

from comfyui_meticulous.errors import InputError, WeightsError
from comfyui_meticulous.highres import BandFusion
from comfyui_meticulous.highres.learned import LearnedFusion, refine_prediction
from comfyui_meticulous.inference import Prediction
from comfyui_meticulous.models.hierpr import HierPR, MeticulousNet, select_uncertain
from comfyui_meticulous.models.hrsod import GLFN, GSN, LRN, run_in_stripes
from comfyui_meticulous.models import load_model, save_model
from comfyui_meticulous.models.refinemask import RefineMaskRefiner, boundary_band, boundary_merge
from comfyui_meticulous.models.registry import build

TINY_VGG = {"widths": (8, 8, 16, 16, 16), "branch_width": 8}
TINY_MOS = {"widths": (16, 16, 8), "point_width": 16, "head_width": 8}
TINY = {
    "gsn": lambda: GSN(**TINY_VGG),
    "lrn": lambda: LRN(**TINY_VGG),
    "glfn": lambda: GLFN(),
    "hierpr-resnet50": lambda: MeticulousNet(
        "resnet50", encoder_options={"base": 8, "blocks": (1, 1, 1, 1), "out_channels": 16}, **TINY_MOS),
    "hierpr-mobilenetv3": lambda: MeticulousNet("mobilenetv3", encoder_options={"width_mult": 0.25}, **TINY_MOS),
    "refinemask": lambda: RefineMaskRefiner(pyramid=(8, 8, 16, 16), width=32),
}


pytestmark = pytest.mark.usefixtures("single_thread")


def run(model, x, coarse):
    return model(x, coarse) if model.takes_coarse else model(x)


def test_hrsod_value_count_matches_the_paper():
    # Caffe blobs of the released definitions: conv weights and biases, BatchNorm mean, variance
    # and factor, Scale gamma and beta. Our state dict holds the same values (the factor is the
    # BatchNorm step counter), so its size is the paper's "129.6 MB".
    with torch.device("meta"):
        counts = [sum(t.numel() for t in net.state_dict().values()) for net in (GSN(), LRN(), GLFN())]
    assert counts == [16_199_419, 16_199_545, 1_665]
    assert round(sum(counts) * 4 / 1e6, 2) == 129.60


def test_glfn_layers_follow_the_released_definition():
    glfn = GLFN()
    assert [layer.conv1.out_channels for layer in glfn.dense] == [8, 8, 8]
    assert [layer.conv2.out_channels for layer in glfn.dense] == [2, 2, 2]
    assert [branch.dilation[0] for branch in glfn.branches] == [1, 6, 12, 18]
    assert glfn.final.in_channels == 8 and glfn.final.kernel_size == (3, 3)
    assert glfn.receptive_radius == 3 + 18 + 1


@pytest.mark.parametrize("name", TINY)
def test_block_shapes_and_batch_independence(name):
    torch.manual_seed(0)
    model = TINY[name]().eval()
    x, coarse = torch.randn(3, 3, 32, 48), torch.randn(3, 1, 8, 12)
    with torch.no_grad():
        out = run(model, x, coarse)
        alone = run(model, x[1:2], coarse[1:2])
    assert out.shape == (3, 1, 32, 48) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1:2], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_block_output_dtype_follows_the_weights(name, dtype):
    torch.manual_seed(0)
    model = TINY[name]().eval().to(dtype)
    with torch.no_grad():
        out = run(model, torch.randn(2, 3, 32, 32, dtype=dtype), torch.randn(2, 1, 32, 32, dtype=dtype))
    assert out.dtype == dtype and out.shape == (2, 1, 32, 32) and torch.isfinite(out).all()


def test_blocks_reject_bad_input():
    with pytest.raises(InputError, match="multiples of 16"):
        TINY["gsn"]()(torch.zeros(1, 3, 24, 32))
    with pytest.raises(InputError, match=r"\[B,1,h,w\]"):
        TINY["refinemask"]()(torch.zeros(2, 3, 32, 32), torch.zeros(1, 1, 8, 8))
    with pytest.raises(InputError, match="coarse"):
        TINY["hierpr-resnet50"]()(torch.zeros(1, 3, 32, 32))


def test_hierpr_selects_the_most_uncertain_tenth():
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 10, 10) * 3
    index = select_uncertain(logits, 0.1)
    assert index.shape == (2, 10)
    for b in range(2):
        flat = logits[b].flatten().abs()
        chosen = torch.zeros(100, dtype=torch.bool)
        chosen[index[b]] = True
        assert flat[chosen].max() <= flat[~chosen].min()


def test_hierpr_touches_only_the_selected_points():
    torch.manual_seed(2)
    block = HierPR(channels=4, fine_channels=6, head_width=8, point_width=16).eval()
    coarse = torch.randn(2, 1, 8, 8) * 2
    fine = torch.randn(2, 6, 16, 16)
    changed = fine + torch.randn_like(fine)  # new fine features everywhere, selected points or not
    with torch.no_grad():
        out, out_changed = block.refine(coarse, fine), block.refine(coarse, changed)
    upsampled = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
    selected = torch.zeros(2, 256, dtype=torch.bool)
    selected.scatter_(1, select_uncertain(upsampled, 0.1), True)
    selected = selected.view(2, 1, 16, 16)
    assert int(selected.sum()) == 2 * round(0.1 * 256)
    # Away from the selected points the output is the upsampled coarse map, whatever the features.
    assert torch.equal(out[~selected], upsampled[~selected])
    assert torch.equal(out_changed[~selected], upsampled[~selected])
    # At the selected points the point head decides, so new features change the result.
    assert (out[selected] != out_changed[selected]).all()


def test_meticulousnet_gives_seven_block_outputs_ending_at_full_resolution():
    model = TINY["hierpr-mobilenetv3"]().eval()
    with torch.no_grad():
        outputs = model.forward_all(torch.randn(1, 3, 32, 32), torch.randn(1, 1, 32, 32))
    assert list(outputs) == ["S8_0", "S8_1", "S8_2", "S4_2", "S8_3", "S4_3", "S2_3"]
    sides = {name: refined.shape[-1] for name, (_, refined) in outputs.items()}
    assert sides == {"S8_0": 8, "S8_1": 8, "S8_2": 8, "S4_2": 16, "S8_3": 8, "S4_3": 16, "S2_3": 32}
    assert all(coarse.shape[-1] * 2 == refined.shape[-1] for coarse, refined in outputs.values())


def test_boundary_band_is_the_ring_around_the_contour():
    mask = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    mask[..., 3:9, 3:9] = True
    band = boundary_band(mask, 1)[0, 0]
    expected = torch.zeros(12, 12, dtype=torch.bool)
    expected[2:10, 2:10] = True
    expected[4:8, 4:8] = False  # one pixel inside and one outside the square's edge
    assert torch.equal(band, expected)


def test_refinemask_updates_only_the_boundary_band():
    torch.manual_seed(3)
    stages = [torch.randn(1, 1, 4, 4), torch.randn(1, 1, 8, 8) * 3, torch.randn(1, 1, 16, 16),
              torch.randn(1, 1, 32, 32)]
    merged = stages[1]
    for finer in stages[2:]:
        band = F.interpolate(boundary_band(merged > 0, 1).float(), size=finer.shape[-2:], mode="nearest") > 0
        upsampled = F.interpolate(merged, size=finer.shape[-2:], mode="bilinear", align_corners=False)
        assert 0 < band.sum() < band.numel()
        step = boundary_merge([stages[0], merged, finer])
        assert torch.equal(step[~band], upsampled[~band]) and torch.equal(step[band], finer[band])
        merged = step
    assert torch.equal(boundary_merge(stages), merged)

    model = TINY["refinemask"]().eval()
    x, coarse = torch.randn(1, 3, 32, 32), torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x, coarse), boundary_merge(model.forward_all(x, coarse)))


def test_glfn_in_stripes_equals_the_whole_image():
    torch.manual_seed(4)
    glfn = GLFN().eval()
    x, coarse = torch.randn(1, 3, 90, 40), torch.randn(1, 1, 90, 40)
    with torch.no_grad():
        torch.testing.assert_close(run_in_stripes(glfn, x, coarse, rows=16), glfn(x, coarse), rtol=1e-5, atol=1e-5)


def test_learned_fusion_plugs_into_the_fusion_interface():
    torch.manual_seed(5)
    glfn = GLFN().eval()
    images = torch.rand(2, 40, 56, 3)
    global_pred = Prediction(torch.randn(2, 1, 10, 14), (40, 56))
    local_pred = Prediction(torch.randn(2, 1, 40, 56), (40, 56))
    fused = LearnedFusion(glfn, resolution=None)(global_pred, local_pred, images)
    assert fused.logits.shape == (2, 1, 40, 56) and fused.image_size == (40, 56)
    # GLFN runs on the band fusion's combined map, exactly as on its own.
    combined = BandFusion()(global_pred, local_pred, images)
    direct = refine_prediction(glfn, images, combined)
    assert torch.equal(fused.logits, direct.logits)
    at_32 = LearnedFusion(glfn, resolution=32)(global_pred, local_pred, images)
    assert at_32.logits.shape == (2, 1, 32, 32) and at_32.image_size == (40, 56)
    with pytest.raises(InputError, match="images"):
        LearnedFusion(glfn)(global_pred, local_pred)


def test_refine_prediction_runs_a_refiner_on_a_prediction():
    model = TINY["refinemask"]().eval()
    images = torch.rand(1, 30, 50, 3)
    refined = refine_prediction(model, images, Prediction(torch.randn(1, 1, 8, 8), (30, 50)))
    assert refined.logits.shape == (1, 1, 32, 48) and refined.image_size == (30, 50)
    with pytest.raises(InputError, match="coarse model"):
        refine_prediction(TINY["gsn"](), images, Prediction(torch.randn(1, 1, 8, 8), (30, 50)))


def test_saved_block_reloads_with_its_configuration(tmp_path):
    torch.manual_seed(6)
    model = TINY["hierpr-mobilenetv3"]().eval()
    path = tmp_path / "block.safetensors"
    save_model(model, path, {"note": "test"})
    loaded = load_model(path)
    assert isinstance(loaded, MeticulousNet) and loaded.config == model.config and not loaded.training
    x, coarse = torch.randn(1, 3, 32, 32), torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x, coarse), model(x, coarse))
    with pytest.raises(WeightsError, match="glfn"):
        load_model(path, expect="glfn")
    assert isinstance(build("glfn"), GLFN)
    with pytest.raises(InputError, match="unknown architecture"):
        build("unet")


def test_residual_glfn_starts_as_the_identity_on_the_combined_map():
    glfn = GLFN(residual=True).eval()
    coarse = torch.linspace(-5, 5, 24 * 24).view(1, 1, 24, 24)
    with torch.no_grad():
        out = glfn(torch.randn(1, 3, 24, 24), coarse)
    torch.testing.assert_close(out, coarse, rtol=0, atol=1e-3)
    with torch.device("meta"):
        assert sum(t.numel() for t in GLFN(residual=True).state_dict().values()) == 1_665
