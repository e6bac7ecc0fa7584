"""The in-repo parity data and the weight generator: the regenerated weights are bit for bit the
ones the official outputs were measured with, and every case the suite relies on is present."""

import json

import pytest
import torch

from comfyui_meticulous.models.backbones import build_backbone

from parity_fixtures import (
    REFERENCE,
    deterministic_state_dict,
    load_case,
    load_spec,
    parity_cases,
    state_dict_sha256,
)

COMPACT_CASES = ["birefnet/birefnet_swin_v1_t_192x256", "birefnet/birefnet_pvt_v2_b0_160x224",
                 "basnet/basnet_128x160"]
LARGE_CASES = ["birefnet/birefnet_swin_v1_t_512x512", "birefnet/birefnet_pvt_v2_b0_384x640",
               "basnet/basnet_256x256"]
MANIFESTS = [f"birefnet/keys_{name}.tsv" for name in (
    "swin_v1_t", "swin_v1_s", "swin_v1_b", "swin_v1_l", "pvt_v2_b0", "pvt_v2_b1", "pvt_v2_b2", "pvt_v2_b5")] \
    + ["basnet/keys.tsv"]


def test_the_compact_cases_and_every_manifest_ship_with_the_tests():
    for name in COMPACT_CASES:
        assert (REFERENCE / f"{name}.json").is_file() and (REFERENCE / f"{name}.safetensors").is_file(), name
    for name in MANIFESTS:
        assert load_spec(REFERENCE / name), name


@pytest.mark.parametrize("case", parity_cases(*COMPACT_CASES, *LARGE_CASES))
def test_regenerated_weights_have_the_digest_the_case_was_measured_with(case):
    _, meta = load_case(case)
    manifest = REFERENCE / case.split("/")[0] / meta["manifest"]
    assert state_dict_sha256(deterministic_state_dict(load_spec(manifest))) == meta["weights_sha256"]


def test_recipe_per_kind_of_tensor():
    spec = [("a.bn.running_var", (4000,), "float32"), ("a.bn.running_mean", (4000,), "float32"),
            ("a.bn.num_batches_tracked", (), "int64"), ("a.norm.weight", (4000,), "float32"),
            ("a.conv.bias", (4000,), "float32"), ("a.attn.relative_position_bias_table", (4000, 3), "float32"),
            ("a.conv.weight", (64, 16, 5, 5), "float32"), ("a.pos", (4000,), "float32"),
            ("a.attn.relative_position_index", (49, 49), "int64")]
    sd = deterministic_state_dict(spec)
    assert "a.attn.relative_position_index" not in sd  # a model computes it; published files lack it
    assert sd["a.bn.num_batches_tracked"].dtype == torch.int64 and sd["a.bn.num_batches_tracked"].item() == 0
    var = sd["a.bn.running_var"]
    assert 1 <= var.min() and var.max() < 1.1
    for key, mean, std in [("a.bn.running_mean", 0, 0.1), ("a.norm.weight", 1, 0.1), ("a.conv.bias", 0, 0.05),
                           ("a.attn.relative_position_bias_table", 0, 0.02), ("a.conv.weight", 0, 400 ** -0.5),
                           ("a.pos", 0, 0.05)]:
        assert sd[key].dtype == torch.float32
        assert abs(sd[key].mean() - mean) < 0.1 * std and abs(sd[key].std() - std) < 0.1 * std, key
    # Each tensor is seeded by its own key: neither the order nor the other keys change it.
    alone = deterministic_state_dict(spec[6:7])
    assert torch.equal(alone["a.conv.weight"], sd["a.conv.weight"])
    other = deterministic_state_dict([("b.conv.bias", (4000,), "float32")])
    assert not torch.equal(other["b.conv.bias"], sd["a.conv.bias"])


def test_reference_buffers_fill_the_index_and_leave_the_digest_alone():
    spec = load_spec(REFERENCE / "birefnet" / "keys_swin_v1_t.tsv")
    own = {f"bb.{key}": value for key, value in build_backbone("swin_v1_t").state_dict().items()}
    published = deterministic_state_dict(spec)
    full = deterministic_state_dict(spec, reference_buffers=own)
    index = "bb.layers.0.blocks.0.attn.relative_position_index"
    assert index not in published and torch.equal(full[index], own[index])
    assert [key for key, _, _ in spec] == list(full)
    assert state_dict_sha256(full) == state_dict_sha256(published)
    with pytest.raises(ValueError, match="relative_position_index"):
        deterministic_state_dict(spec, reference_buffers={**own, index: own[index][:7]})


def test_digest_sees_every_value_and_its_key():
    spec = load_spec(REFERENCE / "basnet" / "keys.tsv")
    sd = deterministic_state_dict(spec)
    digest = state_dict_sha256(sd)
    changed = dict(sd)
    key = next(iter(sd))
    changed[key] = sd[key].clone()
    changed[key].view(-1)[0] += 1e-6
    assert state_dict_sha256(changed) != digest
    renamed = {("x" + k if k == key else k): v for k, v in sd.items()}
    assert state_dict_sha256(renamed) != digest


def test_case_metadata_names_an_in_repo_manifest():
    for name in COMPACT_CASES:
        meta = json.loads((REFERENCE / f"{name}.json").read_text())
        folder = REFERENCE / name.split("/")[0]
        assert (folder / meta["manifest"]).is_file(), name
