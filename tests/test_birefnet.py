"""BiRefNet against the official implementation's key manifests and parity cases."""

import pytest
import torch

from comfyui_meticulous.models import BiRefNet, build_from_state_dict
from comfyui_meticulous.models.backbones import BACKBONES

from parity_fixtures import parity_cases

# The compact cases are in the repository; the larger ones are optional (``parity_fixtures``).
COMPACT_CASES = ["birefnet/birefnet_swin_v1_t_192x256", "birefnet/birefnet_pvt_v2_b0_160x224"]
LARGE_CASES = ["birefnet/birefnet_swin_v1_t_512x512", "birefnet/birefnet_pvt_v2_b0_384x640"]


def _manifest(reference_dir, det_weights, backbone):
    return det_weights.load_spec(reference_dir / "birefnet" / f"keys_{backbone}.tsv")


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_state_dict_layout_equals_official_manifest(reference_dir, det_weights, backbone):
    with torch.device("meta"):
        model = BiRefNet(backbone)
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert ours == _manifest(reference_dir, det_weights, backbone)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_regenerated_weights_load_strictly_and_select_their_backbone(reference_dir, det_weights, backbone):
    # Files as published on the Hub: floats plus num_batches_tracked, no integer index buffers.
    state_dict = det_weights.deterministic_state_dict(_manifest(reference_dir, det_weights, backbone))
    model = build_from_state_dict(state_dict)
    assert model.backbone_name == backbone
    loaded = model.state_dict()
    for key, tensor in state_dict.items():
        assert torch.equal(loaded[key], tensor), key
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])


def _stats(tensor):
    t = tensor.double()
    return t.mean(dim=(0, 2, 3)), t.pow(2).mean(dim=(0, 2, 3)).sqrt()


class _Recorder:
    """Captures the intermediate tensors the parity fixtures store, through forward hooks."""

    def __init__(self, model):
        self.values = {}
        self.bb_calls = []
        d = model.decoder
        hooks = {
            "dec.squeeze_out": (model.squeeze_module, False),
            "enc.x4": (model.squeeze_module, True),
            "enc.x1": (d.lateral_block2, True), "enc.x2": (d.lateral_block3, True),
            "enc.x3": (d.lateral_block4, True),
            "dec.lateral.4": (d.lateral_block4, False), "dec.lateral.3": (d.lateral_block3, False),
            "dec.lateral.2": (d.lateral_block2, False),
        }
        for i in range(1, 6):
            hooks[f"dec.ipt.{i}"] = (getattr(d, f"ipt_blk{i}"), False)
        for i in range(1, 5):
            hooks[f"dec.block.{i}"] = (getattr(d, f"decoder_block{i}"), False)
        for i in (2, 3, 4):
            hooks[f"dec.gdt_attn_logit.{i}"] = (getattr(d, f"gdt_convs_attn_{i}"), False)
        for name, (module, on_input) in hooks.items():
            module.register_forward_hook(self._hook(name, on_input))
        model.bb.register_forward_hook(lambda m, args, out: self.bb_calls.append((args[0], out)))

    def _hook(self, name, on_input):
        def record(module, args, out):
            self.values[name] = args[0] if on_input else out
        return record


@pytest.mark.parametrize("case", parity_cases(*COMPACT_CASES, *LARGE_CASES))
def test_matches_official_outputs(load_case, reference_dir, det_weights, case):
    tensors, meta = load_case(case)
    spec = det_weights.load_spec(reference_dir / "birefnet" / meta["manifest"])
    state_dict = det_weights.deterministic_state_dict(spec)
    assert det_weights.state_dict_sha256(state_dict) == meta["weights_sha256"]
    model = build_from_state_dict(state_dict)
    recorder = _Recorder(model)
    with torch.inference_mode():
        output = model(tensors["input"])

    close = dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(output, tensors["output"], **close)
    (full_in, full), (half_in, half) = recorder.bb_calls
    for i in range(4):
        torch.testing.assert_close(full[i], tensors[f"bb.{i}"], **close)
    for name in ("dec.squeeze_out", "dec.gdt_attn_logit.4", "dec.gdt_attn_logit.3", "dec.gdt_attn_logit.2"):
        torch.testing.assert_close(recorder.values[name], tensors[name], **close)

    stats = {"input_half": half_in, **{f"bb_half.{i}": half[i] for i in range(4)}, **recorder.values}
    checked = 0
    for name in meta["saved_stats"]:
        mean, rms = _stats(stats[name])
        torch.testing.assert_close(mean, tensors[f"mean.{name}"], **close)
        torch.testing.assert_close(rms, tensors[f"rms.{name}"], **close)
        checked += 1
    assert checked == len(meta["saved_stats"]) > 15


def test_legacy_patch_order_permutes_channels(load_case, reference_dir, det_weights):
    """Legacy-ordered weights run in the legacy order equal einops-ordered weights in einops order."""
    tensors, meta = load_case(COMPACT_CASES[1])
    spec = det_weights.load_spec(reference_dir / "birefnet" / meta["manifest"])
    state_dict = det_weights.deterministic_state_dict(spec)
    legacy = dict(state_dict)
    x = torch.arange(3 * 64 * 96, dtype=torch.float32).view(1, 3, 64, 96)
    for i, (g_h, g_w) in zip((5, 4, 3, 2), ((32, 32), (16, 16), (8, 8), (4, 4))):
        from comfyui_meticulous.models.birefnet import image_to_patches
        einops_channels = image_to_patches(x, (64 // g_h, 96 // g_w), "einops")[0, :, 0, 0]
        legacy_channels = image_to_patches(x, (64 // g_h, 96 // g_w), "legacy")[0, :, 0, 0]
        # Column k of the legacy weight reads the input pixel that einops puts in channel perm[k].
        perm = [int((einops_channels == v).nonzero()) for v in legacy_channels]
        key = f"decoder.ipt_blk{i}.conv1.weight"
        legacy[key] = state_dict[key][:, perm]
    x = tensors["input"][..., :128, :160]
    with torch.inference_mode():
        expected = build_from_state_dict(state_dict)(x)
        actual = build_from_state_dict(legacy, patch_order="legacy")(x)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert (build_from_state_dict(legacy)(x) - expected).abs().max() > 1e-3
