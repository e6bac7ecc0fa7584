"""Loading weight files: dtypes, optional buffers, and a clear error for every bad file."""

import pytest
import torch
from safetensors.torch import save_file

from comfyui_meticulous.errors import WeightsError
from comfyui_meticulous.models import BASNet, BiRefNet, load_model
from comfyui_meticulous.models.backbones.swin import relative_position_index


@pytest.fixture(scope="module")
def pvt_state_dict(reference_dir, det_weights):
    return det_weights.deterministic_state_dict(
        det_weights.load_spec(reference_dir / "birefnet" / "keys_pvt_v2_b0.tsv"))


@pytest.fixture(scope="module")
def pvt_file(pvt_state_dict, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "birefnet_pvt_b0.safetensors"
    save_file(pvt_state_dict, str(path))
    return path


@pytest.fixture(scope="module")
def swin_t_with_buffers(reference_dir, det_weights, tmp_path_factory):
    """A Swin-T file like ComfyUI core's: index buffers included, floats stored in fp16."""
    spec = det_weights.load_spec(reference_dir / "birefnet" / "keys_swin_v1_t.tsv")
    buffers = {key: relative_position_index(7) for key, _, _ in spec if key.endswith("relative_position_index")}
    state_dict = det_weights.deterministic_state_dict(spec, reference_buffers=buffers)
    assert len(buffers) == 12 and all(key in state_dict for key in buffers)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    path = tmp_path_factory.mktemp("weights") / "birefnet.safetensors"
    save_file(half, str(path))
    return path, half


def _probe(model, size=(64, 96)):
    x = torch.linspace(-2, 2, 3 * size[0] * size[1]).view(1, 3, *size)
    with torch.inference_mode():
        return model(x.to(next(model.parameters()).dtype)).float()


def test_file_loads_in_eval_mode_and_matches_state_dict_load(pvt_file, pvt_state_dict):
    model = load_model(pvt_file)
    assert isinstance(model, BiRefNet) and not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert not any(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(_probe(model), _probe(load_model(pvt_state_dict)), rtol=0, atol=0)


def test_half_precision_file_with_index_buffers_loads(swin_t_with_buffers):
    path, half = swin_t_with_buffers
    model = load_model(path)
    assert model.backbone_name == "swin_v1_t"
    key = "decoder.conv_out1.0.weight"
    assert torch.equal(model.state_dict()[key], half[key].float())


def test_requested_dtype_is_applied(pvt_state_dict):
    model = load_model(pvt_state_dict, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert _probe(model).isfinite().all()


def test_missing_counters_are_filled(pvt_state_dict):
    trimmed = {k: v for k, v in pvt_state_dict.items() if not k.endswith("num_batches_tracked")}
    assert len(trimmed) < len(pvt_state_dict)
    torch.testing.assert_close(_probe(load_model(trimmed)), _probe(load_model(pvt_state_dict)), rtol=0, atol=0)


def test_wrong_relative_position_index_is_rejected(swin_t_with_buffers):
    _, half = swin_t_with_buffers
    broken = dict(half)
    key = "bb.layers.0.blocks.0.attn.relative_position_index"
    broken[key] = broken[key].flip(0)
    with pytest.raises(WeightsError, match="relative-position index"):
        load_model(broken)


def test_random_bytes_give_a_clear_error(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(1),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(WeightsError, match="not a readable safetensors file") as err:
        load_model(path)
    assert str(path) in str(err.value) and err.value.__cause__ is None


def test_truncated_file_gives_a_clear_error(pvt_file, tmp_path):
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(pvt_file.read_bytes()[: pvt_file.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_basnet_file_where_birefnet_is_needed(reference_dir, det_weights, tmp_path):
    spec = det_weights.load_spec(reference_dir / "basnet" / "keys.tsv")
    path = tmp_path / "basnet.safetensors"
    save_file(det_weights.deterministic_state_dict(spec), str(path))
    assert isinstance(load_model(path), BASNet)
    with pytest.raises(WeightsError, match="basnet weights, but a birefnet model is needed"):
        load_model(path, expect="birefnet")


def test_wrong_shape_names_the_key_and_both_shapes(pvt_state_dict):
    broken = dict(pvt_state_dict)
    broken["decoder.conv_out1.0.weight"] = torch.zeros(1, 7, 1, 1)
    with pytest.raises(WeightsError, match=r"decoder\.conv_out1\.0\.weight' has shape \[1, 7, 1, 1\], expected \[1, \d+, 1, 1\]"):
        load_model(broken)


def test_missing_and_unexpected_keys_are_named(pvt_state_dict):
    missing = {k: v for k, v in pvt_state_dict.items() if k != "decoder.lateral_block2.conv.bias"}
    with pytest.raises(WeightsError, match="'decoder.lateral_block2.conv.bias' is missing"):
        load_model(missing)
    extra = {**pvt_state_dict, "decoder.cls_head.weight": torch.zeros(3)}
    with pytest.raises(WeightsError, match="unexpected key 'decoder.cls_head.weight'"):
        load_model(extra)


def test_unrelated_weights_and_pickles_are_refused(tmp_path):
    path = tmp_path / "unet.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(WeightsError, match="not a BiRefNet or BASNet state dict"):
        load_model(path)
    pickle = tmp_path / "model.pth"
    pickle.write_bytes(b"\x80\x04")
    with pytest.raises(WeightsError, match="pickle"):
        load_model(pickle)
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "absent.safetensors")
