"""The ComfyUI nodes, executed through the ComfyUI stand-in (``tests/comfy_standin``).

Expected values come from the nodes' contracts: shapes and devices from ComfyUI's IMAGE/MASK
conventions, mask edits from geometry drawn by hand (squares, rings, a Gaussian step profile
from ``math.erf``), foreground estimation from a synthetic composite with known colours.
"""

import asyncio
import importlib.util
import math
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from comfyui_meticulous.errors import InputError, WeightsError
from comfyui_meticulous.inference import Prediction, inference_size, normalise

from standin import comfyui, write_test_weights  # noqa: F401  (comfyui is a fixture)

REPO_ROOT = Path(__file__).resolve().parents[1]


class PixelModel(nn.Module):
    """Logit = scale·(mean of the normalised input): a per-pixel function; records its input shapes."""

    native_resolution = (64, 64)
    size_multiple = 32
    input_normalisation = "imagenet"

    def __init__(self, scale: float = 8.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(scale))
        self.calls = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return self.scale * x.mean(1, keepdim=True)


@pytest.fixture(scope="module")
def b0_file(det_weights, reference_dir, tmp_path_factory):
    return write_test_weights(det_weights, reference_dir,
                              tmp_path_factory.mktemp("weights") / "birefnet_b0_test.safetensors")


@pytest.fixture
def installed_b0(comfyui, b0_file):
    """The test weights placed in ComfyUI's models/meticulous folder; returns the file name."""
    folder = Path(comfyui.folder_paths.get_folder_paths("meticulous")[0])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / b0_file.name).symlink_to(b0_file)
    return b0_file.name


def run(node, **inputs):
    return node.execute(**inputs).args


def images(batch=2, height=48, width=80, seed=0):
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def wrapped(model):
    from comfyui_meticulous.nodes.comfy import wrap_model
    return wrap_model(model)


# --- registration and schemas --------------------------------------------------------------

def test_every_node_has_a_prefixed_id_category_and_tooltips(comfyui):
    ids = [node.define_schema().node_id for node in asyncio.run(comfyui.extension.get_node_list())]
    assert len(ids) == len(set(ids))
    assert set(ids) == {"Meticulous" + name for name in (
        "LoadModel", "Segment", "CoarsePredict", "PredictionToMask", "UncertaintyMap", "UncertaintyRefine",
        "GlobalLocalFuse", "SegmentHighRes", "VideoMatte", "MaskLevels", "MaskThreshold", "MaskChokeSpread",
        "MaskFeather", "MaskFillHoles", "MaskRemoveSmallIslands", "MaskInvert", "EstimateForeground",
        "Composite")}
    for node_id, node in comfyui.nodes.items():
        schema = node.define_schema()
        assert node_id.startswith("Meticulous") and schema.category.startswith("meticulous/")
        assert schema.display_name and schema.description
        assert issubclass(node, comfyui.api.io.ComfyNode)
        for part in (*schema.inputs, *schema.outputs):
            assert part.tooltip and len(part.tooltip) > 10, (node_id, part.id)
        assert len({i.id for i in schema.inputs}) == len(schema.inputs)
        assert len({o.id for o in schema.outputs}) == len(schema.outputs)
        for inp in schema.inputs:
            if getattr(inp, "options", None) is not None:
                assert inp.default in inp.options, (node_id, inp.id)
            if getattr(inp, "min", None) is not None:
                assert inp.min <= inp.default <= inp.max, (node_id, inp.id)


def test_registers_through_comfyuis_loader_contract(comfyui, monkeypatch):
    """As ComfyUI's ``load_custom_node``: the folder imported under its own name, then
    ``comfy_entrypoint`` -> ComfyExtension -> ``on_load`` -> ``get_node_list``. Nothing may
    touch the network while the node list and its schemas are built."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access while ComfyUI builds the node list")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    name = "ComfyUI-Meticulous-under-test"
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    try:
        spec.loader.exec_module(module)
        extension = asyncio.run(module.comfy_entrypoint())
        assert isinstance(extension, comfyui.api.ComfyExtension)
        asyncio.run(extension.on_load())
        node_list = asyncio.run(extension.get_node_list())
        assert isinstance(node_list, list)
        schemas = [node.define_schema() for node in node_list]
        assert {schema.node_id for schema in schemas} == set(comfyui.nodes)
        assert "meticulous" in comfyui.folder_paths.folder_names_and_paths
    finally:
        for loaded in [key for key in sys.modules if key.startswith(name + ".")]:
            del sys.modules[loaded]


# --- model loading and precision -------------------------------------------------------------

def test_model_list_has_catalogue_ids_and_other_files_once(comfyui, installed_b0):
    folder = Path(comfyui.folder_paths.get_folder_paths("meticulous")[0])
    (folder / "ZhengPeng7_BiRefNet_lite.safetensors").write_bytes(b"not read while listing")
    extra = folder.parent.parent / "shared-models" / "meticulous"  # as extra_model_paths.yaml adds it
    extra.mkdir(parents=True)
    (extra / "from_yaml.safetensors").write_bytes(b"not read while listing")
    (extra / "notes.txt").write_text("not a weight file")
    comfyui.folder_paths.add_model_folder_path("meticulous", str(extra))
    from comfyui_meticulous.nodes.models import model_choices
    choices = model_choices()
    assert choices[:2] == ["birefnet", "birefnet-lite"]
    assert installed_b0 in choices and "from_yaml.safetensors" in choices
    assert "ZhengPeng7_BiRefNet_lite.safetensors" not in choices and "notes.txt" not in choices


def test_load_model_wraps_the_network_for_comfyui(comfyui, installed_b0):
    loader = comfyui.nodes["MeticulousLoadModel"]
    (patcher,) = run(loader, model=installed_b0, precision="auto")
    assert isinstance(patcher, sys.modules["comfy.model_patcher"].ModelPatcher)
    assert patcher.load_device == comfyui.mm.get_torch_device()
    assert patcher.offload_device == comfyui.mm.unet_offload_device()
    assert patcher.model.family == "birefnet" and not patcher.model.training
    assert {p.dtype for p in patcher.model.parameters()} == {torch.float32}  # auto on the CPU
    assert patcher.model_size() > 1_000_000
    (forced,) = run(loader, model=installed_b0, precision="bf16")
    assert {p.dtype for p in forced.model.parameters()} == {torch.bfloat16}


def test_missing_catalogue_model_fails_offline_with_instructions(comfyui):
    with pytest.raises(WeightsError, match="not installed.*HF_HUB_OFFLINE"):
        run(comfyui.nodes["MeticulousLoadModel"], model="birefnet-lite", precision="auto")


def test_auto_precision_follows_comfyui_but_never_halves_cpu_or_mps(comfyui):
    from comfyui_meticulous.nodes.comfy import model_dtype
    gpu = torch.device("cuda", 0)  # only a label: nothing is allocated on it
    assert model_dtype(torch.device("cpu"), "auto") == torch.float32
    assert comfyui.mm.should_use_fp16(torch.device("mps"))
    assert model_dtype(torch.device("mps"), "auto") == torch.float32
    comfyui.mm.gpu_bf16, comfyui.mm.gpu_fp16 = True, True
    assert model_dtype(gpu, "auto") == torch.bfloat16
    comfyui.mm.gpu_bf16 = False
    assert model_dtype(gpu, "auto") == torch.float16
    comfyui.mm.gpu_fp16 = False
    assert model_dtype(gpu, "auto") == torch.float32
    assert model_dtype(torch.device("cpu"), "fp16") == torch.float16


# --- segmentation ----------------------------------------------------------------------------

def test_segment_outputs_mask_and_straight_rgba(comfyui, installed_b0):
    (patcher,) = run(comfyui.nodes["MeticulousLoadModel"], model=installed_b0, precision="auto")
    batch = images()
    mask, rgba = run(comfyui.nodes["MeticulousSegment"], model=patcher, image=batch, resolution=64,
                     keep_aspect=False, batch_size=0, rgba_colour="image")
    out = comfyui.mm.intermediate_device()
    assert mask.shape == (2, 48, 80) and mask.dtype == torch.float32 and mask.device == out
    assert rgba.shape == (2, 48, 80, 4) and rgba.dtype == torch.float32 and rgba.device == out
    assert 0 <= mask.min() and mask.max() <= 1 and mask.std() > 0
    torch.testing.assert_close(rgba[..., :3], batch)
    torch.testing.assert_close(rgba[..., 3], mask)
    call = comfyui.mm.load_calls[-1]
    assert call["models"] == [patcher] and call["force_full_load"]
    assert comfyui.mm.loaded == [patcher]


def test_segment_can_colour_rgba_with_the_estimated_foreground(comfyui):
    batch = images(1, 40, 40)
    mask, plain = run(comfyui.nodes["MeticulousSegment"], model=wrapped(PixelModel()), image=batch,
                      resolution=0, keep_aspect=False, batch_size=1, rgba_colour="image")
    _, estimated = run(comfyui.nodes["MeticulousSegment"], model=wrapped(PixelModel()), image=batch,
                       resolution=0, keep_aspect=False, batch_size=1, rgba_colour="estimated foreground")
    torch.testing.assert_close(estimated[..., 3], mask)
    assert (estimated[..., :3] - plain[..., :3]).abs().max() > 0.01


def test_resolution_and_aspect_reach_the_model(comfyui):
    model = PixelModel()
    node = comfyui.nodes["MeticulousSegment"]
    batch = images(1, 48, 96)
    for resolution, keep_aspect in ((0, False), (128, False), (0, True)):
        run(node, model=wrapped(model), image=batch, resolution=resolution, keep_aspect=keep_aspect,
            batch_size=1, rgba_colour="image")
        assert model.calls[-1][-2:] == inference_size(model, (48, 96), resolution or None, keep_aspect)
    assert model.calls[0][-2:] == (64, 64) and model.calls[1][-2:] == (128, 128)
    assert model.calls[2][-2] < model.calls[2][-1]


def test_batch_size_zero_plans_memory_and_uses_the_cpu_default(comfyui):
    from comfyui_meticulous.nodes.common import CPU_BATCH, activation_bytes
    model = PixelModel()
    node = comfyui.nodes["MeticulousSegment"]
    run(node, model=wrapped(model), image=images(5), resolution=0, keep_aspect=False, batch_size=0,
        rgba_colour="image")
    assert [shape[0] for shape in model.calls] == [CPU_BATCH] * 5
    assert comfyui.mm.load_calls[-1]["memory_required"] == activation_bytes((64, 64))
    run(node, model=wrapped(model), image=images(5), resolution=0, keep_aspect=False, batch_size=3,
        rgba_colour="image")
    assert comfyui.mm.load_calls[-1]["memory_required"] == 3 * activation_bytes((64, 64))


def test_automatic_batch_size_on_a_gpu_fits_free_memory(comfyui):
    from comfyui_meticulous.nodes.common import CPU_BATCH, MAX_AUTO_BATCH, auto_batch_size
    gib = 1024 ** 3
    assert auto_batch_size(10 * gib, 4 * gib, on_cpu=False) == 2
    assert auto_batch_size(gib, 4 * gib, on_cpu=False) == 1
    assert auto_batch_size(1000 * gib, gib, on_cpu=False) == MAX_AUTO_BATCH
    assert auto_batch_size(1000 * gib, gib, on_cpu=True) == CPU_BATCH


def test_cancel_stops_between_batches(comfyui):
    model = PixelModel()
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append((value, total))
        comfyui.mm.interrupt_current_processing()  # the user presses cancel during batch 1

    comfyui.utils.set_progress_bar_global_hook(hook)
    with pytest.raises(comfyui.mm.InterruptProcessingException):
        run(comfyui.nodes["MeticulousSegment"], model=wrapped(model), image=images(3), resolution=0,
            keep_aspect=False, batch_size=1, rgba_colour="image")
    assert len(model.calls) == 1 and seen == [(1, 3)]
    assert not comfyui.mm.processing_interrupted()


def test_unloaded_model_is_loaded_again_for_the_next_run(comfyui):
    patcher = wrapped(PixelModel())
    node = comfyui.nodes["MeticulousSegment"]
    first, _ = run(node, model=patcher, image=images(1), resolution=0, keep_aspect=False, batch_size=1,
                   rgba_colour="image")
    comfyui.mm.unload_all_models()
    assert comfyui.mm.loaded == [] and patcher.loaded_size() == 0
    again, _ = run(node, model=patcher, image=images(1), resolution=0, keep_aspect=False, batch_size=1,
                   rgba_colour="image")
    torch.testing.assert_close(first, again)
    assert comfyui.mm.loaded == [patcher] and patcher.loaded_size() > 0


def test_prediction_chain_matches_one_shot_segment(comfyui, installed_b0):
    (patcher,) = run(comfyui.nodes["MeticulousLoadModel"], model=installed_b0, precision="auto")
    batch = images(2, 40, 72, seed=3)
    settings = dict(model=patcher, image=batch, resolution=64, keep_aspect=False, batch_size=2)
    (prediction,) = run(comfyui.nodes["MeticulousCoarsePredict"], **settings)
    assert isinstance(prediction, Prediction)
    assert prediction.logits.shape == (2, 1, 64, 64) and tuple(prediction.image_size) == (40, 72)
    assert prediction.logits.device == comfyui.mm.get_torch_device()
    (mask,) = run(comfyui.nodes["MeticulousPredictionToMask"], prediction=prediction)
    expected, _ = run(comfyui.nodes["MeticulousSegment"], rgba_colour="image", **settings)
    torch.testing.assert_close(mask, expected)
    (uncertainty,) = run(comfyui.nodes["MeticulousUncertaintyMap"], prediction=prediction)
    assert uncertainty.shape == (2, 40, 72, 3) and uncertainty.device == comfyui.mm.intermediate_device()
    torch.testing.assert_close(uncertainty[..., 1], 1 - (2 * mask - 1).abs())


# --- mask tools: pixel semantics on a batch ----------------------------------------------------

def squares() -> torch.Tensor:
    """Two 40x40 frames with different solid squares: rows/cols 10..29 and 5..19."""
    masks = torch.zeros(2, 40, 40)
    masks[0, 10:30, 10:30] = 1
    masks[1, 5:20, 5:20] = 1
    return masks


def span(row: torch.Tensor) -> tuple[int, int]:
    """First and last column where a mask row is at least one half."""
    on = (row >= 0.5).nonzero().flatten()
    return int(on[0]), int(on[-1])


def mask_node(comfyui, name, **inputs):
    (mask,) = run(comfyui.nodes[name], **inputs)
    assert mask.device == comfyui.mm.intermediate_device() and mask.dtype == torch.float32
    return mask


def test_choke_and_spread_move_the_edge_by_that_many_pixels(comfyui):
    choked = mask_node(comfyui, "MeticulousMaskChokeSpread", mask=squares(), pixels=-3.0)
    spread = mask_node(comfyui, "MeticulousMaskChokeSpread", mask=squares(), pixels=3.0)
    assert span(choked[0, 20]) == (13, 26) and span(choked[1, 12]) == (8, 16)
    assert span(spread[0, 20]) == (7, 32) and span(spread[1, 12]) == (2, 22)


def test_feather_ramps_an_edge_like_a_gaussian_of_half_the_width(comfyui):
    masks = torch.zeros(2, 8, 40)
    masks[0, :, :20] = 1  # edge between columns 19 and 20
    masks[1, :, :10] = 1  # edge between columns 9 and 10
    feathered = mask_node(comfyui, "MeticulousMaskFeather", mask=masks, pixels=4.0)
    sigma = 2.0
    for frame, edge in ((0, 19.5), (1, 9.5)):
        expected = torch.tensor([0.5 * (1 + math.erf((edge - x) / (sigma * math.sqrt(2)))) for x in range(40)])
        torch.testing.assert_close(feathered[frame, 4], expected, atol=5e-3, rtol=0)


def test_levels_and_threshold_remap_values(comfyui):
    values = torch.tensor([[[0.1, 0.2, 0.4, 0.6, 0.7]], [[0.49, 0.5, 0.51, 0.0, 1.0]]])
    levels = mask_node(comfyui, "MeticulousMaskLevels", mask=values, black_point=0.2, white_point=0.6, gamma=2.0)
    torch.testing.assert_close(levels[0, 0], torch.tensor([0.0, 0.0, math.sqrt(0.5), 1.0, 1.0]))
    hard = mask_node(comfyui, "MeticulousMaskThreshold", mask=values, threshold=0.5)
    assert hard[1, 0].tolist() == [0.0, 1.0, 1.0, 0.0, 1.0]
    node = comfyui.nodes["MeticulousMaskLevels"]
    assert node.validate_inputs(black_point=0.2, white_point=0.6) is True
    assert "black_point < white_point" in node.validate_inputs(black_point=0.6, white_point=0.6)
    assert "black_point < white_point" in node.validate_inputs(black_point=-0.1, white_point=0.6)


def test_fill_holes_fills_only_enclosed_background(comfyui):
    masks = torch.zeros(2, 20, 20)
    masks[:, 4:16, 4:16] = 1
    masks[:, 8:12, 8:12] = 0        # a hole in both frames
    masks[1, 8:12, 12:] = 0         # frame 2: a channel opens the hole to the border
    masks[:, 0, 0] = 0.3            # a faint pixel outside, unchanged
    filled = mask_node(comfyui, "MeticulousMaskFillHoles", mask=masks, threshold=0.5)
    assert filled[0, 8:12, 8:12].eq(1).all()
    assert filled[1, 8:12, 8:12].eq(0).all()
    assert filled[:, 0, 0].tolist() == pytest.approx([0.3, 0.3])


def test_remove_small_islands_keeps_pieces_of_the_minimum_area(comfyui):
    masks = torch.zeros(2, 30, 30)
    masks[:, 2:12, 2:12] = 1        # 100 px
    masks[0, 20:23, 20:23] = 1      # 9 px speck
    masks[1, 20:24, 20:24] = 1      # 16 px piece
    cleaned = mask_node(comfyui, "MeticulousMaskRemoveSmallIslands", mask=masks, min_area=10, threshold=0.5)
    assert cleaned[0, 20:23, 20:23].eq(0).all() and cleaned[1, 20:24, 20:24].eq(1).all()
    assert cleaned[:, 2:12, 2:12].eq(1).all()
    kept = mask_node(comfyui, "MeticulousMaskRemoveSmallIslands", mask=masks, min_area=9, threshold=0.5)
    torch.testing.assert_close(kept, masks)


def test_invert_and_bare_hw_masks(comfyui):
    masks = squares()
    torch.testing.assert_close(mask_node(comfyui, "MeticulousMaskInvert", mask=masks), 1 - masks)
    single = mask_node(comfyui, "MeticulousMaskInvert", mask=masks[0])
    assert single.shape == (1, 40, 40)


# --- foreground colour and compositing ---------------------------------------------------------

def synthetic_composite():
    """A known foreground over a known background, alpha ramping across the frame."""
    height, width = 32, 48
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    foreground = torch.stack([0.9 - 0.2 * y, 0.5 + 0.2 * x, 0.1 + 0.1 * y], -1)[None].repeat(2, 1, 1, 1)
    background = torch.stack([0.1 + 0.0 * x, 0.2 + 0.3 * y, 0.9 - 0.2 * x], -1)[None].repeat(2, 1, 1, 1)
    alpha = (1.5 - 2.5 * x).clamp(0, 1)[None].repeat(2, 1, 1)
    alpha[1] = alpha[1].flip(-1)
    image = alpha[..., None] * foreground + (1 - alpha[..., None]) * background
    return image, alpha, foreground, background


def test_estimated_foreground_is_closer_to_the_truth_than_the_image(comfyui):
    image, alpha, truth, _ = synthetic_composite()
    foreground, rgba, premultiplied = run(comfyui.nodes["MeticulousEstimateForeground"], image=image,
                                          alpha=alpha, method="multilevel")
    band = (alpha > 0.2) & (alpha < 0.8)
    error_estimated = (foreground - truth).abs().sum(-1)[band].mean()
    error_image = (image - truth).abs().sum(-1)[band].mean()
    assert error_estimated < 0.5 * error_image
    torch.testing.assert_close(rgba, torch.cat([foreground, alpha[..., None]], -1))
    torch.testing.assert_close(premultiplied, foreground * alpha[..., None])


def test_composite_conventions_colour_and_image_backgrounds(comfyui):
    image, alpha, truth, background = synthetic_composite()
    node = comfyui.nodes["MeticulousComposite"]
    (straight,) = run(node, foreground=truth, alpha=alpha, alpha_convention="straight",
                      background_colour="#000000", background=background)
    torch.testing.assert_close(straight, image)
    (premultiplied,) = run(node, foreground=truth * alpha[..., None], alpha=alpha,
                           alpha_convention="premultiplied", background_colour="#000000", background=background)
    torch.testing.assert_close(premultiplied, image)
    rgba = torch.cat([truth, alpha[..., None]], -1)
    (over_red,) = run(node, foreground=rgba, alpha_convention="straight", background_colour="#FF0000")
    red = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(over_red, alpha[..., None] * truth + (1 - alpha[..., None]) * red)
    (one_background,) = run(node, foreground=truth, alpha=alpha, alpha_convention="straight",
                            background_colour="#000000", background=background[:1])
    torch.testing.assert_close(one_background, image)
    with pytest.raises(InputError, match="alpha"):
        run(node, foreground=truth, alpha_convention="straight", background_colour="#000000")
    assert node.validate_inputs(background_colour="#12ab3C") is True
    assert "hex" in node.validate_inputs(background_colour="red")


# --- high resolution -------------------------------------------------------------------------

def sharp_discs(batch=2, height=192, width=256):
    """Bright discs on a dark ground with hard edges: detail a 64² pass cannot resolve."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    frames = []
    for index in range(batch):
        inside = ((y - 90 - 10 * index) ** 2 + (x - 120 - 15 * index) ** 2) < 70 ** 2
        frames.append(torch.where(inside[..., None], torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.1, 0.15, 0.2])))
    return torch.stack(frames)


def test_refine_and_fuse_bring_back_full_resolution_edges(comfyui):
    model = PixelModel()
    patcher = wrapped(model)
    batch = sharp_discs()
    with torch.no_grad():  # the model applied at full resolution
        truth = torch.sigmoid(model(normalise(batch.permute(0, 3, 1, 2)))).squeeze(1)
    model.calls.clear()
    (coarse,) = run(comfyui.nodes["MeticulousCoarsePredict"], model=patcher, image=batch, resolution=0,
                    keep_aspect=False, batch_size=0)
    (local,) = run(comfyui.nodes["MeticulousUncertaintyRefine"], model=patcher, image=batch, prediction=coarse,
                   rule="mos", fraction=0.1, zoom=1.0, max_patches=0, batch_size=0)
    assert local.logits.shape == (2, 1, 192, 256) and local.support.shape == (2, 1, 192, 256)
    assert len(model.calls) > 2  # windows ran after the coarse pass
    (fused,) = run(comfyui.nodes["MeticulousGlobalLocalFuse"], global_prediction=coarse, local_prediction=local,
                   rule="mos", fraction=0.1)
    (refined_mask,) = run(comfyui.nodes["MeticulousPredictionToMask"], prediction=fused)
    (coarse_mask,) = run(comfyui.nodes["MeticulousPredictionToMask"], prediction=coarse)
    error_refined = (refined_mask - truth).abs().mean()
    error_coarse = (coarse_mask - truth).abs().mean()
    assert error_refined < 0.7 * error_coarse

    mask, rgba, prediction, preview = run(
        comfyui.nodes["MeticulousSegmentHighRes"], model=patcher, image=batch, resolution=0, rule="mos",
        fraction=0.1, zoom=1.0, max_patches=0, batch_size=0, rgba_colour="image")
    torch.testing.assert_close(mask, refined_mask)
    torch.testing.assert_close(rgba[..., 3], mask)
    assert prediction.image_size == (192, 256)
    assert preview.shape[0] == 2 and preview.shape[-1] == 3 and preview.max() == 1


def test_window_budget_limits_the_model_passes(comfyui):
    model = PixelModel()
    patcher = wrapped(model)
    batch = sharp_discs(1)
    (coarse,) = run(comfyui.nodes["MeticulousCoarsePredict"], model=patcher, image=batch, resolution=0,
                    keep_aspect=False, batch_size=1)
    model.calls.clear()
    run(comfyui.nodes["MeticulousUncertaintyRefine"], model=patcher, image=batch, prediction=coarse, rule="mos",
        fraction=0.1, zoom=1.0, max_patches=2, batch_size=1)
    assert len(model.calls) == 2


# --- video -----------------------------------------------------------------------------------

def as_executed(node, unique_id: str, prompt: dict | None = None):
    """The class ComfyUI executes: a copy whose ``hidden`` carries the node's id and the prompt."""
    return type(node.__name__, (node,), {"hidden": SimpleNamespace(unique_id=unique_id, prompt=prompt)})


def still_video(frames=6, seed=5):
    """A still scene with sensor noise: where temporal smoothing has something to remove."""
    scene = sharp_discs(1, 48, 64)
    noise = 0.04 * torch.randn(frames, 48, 64, 3, generator=torch.Generator().manual_seed(seed))
    return (scene + noise).clamp(0, 1)


def test_video_matte_without_smoothing_is_per_frame_segment(comfyui):
    patcher = wrapped(PixelModel())
    video = still_video()
    matte = as_executed(comfyui.nodes["MeticulousVideoMatte"], "11")
    masks, rgba = run(matte, model=patcher, frames=video, resolution=0, keep_aspect=False, batch_size=0,
                      temporal_smoothing=0.0, continue_previous=True)
    expected, _ = run(comfyui.nodes["MeticulousSegment"], model=patcher, image=video, resolution=0,
                      keep_aspect=False, batch_size=1, rgba_colour="image")
    torch.testing.assert_close(masks, expected)
    assert rgba.shape == (6, 48, 64, 4) and rgba.device == comfyui.mm.intermediate_device()
    torch.testing.assert_close(rgba[..., 3], masks)


def test_video_matte_continues_smoothing_across_chunked_runs(comfyui):
    patcher = wrapped(PixelModel(scale=1.0))  # soft probabilities: noise shows in the mask
    video = still_video()
    settings = dict(model=patcher, resolution=0, keep_aspect=False, batch_size=2, temporal_smoothing=0.8)
    whole, _ = run(as_executed(comfyui.nodes["MeticulousVideoMatte"], "1"), frames=video,
                   continue_previous=True, **settings)
    chunked = as_executed(comfyui.nodes["MeticulousVideoMatte"], "2")
    first, _ = run(chunked, frames=video[:3], continue_previous=True, **settings)
    second, _ = run(chunked, frames=video[3:], continue_previous=True, **settings)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    restarted, _ = run(chunked, frames=video[3:], continue_previous=False, **settings)
    assert (restarted - whole[3:]).abs().max() > 1e-3
    raw, _ = run(as_executed(comfyui.nodes["MeticulousVideoMatte"], "3"), frames=video,
                 continue_previous=True, **{**settings, "temporal_smoothing": 0.0})
    flicker = (raw[1:] - raw[:-1]).abs().mean()
    assert (whole[1:] - whole[:-1]).abs().mean() < 0.5 * flicker


def test_video_matte_starts_afresh_when_the_clip_changes(comfyui):
    patcher = wrapped(PixelModel(scale=1.0))
    video = still_video()
    settings = dict(model=patcher, resolution=0, keep_aspect=False, batch_size=2, temporal_smoothing=0.8)

    def prompt(path):
        return {"5": {"class_type": "VHS_LoadVideoPath", "inputs": {"video": path, "frame_load_cap": 0}},
                "7": {"class_type": "MeticulousVideoMatte", "inputs": {"frames": ["5", 0]}}}

    fresh, _ = run(as_executed(comfyui.nodes["MeticulousVideoMatte"], "7"), frames=video[3:],
                   continue_previous=False, **settings)
    first = as_executed(comfyui.nodes["MeticulousVideoMatte"], "7", prompt("a.mp4"))
    run(first, frames=video[:3], continue_previous=True, **settings)
    other_clip, _ = run(as_executed(comfyui.nodes["MeticulousVideoMatte"], "7", prompt("b.mp4")),
                        frames=video[3:], continue_previous=True, **settings)
    torch.testing.assert_close(other_clip, fresh)
    run(first, frames=video[:3], continue_previous=True, **settings)
    same_clip, _ = run(first, frames=video[3:], continue_previous=True, **settings)
    assert (same_clip - fresh).abs().max() > 1e-3


# --- learned blocks --------------------------------------------------------------------------

def test_refine_and_fuse_nodes_take_learned_weights(comfyui, installed_b0):
    from comfyui_meticulous.highres import BandFusion, UncertainBand, uncertainty_refine
    from comfyui_meticulous.highres.learned import LearnedFusion
    from comfyui_meticulous.models.hrsod import GLFN
    from comfyui_meticulous.models.learned import load_block, save_block
    from comfyui_meticulous.models.refinemask import RefineMaskRefiner

    folder = Path(comfyui.folder_paths.get_folder_paths("meticulous")[0])
    torch.manual_seed(0)
    save_block(GLFN(), folder / "my_glfn.safetensors", "glfn")
    save_block(RefineMaskRefiner(pyramid=(8, 8, 16, 16), width=32), folder / "my_refiner.safetensors", "refinemask")

    def options(node_id):
        schema = comfyui.nodes[node_id].define_schema()
        return next(i for i in schema.inputs if i.id == "learned_weights").options

    # Published network weights (installed_b0) are not offered as learned blocks, nor the blocks as models.
    assert options("MeticulousGlobalLocalFuse") == ["none (training-free)", "my_glfn.safetensors"]
    assert options("MeticulousUncertaintyRefine") == ["none (training-free)", "my_refiner.safetensors"]
    models = next(i for i in comfyui.nodes["MeticulousLoadModel"].define_schema().inputs if i.id == "model").options
    assert installed_b0 in models and "my_glfn.safetensors" not in models

    batch = sharp_discs(1, 64, 96)
    coarse = Prediction(torch.randn(1, 1, 16, 24, generator=torch.Generator().manual_seed(1)), (64, 96))
    (local,) = run(comfyui.nodes["MeticulousUncertaintyRefine"], model=wrapped(PixelModel()), image=batch,
                   prediction=coarse, rule="mos", fraction=0.1, zoom=1.0, max_patches=0, batch_size=0,
                   learned_weights="my_refiner.safetensors")
    expected, _ = uncertainty_refine(load_block(folder / "my_refiner.safetensors"), batch, coarse, UncertainBand(),
                                     batch_size=1)
    torch.testing.assert_close(local.logits, expected.logits)
    assert (local.support == 1).any()

    fuse = comfyui.nodes["MeticulousGlobalLocalFuse"]
    (fused,) = run(fuse, global_prediction=coarse, local_prediction=local, rule="mos", fraction=0.1,
                   learned_weights="my_glfn.safetensors", image=batch)
    direct = LearnedFusion(load_block(folder / "my_glfn.safetensors"), BandFusion(UncertainBand()))(coarse, local, batch)
    torch.testing.assert_close(fused.logits, direct.logits)
    with pytest.raises(InputError, match="connect the image"):
        run(fuse, global_prediction=coarse, local_prediction=local, rule="mos", fraction=0.1,
            learned_weights="my_glfn.safetensors")
    with pytest.raises(WeightsError, match="refinemask block, but"):
        run(fuse, global_prediction=coarse, local_prediction=local, rule="mos", fraction=0.1,
            learned_weights="my_refiner.safetensors", image=batch)
