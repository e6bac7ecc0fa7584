"""The packaged weights catalogue: valid against its schema, complete, consistent."""

import json
from pathlib import Path

import jsonschema
import pytest

from comfyui_meticulous.errors import WeightsError
from comfyui_meticulous.weights import catalogue, get_entry, load_catalogue

REPO = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((REPO / "weights_manifest.json").read_text(encoding="utf-8"))
SCHEMA = json.loads((REPO / "weights_manifest.schema.json").read_text(encoding="utf-8"))

# Every BiRefNet repository of ZhengPeng7 with published safetensors: (repo, backbone, resolution).
BIREFNET_REPOS = {
    "BiRefNet": ("swin_v1_l", {"height": 1024, "width": 1024}),
    "BiRefNet_lite": ("swin_v1_t", {"height": 1024, "width": 1024}),
    "BiRefNet_lite-2K": ("swin_v1_t", {"height": 1440, "width": 2560}),
    "BiRefNet_HR": ("swin_v1_l", {"height": 2048, "width": 2048}),
    "BiRefNet_HR-matting": ("swin_v1_l", {"height": 2048, "width": 2048}),
    "BiRefNet_dynamic": ("swin_v1_l", {"min": 256, "max": 2304}),
    "BiRefNet_512x512": ("swin_v1_l", {"height": 512, "width": 512}),
    "BiRefNet-matting": ("swin_v1_l", {"height": 1024, "width": 1024}),
    "BiRefNet_lite-matting": ("swin_v1_t", {"height": 1024, "width": 1024}),
    "BiRefNet-portrait": ("swin_v1_l", {"height": 1024, "width": 1024}),
    "BiRefNet-DIS5K": ("swin_v1_l", {"height": 1024, "width": 1024}),
    "BiRefNet-HRSOD": ("swin_v1_l", {"height": 1024, "width": 1024}),
    "BiRefNet-COD": ("swin_v1_l", {"height": 1024, "width": 1024}),
    "BiRefNet-DIS5K-TR_TEs": ("swin_v1_l", {"height": 1024, "width": 1024}),
    "BiRefNet-legacy": ("swin_v1_l", {"height": 1024, "width": 1024}),
}
MODELS = {item["repo"]: item for item in MANIFEST["models"]}


def test_manifest_matches_its_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.validate(MANIFEST, SCHEMA, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("broken", [
    {"sha256": "77277264"},                                # a partial digest is not a digest
    {"filename": "model.pth"},                             # never a pickle
    {"revision_pinned": True},                             # "main" is not a commit id
    {"patch_order": None},                                 # BiRefNet must say its patch order
    {"resolution": {"height": 1000, "width": 1000}},       # sides are multiples of 32
    {"sha256": None, "notes": "unknown"},                  # an unknown digest must be explained
])
def test_schema_rejects_bad_entries(broken):
    document = {**MANIFEST, "models": [{**MANIFEST["models"][0], **broken}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_ids_and_file_names_are_unique():
    ids = [item["id"] for item in MANIFEST["models"]]
    assert len(ids) == len(set(ids))
    # Case-insensitively, as on Windows and macOS disks, and across folders for --dir lookups.
    names = [item["local_filename"].lower() for item in MANIFEST["models"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("repo", sorted(BIREFNET_REPOS))
def test_every_zhengpeng7_birefnet_repo_is_listed(repo):
    item = MODELS[f"ZhengPeng7/{repo}"]
    backbone, resolution = BIREFNET_REPOS[repo]
    assert (item["architecture"], item["backbone"], item["resolution"]) == ("birefnet", backbone, resolution)
    assert item["filename"] == "model.safetensors" and item["licence"] == "MIT"
    assert item["patch_order"] == "einops" and item["folder"] == "meticulous"


def test_birefnet_general_digest_and_size():
    item = MODELS["ZhengPeng7/BiRefNet"]
    assert item["id"] == "birefnet"
    assert item["sha256"] == "77277264c0e8c74149d3ff2fade4fd8176965b7108f3c5fc3b8c9c811edb4519"
    # 884,791,968 bytes are the tensors alone; the file also holds a JSON header.
    assert item["size"] == 884_791_968 and item["size_exact"] is False


def test_known_sizes_and_unknown_digests_are_stated():
    lite_2k = MODELS["ZhengPeng7/BiRefNet_lite-2K"]
    assert (lite_2k["size"], lite_2k["size_exact"]) == (177_634_392, True)  # the LFS size of the file
    for repo in ("ZhengPeng7/BiRefNet_lite-2K", "ZhengPeng7/BiRefNet-legacy"):
        assert MODELS[repo]["sha256"] is None  # only partly known: treated as unknown
    unpinned = [item for item in MANIFEST["models"] if not item["revision_pinned"]]
    assert all("revision follows main" in item["notes"] for item in unpinned)


def test_basnet_and_the_comfyui_core_file():
    basnet = MODELS["creative-graphic-design/BASNet"]
    assert (basnet["id"], basnet["architecture"], basnet["filename"], basnet["patch_order"]) == (
        "basnet", "basnet", "model.safetensors", None)
    core = MODELS["Comfy-Org/BiRefNet"]
    assert (core["filename"], core["local_filename"], core["folder"]) == (
        "birefnet.safetensors", "birefnet.safetensors", "background_removal")


def test_catalogue_loads_every_entry_in_order():
    entries = catalogue()
    assert list(entries) == [item["id"] for item in MANIFEST["models"]]
    assert entries["birefnet-dynamic"].resolution is None
    assert entries["birefnet-dynamic"].resolution_range == (256, 2304)
    assert entries["birefnet-lite-2k"].resolution == (1440, 2560)  # (height, width)


def test_unknown_id_suggests_close_ones():
    with pytest.raises(WeightsError, match="unknown model id 'birefnet-lit'. Did you mean birefnet-lite"):
        get_entry("birefnet-lit")


def test_duplicate_ids_are_refused(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**MANIFEST, "models": MANIFEST["models"][:1] * 2}))
    with pytest.raises(WeightsError, match="more than once"):
        load_catalogue(path)
