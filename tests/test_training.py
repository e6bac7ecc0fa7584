"""Training the learned blocks: losses, data layouts, overfitting, exact resume, export, CLI."""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from comfyui_meticulous.errors import InputError
from comfyui_meticulous.inference.images import normalise
from comfyui_meticulous.models import load_model
from comfyui_meticulous.weights.trained import read_manifest, trained_header
from comfyui_meticulous.training import (
    PerturbedTruth,
    TensorPairs,
    Trainer,
    TrainOptions,
    add_train_parser,
    find_pairs,
    hybrid_loss,
    iou_loss,
    ssim_loss,
    synthetic_pairs,
    write_scenes,
)
from comfyui_meticulous.training.cli import push_to_hub
from comfyui_meticulous.training.losses import block_loss, target_at
from comfyui_meticulous.training.trainer import training_outputs
from comfyui_meticulous.weights.integrity import sha256_file

TINY_REFINEMASK = {"pyramid": [8, 8, 16, 16], "width": 32}
TINY_HIERPR = {"encoder": "resnet50", "encoder_options": {"base": 8, "blocks": [1, 1, 1, 1], "out_channels": 16},
               "widths": [16, 16, 8], "point_width": 16, "head_width": 8}


pytestmark = pytest.mark.usefixtures("single_thread")


def scenes(count: int, size: int, seed: int = 0, binary: bool = True) -> TensorPairs:
    images, masks = synthetic_pairs(count, size, seed)
    return TensorPairs(images, (masks > 0.5).float() if binary else masks)


def low_resolution_truth(images, masks, generator):
    """A fixed coarse input: the truth seen at a quarter of its resolution."""
    return 8 * (F.avg_pool2d(masks, 4) - 0.5)


def options(block: str, **changes) -> TrainOptions:
    base = {"block": block, "size": 32, "batch_size": 2, "steps": 300, "lr": 0.01, "flip": False,
            "val_every": 10 ** 6, "checkpoint_every": 10 ** 6}
    return TrainOptions(**{**base, **changes})


# ----------------------------------------------------------------------------- losses


def test_hybrid_loss_vanishes_on_a_perfect_prediction():
    target = torch.zeros(2, 1, 24, 24)
    target[..., 6:18, 4:14] = 1
    assert hybrid_loss(60 * (2 * target - 1), target) < 1e-4
    assert ssim_loss(target, target) < 1e-6
    assert hybrid_loss(torch.zeros_like(target), target) > 0.5


def test_iou_loss_of_a_half_sure_prediction():
    # p = 0.5 everywhere, g = 1 on half the pixels: intersection N/4, union N/2 + N/2 - N/4.
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    assert iou_loss(torch.full_like(target, 0.5), target).item() == pytest.approx(2 / 3)


def test_block_losses_reject_outputs_of_another_block():
    with pytest.raises(InputError, match="MeticulousNet"):
        block_loss("mos", torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    with pytest.raises(InputError, match="RefineMask"):
        block_loss("refinemask", torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


# ----------------------------------------------------------------------------- data


def _write_pairs(images_dir, masks_dir, names, image_suffix=".jpg"):
    images_dir.mkdir(parents=True)
    masks_dir.mkdir(parents=True)
    for name in names:
        Image.new("RGB", (20, 12), (200, 10, 10)).save(images_dir / f"{name}{image_suffix}")
        Image.new("L", (20, 12), 255).save(masks_dir / f"{name}.png")


def test_dataset_layouts_are_recognised(tmp_path):
    dis = tmp_path / "DIS5K"
    _write_pairs(dis / "DIS-TR" / "im", dis / "DIS-TR" / "gt", ["a", "b"])
    _write_pairs(dis / "DIS-VD" / "im", dis / "DIS-VD" / "gt", ["c"])
    train, val = find_pairs(dis)
    assert [p[0].name for p in train] == ["a.jpg", "b.jpg"] and [p[0].name for p in val] == ["c.jpg"]
    assert find_pairs(dis / "DIS-TR")[0] == train

    hrsod = tmp_path / "HRSOD"
    _write_pairs(hrsod / "HRSOD_train", hrsod / "HRSOD_train_mask", ["x", "y"])
    train, val = find_pairs(hrsod)
    assert [p[1].name for p in train] == ["x.png", "y.png"] and val is None
    assert find_pairs(hrsod / "HRSOD_train")[0] == train

    plain = tmp_path / "plain"
    _write_pairs(plain / "images", plain / "masks", ["p", "q"], ".png")
    (plain / "images" / "unpaired.png").write_bytes((plain / "images" / "p.png").read_bytes())
    assert [p[0].stem for p in find_pairs(plain)[0]] == ["p", "q"]
    with pytest.raises(InputError, match="DIS5K"):
        find_pairs(tmp_path)


def test_perturbed_truth_is_seeded_and_close_to_the_truth():
    _, masks = synthetic_pairs(2, 256, seed=3)
    source = PerturbedTruth()
    first = source(None, masks, torch.Generator().manual_seed(7))
    again = source(None, masks, torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    coarse = F.interpolate(first, size=(256, 256), mode="bilinear", align_corners=False) > 0
    truth = masks > 0.5
    iou = (coarse & truth).sum() / (coarse | truth).sum()
    assert 0.6 < iou < 0.98


# ----------------------------------------------------------------------------- training


def _floor(trainer: Trainer, data: TensorPairs) -> float:
    """The block's loss if every output were the target itself (at its own resolution): what
    soft, downsampled targets leave even to a perfect fit."""
    with torch.no_grad():
        outputs = training_outputs(trainer.model, normalise(data.images), low_resolution_truth(None, data.masks, None))

    def ideal(logits):
        return torch.logit(target_at(data.masks, logits.shape[-2:]).clamp(1e-6, 1 - 1e-6))

    if isinstance(outputs, dict):
        outputs = {name: (c, ideal(r)) for name, (c, r) in outputs.items()}
    else:
        outputs = [ideal(logits) for logits in outputs]
    return block_loss(trainer.options.loss_name, outputs, data.masks).item()


@pytest.mark.parametrize("block, config, size, lr", [
    ("glfn", {}, 32, 0.01),
    ("refinemask", TINY_REFINEMASK, 32, 0.01),
    ("hierpr", TINY_HIERPR, 64, 0.005),
])
def test_trainer_overfits_a_small_set(tmp_path, block, config, size, lr):
    data = scenes(2, size)
    trainer = Trainer(options(block, config=config, size=size, lr=lr), data, tmp_path, coarse=low_resolution_truth)
    floor = _floor(trainer, data) if block != "glfn" else 0.0
    losses = trainer.run()
    assert len(losses) == 300
    # Multi-scale losses compare with area-averaged (soft) targets, whose cross-entropy is never 0.
    assert losses[-1] - floor <= (losses[0] - floor) / 10


def test_resumed_training_takes_the_same_steps(tmp_path):
    data = scenes(3, 32, binary=False)
    o = options("refinemask", config=TINY_REFINEMASK, steps=6, crop=24, flip=True, checkpoint_every=3, lr=1e-3)
    straight = Trainer(o, data, tmp_path / "straight", coarse=PerturbedTruth())
    expected = straight.run()

    first = Trainer(o, data, tmp_path / "resumed", coarse=PerturbedTruth())
    assert first.run(3) == expected[:3]
    resumed = Trainer(o, data, tmp_path / "resumed", coarse=PerturbedTruth())
    assert resumed.step == 3
    assert resumed.run() == expected[3:]
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key

    fresh = Trainer(o, data, tmp_path / "resumed", coarse=PerturbedTruth(), resume=False)
    assert fresh.step == 0


def test_export_reloads_bit_identically(tmp_path):
    data = scenes(2, 32, binary=False)
    o = options("hierpr", config=TINY_HIERPR, steps=2, val_every=2)
    trainer = Trainer(o, data, tmp_path, val=data, coarse=PerturbedTruth())
    trainer.run()
    assert set(trainer.metrics) == {"mBA", "MQ", "coarse_mBA", "coarse_MQ"}
    path = trainer.export("hierpr-test", data="two synthetic scenes")

    entry = read_manifest(tmp_path)[0]
    assert entry["id"] == "hierpr-test" and entry["block"] == "hierpr" and entry["filename"] == path.name
    assert entry["sha256"] == sha256_file(path) and entry["size"] == path.stat().st_size
    assert entry["training"]["data"] == "two synthetic scenes" and entry["training"]["steps"] == 2
    assert entry["metrics"] == trainer.metrics
    assert trained_header(path)["metrics"] == trainer.metrics

    for loaded in (load_model(path), load_model("hierpr-test", folders=[tmp_path])):
        x, coarse = normalise(data.images), torch.randn(2, 1, 8, 8)
        trainer.model.eval()
        with torch.no_grad():
            assert torch.equal(loaded(x, coarse), trainer.model(x, coarse))


def test_refiners_need_a_coarse_source_and_sizes_must_fit(tmp_path):
    with pytest.raises(InputError, match="coarse"):
        Trainer(options("glfn"), scenes(1, 32), tmp_path)
    with pytest.raises(InputError, match="multiples of 16"):
        Trainer(options("gsn", size=40, config={"widths": [8, 8, 8, 8, 8]}), scenes(1, 40), tmp_path)
    with pytest.raises(InputError, match="multiples of 8"):
        Trainer(options("refinemask", crop=20, config=TINY_REFINEMASK), scenes(1, 32), tmp_path,
                coarse=low_resolution_truth)


# ----------------------------------------------------------------------------- command line


def test_train_command_trains_exports_and_resumes(tmp_path, capsys):
    data = write_scenes(tmp_path / "scenes", 3, 32)
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers(dest="command"))
    argv = ["train", "--block", "glfn", "--data", str(data), "--out", str(tmp_path / "out"), "--size", "32",
            "--batch-size", "2", "--steps", "3", "--workers", "0", "--device", "cpu", "--val-every", "3",
            "--checkpoint-every", "2", "--id", "glfn-scenes"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    entry = read_manifest(tmp_path / "out")[0]
    assert entry["id"] == "glfn-scenes" and entry["training"]["steps"] == 3
    assert "perturbed ground truth" in entry["training"]["data"]
    assert 0 <= entry["metrics"]["mBA"] <= 1
    assert isinstance(load_model(tmp_path / "out" / "glfn-scenes.safetensors"), torch.nn.Module)

    # A longer run in the same folder resumes from the checkpoint.
    args = parser.parse_args([*argv[:-6], "--steps", "4", "--val-every", "4", "--checkpoint-every", "2",
                              "--id", "glfn-scenes"])
    assert args.func(args) == 0
    assert "resuming" in capsys.readouterr().err
    assert read_manifest(tmp_path / "out")[0]["training"]["steps"] == 4


def test_push_to_hub_uploads_the_file_and_its_entry(tmp_path, monkeypatch):
    import huggingface_hub

    data = scenes(1, 32)
    trainer = Trainer(options("glfn", steps=1), data, tmp_path, coarse=low_resolution_truth)
    trainer.run()
    path = trainer.export("glfn-hub", data="one scene")
    calls = []
    monkeypatch.setattr(huggingface_hub, "upload_file", lambda **kwargs: calls.append(kwargs))
    push_to_hub(path, "someone/glfn")
    assert [c["path_in_repo"] for c in calls] == ["glfn-hub.safetensors", "glfn-hub.json"]
    assert all(c["repo_id"] == "someone/glfn" for c in calls)
    assert json.loads(calls[1]["path_or_fileobj"])["sha256"] == sha256_file(path)


@pytest.mark.parametrize("highres", [False, True])
def test_a_frozen_model_can_provide_the_coarse_input(tmp_path, highres):
    from comfyui_meticulous.highres import HighResOptions
    from comfyui_meticulous.models.hrsod import GSN
    from comfyui_meticulous.training import FrozenModel

    torch.manual_seed(0)
    gsn = GSN(widths=(8, 8, 16, 16, 16), branch_width=8)
    frozen = FrozenModel(gsn, highres=highres, resolution=32,
                         options=HighResOptions(coarse_resolution=32, patch_resolution=32))
    data = scenes(2, 48)
    trainer = Trainer(options("glfn", size=48, steps=2, val_every=2), data, tmp_path, val=data, coarse=frozen)
    losses = trainer.run()
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert 0 <= trainer.metrics["coarse_mBA"] <= 1
    assert not any(p.requires_grad for p in frozen.model.parameters())


def test_basnet_trains_on_its_own_normalisation(tmp_path, monkeypatch):
    # BASNet divides each image by its maximum before the ImageNet statistics (as at inference);
    # training must feed it the same, not the ImageNet normalisation of the other blocks.
    from comfyui_meticulous.training import trainer as trainer_module

    modes = []
    real = trainer_module.normalise
    monkeypatch.setattr(trainer_module, "normalise",
                        lambda images, mode="imagenet": modes.append(mode) or real(images, mode))
    data = scenes(2, 64)
    data.images[0] *= 0.5  # dark images: "max" stretches them, "imagenet" does not
    data.images[1] *= 0.7
    trainer = Trainer(options("basnet", steps=2, size=64), data, tmp_path)
    seen = []
    trainer.model.inconv.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    trainer.run()
    assert trainer.step == 2 and modes == ["max", "max"]
    assert len(seen) == 2
    for item in torch.cat(seen):
        own = [torch.allclose(item, normalise(image[None], "max")[0]) for image in data.images]
        imagenet = [torch.allclose(item, normalise(image[None], "imagenet")[0]) for image in data.images]
        assert any(own) and not any(imagenet)
