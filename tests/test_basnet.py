"""BASNet: official state-dict layout, parity with the official implementation's fixture,
and the pre-processing helper."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from comfyui_meticulous.errors import InputError
from comfyui_meticulous.inference import normalise
from comfyui_meticulous.models.basnet import BASNet, is_basnet_state_dict

from parity_fixtures import parity_cases

# Named by its .json sidecar; the tensors are the .safetensors file beside it. The compact case
# is in the repository, the larger one is optional (``parity_fixtures``).
CASE = "basnet/basnet_128x160"
LARGE_CASE = "basnet/basnet_256x256"

# Fixture statistic -> (module whose output it is, whether the model applies ReLU after it).
STAT_SOURCES = {
    "enc.in": ("inbn", True),
    "enc.h1": ("encoder1", False),
    "enc.h2": ("encoder2", False),
    "enc.h3": ("encoder3", False),
    "enc.h4": ("encoder4", False),
    "enc.h5": ("resb5_3", False),
    "enc.h6": ("resb6_3", False),
    "bridge.hbg": ("bnbg_2", True),
    **{f"dec.hd{i}": (f"bn{i}d_2", True) for i in range(6, 0, -1)},
}


@pytest.fixture(scope="module")
def spec(det_weights, reference_dir):
    return det_weights.load_spec(reference_dir / "basnet" / "keys.tsv")


@pytest.fixture(scope="module")
def weights(det_weights, spec):
    return det_weights.deterministic_state_dict(spec)


@pytest.fixture(scope="module")
def model(weights):
    net = BASNet().eval()
    net.load_state_dict(weights, strict=True)
    return net


def meta_state_dict(spec):
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {key: torch.empty(shape, dtype=dtypes[dtype], device="meta")
            for key, shape, dtype in spec}


def small_images(batch: int, size: int = 64) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))


def channel_stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    t = t.double()
    return t.mean(dim=(0, 2, 3)), t.square().mean(dim=(0, 2, 3)).sqrt()


def test_state_dict_layout_is_the_official_manifest(spec):
    with torch.device("meta"):
        layout = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch."))
                  for k, v in BASNet().state_dict().items()]
    assert layout == list(spec)


def test_manifest_weights_load_strictly_and_match_the_fixture_digest(det_weights, weights, load_case):
    _, meta = load_case(CASE)
    assert det_weights.state_dict_sha256(weights) == meta["weights_sha256"]
    result = BASNet().load_state_dict(weights, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("case", parity_cases(CASE, LARGE_CASE))
def test_parity_with_official_logits_and_statistics(model, load_case, case):
    tensors, meta = load_case(case)
    captured = {}

    def capture(name, relu):
        def hook(module, inputs, output):
            captured[name] = F.relu(output) if relu else output
        return hook

    handles = [model.get_submodule(path).register_forward_hook(capture(name, relu))
               for name, (path, relu) in STAT_SOURCES.items()]
    try:
        with torch.no_grad():
            logits = model.forward_all(tensors["input"])
    finally:
        for handle in handles:
            handle.remove()

    assert len(logits) == 8
    for i, actual in enumerate(logits):
        torch.testing.assert_close(actual, tensors[f"logits.{i}"], atol=2e-5, rtol=1e-4,
                                   msg=lambda m, i=i: f"logits.{i}: {m}")
        torch.testing.assert_close(torch.sigmoid(actual), tensors[f"output.{i}"], atol=2e-5, rtol=1e-4)
    assert set(meta["saved_stats"]) == set(STAT_SOURCES)
    for name in meta["saved_stats"]:
        mean, rms = channel_stats(captured[name])
        torch.testing.assert_close(mean, tensors[f"mean.{name}"], atol=1e-4, rtol=1e-4,
                                   msg=lambda m, n=name: f"mean.{n}: {m}")
        torch.testing.assert_close(rms, tensors[f"rms.{name}"], atol=1e-4, rtol=1e-4,
                                   msg=lambda m, n=name: f"rms.{n}: {m}")


def test_forward_is_the_refined_map_and_batch_items_are_independent(model):
    images = small_images(2)
    with torch.no_grad():
        batched = model(images)
        singles = torch.cat([model(images[i:i + 1]) for i in range(2)])
        refined = model.forward_all(images[:1])[0]
    assert batched.shape == (2, 1, 64, 64)
    assert not torch.allclose(batched[0], batched[1])
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(refined, singles[:1], atol=1e-6, rtol=1e-6)


def test_eval_output_does_not_depend_on_num_batches_tracked(model, weights):
    without = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
    other = BASNet().eval()
    result = other.load_state_dict(without, strict=False)
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    assert not result.unexpected_keys
    for name, buffer in other.named_buffers():
        if name.endswith("num_batches_tracked"):
            buffer.fill_(12345)
    images = small_images(1)
    with torch.no_grad():
        torch.testing.assert_close(other(images), model(images), atol=0, rtol=0)


def test_bfloat16_forward_keeps_shape_and_dtype(weights):
    net = BASNet().eval()
    net.load_state_dict(weights)
    net = net.to(torch.bfloat16)
    with torch.no_grad():
        out = net(small_images(1).to(torch.bfloat16))
    assert out.shape == (1, 1, 64, 64)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(1, 3, 64, 80), (1, 3, 48, 64), (1, 4, 64, 64), (3, 64, 64)])
def test_bad_input_shape_raises_input_error(shape):
    with torch.device("meta"):
        net = BASNet()
    with pytest.raises(InputError):
        net(torch.zeros(shape, device="meta"))


def test_is_basnet_state_dict(spec, det_weights, reference_dir):
    assert is_basnet_state_dict(meta_state_dict(spec))
    birefnet = det_weights.load_spec(reference_dir / "birefnet" / "keys_swin_v1_t.tsv")
    assert not is_basnet_state_dict(meta_state_dict(birefnet))
    assert not is_basnet_state_dict({})


def test_normalise_divides_each_image_by_its_own_maximum():
    base = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    base[:, 0, 0, 0] = 1.0
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = (base - mean) / std
    # Darker copies, each by its own factor, normalise to the same tensor.
    darker = base * torch.tensor([0.5, 0.25]).view(2, 1, 1, 1)
    torch.testing.assert_close(normalise(darker, "max"), expected)
    torch.testing.assert_close(normalise(base, "max"), expected)


def test_normalise_keeps_an_all_black_image_finite():
    out = normalise(torch.zeros(1, 3, 4, 4), "max")
    expected = -torch.tensor([0.485 / 0.229, 0.456 / 0.224, 0.406 / 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected.expand(1, 3, 4, 4))


def test_the_catalogue_id_basnet_loads(weights, tmp_path, monkeypatch):
    # The catalogue's BASNet entry has no patch order (only BiRefNet has one); loading it by id
    # used to fail on that.
    import comfyui_meticulous.weights.hub as hub
    from comfyui_meticulous.models import load_model
    from comfyui_meticulous.weights import get_entry

    path = tmp_path / "basnet.safetensors"
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()}, str(path))
    monkeypatch.setattr(hub, "resolve_weights", lambda entry, **options: path)
    model = load_model("basnet")
    assert isinstance(model, BASNet) and model.native_resolution == get_entry("basnet").resolution
    assert get_entry("basnet").patch_order is None
