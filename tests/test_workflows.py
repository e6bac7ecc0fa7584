"""Every file in ``workflows/`` is a sound ComfyUI workflow.

Node types must exist in the ComfyUI core or VideoHelperSuite schemas (``fixtures/comfyui``)
or be ours (schemas from ``define_schema`` through the ComfyUI stand-in); links must join
matching types; widget values must be allowed by the schemas. Every workflow that needs no
diffusion checkpoint runs on the stand-in, the core and VideoHelperSuite nodes reduced to what
they do to tensors. The validator is checked too, on workflows broken on purpose.
"""

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from standin import comfyui, write_test_weights  # noqa: F401  (comfyui is a fixture)
from workflow_format import (
    CHECKPOINT_NODES,
    WORKFLOWS,
    node_info,
    node_types,
    snapshot_info,
    to_api,
    validate,
    widget_slots,
    workflow_files,
)

EXPECTED = {"photo_to_transparent_png", "text_to_image_cutout_harmonise", "inpaint_new_background",
            "edge_tools_on_hair", "highres_4k_cutout", "video_matte_alpha", "video_composite_background"}
# The workflows that need no diffusion checkpoint, each run on the stand-in below.
STAND_IN_RUNS = ["photo_to_transparent_png", "edge_tools_on_hair", "highres_4k_cutout", "video_matte_alpha",
                 "video_composite_background"]


@pytest.fixture
def infos(comfyui):
    snapshot = snapshot_info()
    ours = {node_id: node_info(node) for node_id, node in comfyui.nodes.items()}
    assert not set(ours) & set(snapshot), "our node ids must not shadow core or VHS ids"
    return snapshot | ours


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def test_the_example_workflows_are_there_and_described():
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
    assert {"LoadImage", "MeticulousCoarsePredict", "MeticulousUncertaintyMap", "MeticulousUncertaintyRefine",
            "MeticulousGlobalLocalFuse", "MeticulousPredictionToMask", "MeticulousSegmentHighRes", "PreviewImage",
            "SaveImage"} <= types("highres_4k_cutout")
    assert {"VHS_BatchManager", "VHS_LoadVideo", "MeticulousVideoMatte", "VHS_VideoCombine",
            "SaveImage"} <= types("video_matte_alpha")
    assert {"VHS_LoadVideo", "MeticulousVideoMatte", "MeticulousComposite", "VHS_VideoCombine"} <= types(
        "video_composite_background")


def keeps_alpha(values: dict) -> bool:
    """Whether VHS_VideoCombine's format settings write an alpha channel (``fixtures/README.md``)."""
    return (values["format"] in ("video/ffv1-mkv", "video/8bit-png", "video/16bit-png", "image/webp")
            or (values["format"] == "video/ProRes" and values["profile"] in ("4444", "4444xq"))
            or (values["format"] == "video/webm" and values["pix_fmt"] == "yuva420p"))


def sources(workflow: dict, node: dict) -> dict:
    """``{input name: (source node type, output slot)}`` of a node's connected inputs."""
    nodes = {other["id"]: other for other in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    return {inp["name"]: (nodes[links[inp["link"]][1]]["type"], links[inp["link"]][2])
            for inp in node["inputs"] if inp.get("link") is not None}


def test_video_workflows_write_alpha_where_it_is_wanted():
    matte = load("video_matte_alpha")
    (combine,) = [node for node in matte["nodes"] if node["type"] == "VHS_VideoCombine"]
    assert keeps_alpha(combine["widgets_values"])
    assert sources(matte, combine)["images"] == ("MeticulousVideoMatte", 1)  # its RGBA output
    (frames,) = [node for node in matte["nodes"] if node["type"] == "SaveImage"]
    assert sources(matte, frames)["images"] == ("MeticulousVideoMatte", 1)
    # Meta Batch Manager must reach both ends: the loader cuts chunks, the writer joins them.
    assert sources(matte, node_of(matte, "VHS_LoadVideo"))["meta_batch"][0] == "VHS_BatchManager"
    assert sources(matte, combine)["meta_batch"][0] == "VHS_BatchManager"
    assert node_of(matte, "MeticulousVideoMatte")["widgets_values"][2] == 0  # batch_size: measured

    composite = load("video_composite_background")
    (combine,) = [node for node in composite["nodes"] if node["type"] == "VHS_VideoCombine"]
    assert combine["widgets_values"]["format"] == "video/h264-mp4" and not keeps_alpha(combine["widgets_values"])
    assert sources(composite, combine)["images"] == ("MeticulousComposite", 0)


class CoreNodes:
    """The core and VideoHelperSuite nodes the checkpoint-free workflows use, reduced to what they
    do to tensors. The video is a 5-frame clip whose size differs from the photo's; the loader
    ignores the Meta Batch Manager and hands out the whole clip."""

    CLIP_FPS = 12.0

    def __init__(self):
        self.saved, self.previewed, self.videos = {}, [], []

    def LoadImage(self, image):
        y, x = torch.meshgrid(torch.linspace(-1, 1, 72), torch.linspace(-1, 1, 96), indexing="ij")
        disc = ((x ** 2 + y ** 2) < 0.4).float()[..., None]
        pixels = disc * torch.tensor([0.9, 0.6, 0.3]) + (1 - disc) * torch.tensor([0.2, 0.4, 0.8])
        return pixels[None], torch.zeros(1, 72, 96)

    def SaveImage(self, images, filename_prefix):
        self.saved[filename_prefix] = images
        return ()

    def PreviewImage(self, images):
        self.previewed.append(images)
        return ()

    def MaskToImage(self, mask):
        return (mask[..., None].repeat(1, 1, 1, 3),)

    def ImageBatch(self, image1, image2):
        return (torch.cat([image1, image2]),)

    def ImageScale(self, image, upscale_method, width, height, crop):
        scaled = torch.nn.functional.interpolate(image.movedim(-1, 1), size=(height, width), mode="bilinear")
        return (scaled.movedim(1, -1),)

    def VHS_BatchManager(self, frames_per_batch):
        return (SimpleNamespace(frames_per_batch=frames_per_batch),)

    def VHS_LoadVideo(self, video, force_rate, custom_width, custom_height, frame_load_cap, skip_first_frames,
                      select_every_nth, format, meta_batch=None, vae=None):
        y, x = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 64), indexing="ij")
        frames = torch.stack([((x - 0.1 * t) ** 2 + y ** 2 < 0.3).float() for t in range(5)])[..., None]
        frames = frames * torch.tensor([0.8, 0.7, 0.2]) + (1 - frames) * torch.tensor([0.1, 0.3, 0.6])
        info = {"fps": self.CLIP_FPS, "frame_count": 5, "duration": 5 / self.CLIP_FPS, "width": 64, "height": 48}
        audio = {"waveform": torch.zeros(1, 1, 4000), "sample_rate": 8000}
        return frames, 5, audio, info

    def VHS_VideoInfo(self, video_info):
        keys = ("fps", "frame_count", "duration", "width", "height")
        return tuple(video_info[key] for key in keys) * 2  # source, then loaded: the same here

    def VHS_VideoCombine(self, images, frame_rate, loop_count, filename_prefix, format, pingpong, save_output,
                         audio=None, meta_batch=None, vae=None, **format_widgets):
        self.videos.append(SimpleNamespace(images=images, frame_rate=frame_rate, format=format, audio=audio,
                                           meta_batch=meta_batch, options=format_widgets))
        return ([filename_prefix],)


def execute(prompt: dict, nodes: dict, core: CoreNodes) -> None:
    """Runs an API-format prompt in dependency order, our nodes through their ``execute`` on a
    copy of the class that carries the node's id, as ComfyUI does."""
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
            if kind in nodes:
                executed = type(kind, (nodes[kind],), {"hidden": SimpleNamespace(unique_id=node_id, prompt=prompt)})
                results[node_id] = executed.execute(**inputs).args
            else:
                results[node_id] = getattr(core, kind)(**inputs)
        assert len(results) > ready, "the prompt has a cycle or a link to a missing node"


def small_model_loader(loader):
    """Load Segmentation Model whose network works at 64² (the test weights' native 1024² is slow
    on a CPU), so every resolution left at 0 and every refinement window is quick."""
    class SmallLoader(loader):
        @classmethod
        def execute(cls, **inputs):
            output = super().execute(**inputs)
            output.args[0].model.native_resolution = (64, 64)
            return output
    return SmallLoader


def test_every_checkpoint_free_workflow_runs_on_the_stand_in():
    assert {path.stem for path in workflow_files() if not node_types(path) & CHECKPOINT_NODES} == set(STAND_IN_RUNS)


@pytest.mark.parametrize("name", STAND_IN_RUNS)
def test_checkpoint_free_workflow_runs_on_the_stand_in(comfyui, infos, name):
    folder = Path(comfyui.folder_paths.get_folder_paths("meticulous")[0])
    folder.mkdir(parents=True)
    write_test_weights(folder / "test_b0.safetensors")
    workflow = load(name)
    for node in workflow["nodes"]:
        if node["type"] == "MeticulousLoadModel":
            node["widgets_values"][0] = "test_b0.safetensors"
        node["mode"] = 0  # muted alternatives run too
    infos["MeticulousLoadModel"] = node_info(comfyui.nodes["MeticulousLoadModel"])  # lists the test file now
    assert validate(workflow, infos) == []
    core = CoreNodes()
    nodes = comfyui.nodes | {"MeticulousLoadModel": small_model_loader(comfyui.nodes["MeticulousLoadModel"])}
    execute(to_api(workflow, infos), nodes, core)
    if name == "photo_to_transparent_png":
        (saved,) = core.saved.values()
        assert saved.shape == (1, 72, 96, 4) and saved[..., 3].std() > 0
    elif name == "edge_tools_on_hair":
        (saved,) = core.saved.values()
        assert saved.shape == (6, 72, 96, 3)  # six edge treatments side by side
        assert all((saved[i] - saved[j]).abs().max() > 0 for i in range(6) for j in range(i))
    elif name == "highres_4k_cutout":
        chain, one_node = core.saved["meticulous/cutout_4k"], core.saved["meticulous/cutout_4k_one_node"]
        assert chain.shape == (1, 72, 96, 4) and chain[..., 3].std() > 0
        torch.testing.assert_close(chain, one_node)  # the same settings on both paths
        assert len(core.previewed) == 2  # the coarse uncertainty and the refined band
    elif name == "video_matte_alpha":
        (video,) = core.videos
        assert video.format == "video/ProRes" and video.options == {"profile": "4444"}
        assert video.images.shape == (5, 48, 64, 4) and video.images[..., 3].std() > 0
        assert video.frame_rate == CoreNodes.CLIP_FPS and video.meta_batch.frames_per_batch == 48
        assert torch.equal(core.saved["meticulous/matte_frames/frame"], video.images)
    else:
        (video,) = core.videos
        assert video.format == "video/h264-mp4" and video.images.shape == (5, 48, 64, 3)
        assert video.frame_rate == CoreNodes.CLIP_FPS and video.audio is not None
        frames, *_ = core.VHS_LoadVideo("example.mp4", 0, 0, 0, 0, 0, 1, "None")
        assert (video.images - frames).abs().amax(dim=(1, 2, 3)).min() > 0.1  # a new background in every frame


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
