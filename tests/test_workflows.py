"""Every file in ``workflows/`` is a sound ComfyUI workflow.

Node types must exist in the ComfyUI core or VideoHelperSuite schemas (``../shared/comfyui``)
or be ours (schemas from ``define_schema`` through the ComfyUI stand-in); links must join
matching types; widget values must be allowed by the schemas. The validator is checked too,
on workflows broken on purpose.
"""

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from standin import comfyui, write_test_weights  # noqa: F401  (comfyui is a fixture)
from workflow_format import (WORKFLOWS, node_info, snapshot_info, to_api, validate, widget_slots,
                             workflow_files)

EXPECTED = {"photo_to_transparent_png", "text_to_image_cutout_harmonise", "inpaint_new_background",
            "edge_tools_on_hair"}


@pytest.fixture
def infos(comfyui):
    snapshot = snapshot_info()
    ours = {node_id: node_info(node) for node_id, node in comfyui.nodes.items()}
    assert not set(ours) & set(snapshot), "our node ids must not shadow core or VHS ids"
    return snapshot | ours


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def test_the_four_example_workflows_are_there_and_described():
    assert {path.stem for path in workflow_files()} == EXPECTED
    readme = (WORKFLOWS / "README.md").read_text()
    for name in EXPECTED:
        assert f"{name}.json" in readme


@pytest.mark.parametrize("path", workflow_files(), ids=lambda path: path.stem)
def test_workflow_is_valid(path, infos):
    workflow = json.loads(path.read_text())
    assert validate(workflow, infos) == []
    types = {node["type"] for node in workflow["nodes"]}
    assert any(kind.startswith("Meticulous") for kind in types)
    assert workflow["last_node_id"] >= max(node["id"] for node in workflow["nodes"])
    assert workflow["last_link_id"] >= max((link[0] for link in workflow["links"]), default=0)


def test_workflows_chain_the_intended_blocks(infos):
    def types(name):
        return {node["type"] for node in load(name)["nodes"]}
    assert {"LoadImage", "MeticulousSegment", "SaveImage"} <= types("photo_to_transparent_png")
    assert {"CheckpointLoaderSimple", "KSampler", "MeticulousSegment", "MeticulousComposite",
            "VAEEncode"} <= types("text_to_image_cutout_harmonise")
    denoise = sorted(node["widgets_values"][-1] for node in load("text_to_image_cutout_harmonise")["nodes"]
                     if node["type"] == "KSampler")
    assert denoise == [0.3, 1.0, 1.0]  # subject and background generated, then a light img2img pass
    assert {"MeticulousMaskInvert", "MeticulousMaskFeather", "InpaintModelConditioning"} <= types(
        "inpaint_new_background")
    edge_tools = types("edge_tools_on_hair")
    assert {"MeticulousMaskLevels", "MeticulousMaskChokeSpread", "MeticulousMaskFeather",
            "MeticulousMaskFillHoles", "MeticulousMaskRemoveSmallIslands", "MeticulousEstimateForeground",
            "ImageBatch"} <= edge_tools


class CoreNodes:
    """The few core nodes the checkpoint-free workflows use, reduced to what they do to tensors."""

    def __init__(self):
        self.saved, self.previewed = [], []

    def LoadImage(self, image):
        y, x = torch.meshgrid(torch.linspace(-1, 1, 72), torch.linspace(-1, 1, 96), indexing="ij")
        disc = ((x ** 2 + y ** 2) < 0.4).float()[..., None]
        pixels = disc * torch.tensor([0.9, 0.6, 0.3]) + (1 - disc) * torch.tensor([0.2, 0.4, 0.8])
        return pixels[None], torch.zeros(1, 72, 96)

    def SaveImage(self, images, filename_prefix):
        self.saved.append(images)
        return ()

    def PreviewImage(self, images):
        self.previewed.append(images)
        return ()

    def MaskToImage(self, mask):
        return (mask[..., None].repeat(1, 1, 1, 3),)

    def ImageBatch(self, image1, image2):
        return (torch.cat([image1, image2]),)


def execute(prompt: dict, nodes: dict, core: CoreNodes) -> None:
    """Runs an API-format prompt in dependency order, our nodes through their ``execute``."""
    results = {}
    while len(results) < len(prompt):
        ready = len(results)
        for node_id, node in prompt.items():
            links = [value for value in node["inputs"].values() if isinstance(value, list)]
            if node_id in results or any(source not in results for source, _ in links):
                continue
            inputs = {name: results[value[0]][value[1]] if isinstance(value, list) else value
                      for name, value in node["inputs"].items()}
            kind = node["class_type"]
            results[node_id] = nodes[kind].execute(**inputs).args if kind in nodes else getattr(core, kind)(**inputs)
        assert len(results) > ready, "the prompt has a cycle or a link to a missing node"


@pytest.mark.parametrize("name", ["photo_to_transparent_png", "edge_tools_on_hair"])
def test_checkpoint_free_workflow_runs_on_the_stand_in(comfyui, infos, name, det_weights, reference_dir):
    folder = Path(comfyui.folder_paths.get_folder_paths("meticulous")[0])
    folder.mkdir(parents=True)
    write_test_weights(det_weights, reference_dir, folder / "test_b0.safetensors")
    workflow = load(name)
    for node in workflow["nodes"]:
        if node["type"] == "MeticulousLoadModel":
            node["widgets_values"][0] = "test_b0.safetensors"
        if node["type"] == "MeticulousSegment":
            node["widgets_values"][0] = 64
    infos["MeticulousLoadModel"] = node_info(comfyui.nodes["MeticulousLoadModel"])  # lists the test file now
    assert validate(workflow, infos) == []
    core = CoreNodes()
    execute(to_api(workflow, infos), comfyui.nodes, core)
    (saved,) = core.saved
    if name == "photo_to_transparent_png":
        assert saved.shape == (1, 72, 96, 4) and saved[..., 3].std() > 0
    else:
        assert saved.shape == (6, 72, 96, 3)  # six edge treatments side by side
        assert all((saved[i] - saved[j]).abs().max() > 0 for i in range(6) for j in range(i))


def test_conversion_to_the_api_format(infos):
    prompt = to_api(load("text_to_image_cutout_harmonise"), infos)
    sampler = next(node for node in prompt.values() if node["class_type"] == "KSampler")
    assert set(sampler["inputs"]) == {"model", "seed", "steps", "cfg", "sampler_name", "scheduler",
                                      "positive", "negative", "latent_image", "denoise"}
    assert isinstance(sampler["inputs"]["seed"], int) and isinstance(sampler["inputs"]["model"], list)
    prompt = to_api(load("photo_to_transparent_png"), infos)
    segment = next(node for node in prompt.values() if node["class_type"] == "MeticulousSegment")
    assert segment["inputs"]["rgba_colour"] == "estimated foreground"
    assert {"image", "model"} <= set(segment["inputs"]) and "image:upload" not in json.dumps(prompt)
    loader = next(node for node in prompt.values() if node["class_type"] == "LoadImage")
    assert loader["inputs"] == {"image": "example.png"}


# --- the validator finds what ComfyUI would reject -------------------------------------------

def broken(name: str, change) -> dict:
    workflow = copy.deepcopy(load(name))
    change(workflow)
    return workflow


def node_of(workflow: dict, kind: str) -> dict:
    return next(node for node in workflow["nodes"] if node["type"] == kind)


def test_validator_rejects_unknown_nodes_and_paid_api_nodes(infos):
    def rename(workflow):
        node_of(workflow, "SaveImage")["type"] = "SaveImageRGBA"
    assert any("unknown node type" in p for p in validate(broken("photo_to_transparent_png", rename), infos))

    def paid(workflow):
        node_of(workflow, "SaveImage")["type"] = "OpenAIDalle3"
    assert any("unknown node type" in p for p in validate(broken("photo_to_transparent_png", paid), infos))


def test_validator_rejects_mismatched_links(infos):
    def mask_into_image(workflow):
        save = node_of(workflow, "SaveImage")
        link = next(link for link in workflow["links"] if link[0] == save["inputs"][0]["link"])
        link[2] = 0  # Segment's MASK output instead of its RGBA IMAGE
        link[5] = "MASK"
    problems = validate(broken("photo_to_transparent_png", mask_into_image), infos)
    assert any(re.search(r"MASK does not fit SaveImage.images", p) for p in problems)

    def unplugged(workflow):
        node_of(workflow, "MeticulousSegment")["inputs"][0]["link"] = None
    problems = validate(broken("photo_to_transparent_png", unplugged), infos)
    assert any("required input 'model' is not connected" in p for p in problems)


@pytest.mark.parametrize("kind, index, value, message", [
    ("MeticulousSegment", 3, "premultiplied", "is not one of"),
    ("MeticulousSegment", 0, 5000, "above the maximum"),
    ("MeticulousSegment", 2, 1.5, "not an integer"),
    ("MeticulousSegment", 1, "yes", "not a boolean"),
    ("MeticulousLoadModel", 0, "birefnet-huge", "is not one of"),
    ("LoadImage", 0, 7, "not a file name"),
])
def test_validator_rejects_bad_widget_values(infos, kind, index, value, message):
    def change(workflow):
        node_of(workflow, kind)["widgets_values"][index] = value
    assert any(message in p for p in validate(broken("photo_to_transparent_png", change), infos))


def test_validator_knows_control_and_upload_entries(infos):
    def drop_control(workflow):
        del node_of(workflow, "KSampler")["widgets_values"][1]
    problems = validate(broken("text_to_image_cutout_harmonise", drop_control), infos)
    assert any("6 widget values for 7 widget slots" in p for p in problems)

    def bad_control(workflow):
        node_of(workflow, "KSampler")["widgets_values"][1] = "sometimes"
    assert any("seed:control" in p for p in validate(broken("text_to_image_cutout_harmonise", bad_control), infos))
    assert [name for name, _, _ in widget_slots(infos["LoadImage"])] == ["image", "image:upload"]


def test_validator_reads_videohelpersuite_named_widget_values(infos):
    combine = {"id": 1, "type": "VHS_VideoCombine", "mode": 0, "outputs": [],
               "inputs": [{"name": "images", "type": "IMAGE", "link": None}],
               "widgets_values": {"frame_rate": 24, "loop_count": 0, "filename_prefix": "matte",
                                  "format": "video/ProRes", "profile": "4444", "pingpong": False,
                                  "save_output": True, "videopreview": {"hidden": False}}}
    workflow = {"nodes": [combine], "links": []}
    assert [p for p in validate(workflow, infos) if "widget" in p] == []
    combine["widgets_values"]["profile"] = "h264"
    assert any("'profile'" in p and "is not one of" in p for p in validate(workflow, infos))
    combine["widgets_values"]["crf"] = 20  # a webm widget, not one of ProRes's
    assert any("unknown widget 'crf'" in p for p in validate(workflow, infos))
