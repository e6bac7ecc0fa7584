"""Swin v1 and PVT-v2 backbones: key layout, recognition from weights, parity with the
official BiRefNet backbones, caches, dtypes and batch independence."""

import pytest
import torch
import torch.nn.functional as F

from comfyui_meticulous.errors import InputError, WeightsError
from comfyui_meticulous.models.backbones import BACKBONES, BackboneSpec, build_backbone, detect_backbone
from comfyui_meticulous.models.backbones.swin import relative_position_index

from parity_fixtures import parity_cases

# In-repo compact cases first, then the optional larger ones (``parity_fixtures``).
PARITY_CASES = parity_cases("birefnet/birefnet_swin_v1_t_192x256", "birefnet/birefnet_pvt_v2_b0_160x224",
                            "birefnet/birefnet_swin_v1_t_512x512", "birefnet/birefnet_pvt_v2_b0_384x640")
_DTYPES = {"float32": torch.float32, "int64": torch.int64}


@pytest.fixture(scope="module")
def manifest(reference_dir, det_weights):
    """``manifest(name)`` -> the full BiRefNet manifest [(key, shape, dtype name), ...]."""
    return lambda name: det_weights.load_spec(reference_dir / "birefnet" / f"keys_{name}.tsv")


def _meta_state_dict(spec, dtype=None):
    return {key: torch.empty(shape, dtype=dtype or _DTYPES[dt], device="meta")
            for key, shape, dt in spec}


def _trained_like(name: str, det_weights, spec) -> torch.nn.Module:
    """The backbone with the fixtures' deterministic weights, loaded strictly."""
    model = build_backbone(name).eval()
    own = {f"bb.{key}": value for key, value in model.state_dict().items()}
    weights = det_weights.deterministic_state_dict(spec, reference_buffers=own)
    model.load_state_dict(
        {key[3:]: value for key, value in weights.items() if key.startswith("bb.")}, strict=True)
    return model


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean((0, 2, 3)), x.pow(2).mean((0, 2, 3)).sqrt()


def test_registry_lists_the_birefnet_backbones():
    assert set(BACKBONES) == {"swin_v1_t", "swin_v1_s", "swin_v1_b", "swin_v1_l",
                              "pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b5"}
    assert all(isinstance(spec, BackboneSpec) and spec.name == name
               for name, spec in BACKBONES.items())
    # Native widths from the official BiRefNet lateral channel table.
    assert BACKBONES["swin_v1_l"].channels == (192, 384, 768, 1536)
    assert BACKBONES["swin_v1_b"].channels == (128, 256, 512, 1024)
    assert BACKBONES["swin_v1_t"].channels == BACKBONES["swin_v1_s"].channels == (96, 192, 384, 768)
    assert BACKBONES["pvt_v2_b0"].channels == (32, 64, 160, 256)
    assert BACKBONES["pvt_v2_b2"].channels == (64, 128, 320, 512)
    with pytest.raises(InputError, match="swin_v1_t"):
        build_backbone("resnet50")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_state_dict_matches_manifest(name, manifest):
    with torch.device("meta"):
        model = build_backbone(name)
    actual = [(key, tuple(t.shape), t.dtype) for key, t in model.state_dict().items()]
    expected = [(key[3:], shape, _DTYPES[dt]) for key, shape, dt in manifest(name)
                if key.startswith("bb.")]
    assert actual == expected
    widths = [model.state_dict()[key].shape[0] for key in (
        [f"norm{i}.weight" for i in range(4)] if name.startswith("swin")
        else [f"norm{i}.weight" for i in range(1, 5)])]
    assert tuple(widths) == BACKBONES[name].channels


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_detect_backbone_from_full_checkpoint(name, manifest):
    assert detect_backbone(_meta_state_dict(manifest(name))) == name


def test_detect_backbone_reads_shapes_of_any_dtype_and_prefix(manifest):
    bare = {key[3:]: t for key, t in _meta_state_dict(manifest("swin_v1_s"), torch.float16).items()
            if key.startswith("bb.") and t.is_floating_point()}
    assert detect_backbone(bare, prefix="") == "swin_v1_s"
    pvt = {k: torch.zeros(s, dtype=torch.bfloat16) for k, s, _ in manifest("pvt_v2_b1")
           if k.startswith("bb.block1.") or k.startswith("bb.patch_embed")}
    pvt.update({k: torch.empty(s, device="meta") for k, s, _ in manifest("pvt_v2_b1")
                if k not in pvt})
    assert detect_backbone(pvt) == "pvt_v2_b1"


def test_detect_backbone_rejects_unknown_weights(manifest):
    with pytest.raises(WeightsError, match=r"bb\.patch_embed\.proj\.weight.*bb\.patch_embed1"):
        detect_backbone({"encoder.conv1.weight": torch.empty(64, 3, 7, 7, device="meta")})
    with pytest.raises(WeightsError, match="no known backbone"):
        detect_backbone({})

    sd = _meta_state_dict(manifest("swin_v1_t"))
    for key in [k for k in sd if k.startswith("bb.layers.2.blocks.5.")]:
        sd[key.replace("blocks.5.", "blocks.6.")] = sd[key]
    with pytest.raises(WeightsError, match=r"depths=\(2, 2, 7, 2\).*swin_v1_t"):
        detect_backbone(sd)

    sd = _meta_state_dict(manifest("pvt_v2_b2"))
    del sd["bb.block3.0.mlp.fc1.weight"]
    with pytest.raises(WeightsError, match=r"PVT-v2.*bb\.block3\.0\.mlp\.fc1\.weight.*missing"):
        detect_backbone(sd)


@pytest.mark.parametrize("case", PARITY_CASES)
def test_parity_with_official_backbone(case, load_case, det_weights, manifest):
    tensors, meta = load_case(case)
    name = meta["manifest"].removeprefix("keys_").removesuffix(".tsv")
    spec = manifest(name)
    assert det_weights.state_dict_sha256(det_weights.deterministic_state_dict(spec)) \
        == meta["weights_sha256"]
    model = _trained_like(name, det_weights, spec)
    image = tensors["input"]
    half = F.interpolate(image, (image.shape[2] // 2, image.shape[3] // 2),
                         mode="bilinear", align_corners=True)
    with torch.no_grad():
        full_features, half_features = model(image), model(half)
    assert len(full_features) == len(half_features) == 4
    for i, (full, small) in enumerate(zip(full_features, half_features)):
        torch.testing.assert_close(full, tensors[f"bb.{i}"], rtol=1e-4, atol=1e-4)
        # Tighter bound as well: PVT-v2 block norms with eps 1e-5 instead of 1e-6 move
        # these maps by ~2.5e-5; float32 rounding stays below 5e-6.
        torch.testing.assert_close(full, tensors[f"bb.{i}"], rtol=0, atol=1.5e-5)
        mean, rms = _channel_stats(small)
        torch.testing.assert_close(mean, tensors[f"mean.bb_half.{i}"], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(rms, tensors[f"rms.bb_half.{i}"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("window", [7, 12])
def test_relative_position_index_formula(window):
    coords = [(y, x) for y in range(window) for x in range(window)]
    expected = torch.tensor([[(ya - yb + window - 1) * (2 * window - 1) + (xa - xb + window - 1)
                              for yb, xb in coords] for ya, xa in coords])
    index = relative_position_index(window)
    assert index.dtype == torch.int64
    assert torch.equal(index, expected)


def test_built_model_holds_the_computed_index():
    model = build_backbone("swin_v1_t")
    state = model.state_dict()
    keys = [k for k in state if k.endswith("relative_position_index")]
    assert len(keys) == 12
    assert all(torch.equal(state[k], relative_position_index(7)) for k in keys)


def test_relative_position_bias_cache_follows_the_table():
    torch.manual_seed(0)
    image = torch.randn(1, 3, 64, 96)
    model = build_backbone("swin_v1_t").eval()
    with torch.no_grad():
        before = model(image)[0]
        model.layers[0].blocks[1].attn.relative_position_bias_table.add_(0.5)
        after = model(image)[0]
        fresh = build_backbone("swin_v1_t").eval()
        fresh.load_state_dict(model.state_dict())
        assert not torch.allclose(before, after)
        assert torch.equal(after, fresh(image)[0])


def test_load_under_inference_mode_refreshes_the_bias():
    # Tensors made under inference_mode have no version counter; loading must still count.
    torch.manual_seed(0)
    image = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        model = build_backbone("swin_v1_t").eval()
        before = model(image)[3]
        state = model.state_dict()
        state["layers.3.blocks.0.attn.relative_position_bias_table"] += 1.0
        model.load_state_dict(state)
        assert not torch.allclose(before, model(image)[3])


def test_shift_mask_is_cached_per_padded_size():
    stage = build_backbone("swin_v1_t").layers[0]
    mask = stage.shift_mask(15, 20, torch.device("cpu"), torch.float32)
    assert mask.shape == (3 * 3, 1, 49, 49)  # 15x20 padded to 21x21: 3x3 windows
    assert stage.shift_mask(21, 16, torch.device("cpu"), torch.float32) is mask
    assert stage.shift_mask(21, 16, torch.device("cpu"), torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["swin_v1_t", "pvt_v2_b0"])
def test_batch_items_are_independent(name):
    torch.manual_seed(0)
    model = build_backbone(name).eval()
    images = torch.randn(2, 3, 96, 160)  # Swin stage 1: 24x40 padded to 28x42, 24 windows
    with torch.no_grad():
        batched = model(images)
        singles = [model(images[i:i + 1]) for i in range(2)]
    for level, features in enumerate(batched):
        for i in range(2):
            torch.testing.assert_close(features[i:i + 1], singles[i][level], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["swin_v1_t", "pvt_v2_b0"])
def test_runs_in_bfloat16_after_module_conversion(name):
    torch.manual_seed(0)
    model = build_backbone(name).eval()
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        reference = model(image)
        features = model.to(torch.bfloat16)(image.to(torch.bfloat16))
    for low, high in zip(features, reference):
        assert low.dtype == torch.bfloat16
        assert (low.float() - high).abs().max() <= 0.05 * high.abs().max()


def test_swin_pads_sizes_that_are_not_multiples_of_32():
    model = build_backbone("swin_v1_t").eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 75, 101))
    # Patch embedding pads to /4, each patch merging rounds odd sizes up.
    assert [tuple(f.shape[2:]) for f in features] == [(19, 26), (10, 13), (5, 7), (3, 4)]
    assert [f.shape[1] for f in features] == list(BACKBONES["swin_v1_t"].channels)


def test_moving_the_model_drops_masks_made_for_the_old_device_or_dtype():
    model = build_backbone("swin_v1_t").eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert model.layers[0]._mask_cache
    model.to(torch.bfloat16)
    assert not any(stage._mask_cache for stage in model.layers)
    assert not any(isinstance(v, torch.Tensor) for m in model.modules() for v in vars(m).values())
