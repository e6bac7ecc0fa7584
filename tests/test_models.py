"""The model front door: one contract, one registry, one loader for every file we publish or produce."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from comfyui_meticulous.cli import main
from comfyui_meticulous.errors import InputError, WeightsError
from comfyui_meticulous.models import (ARCHITECTURES, BASNet, SegmentationModel, file_role, inspect_weights,
                                       load_model, recognise, save_model)
from comfyui_meticulous.models.backbones import BACKBONES
from comfyui_meticulous.models.base import NORMALISATIONS, ROLES
from comfyui_meticulous.models.registry import architectures, build, role_of, trainable_ids
from comfyui_meticulous.weights.trained import FORMAT

REPO = Path(__file__).resolve().parents[1]
LIBRARY = [p for p in REPO.rglob("*.py") if not p.relative_to(REPO).parts[0] in ("tests", "bench", ".git")]

TINY_VGG = {"widths": [8, 8, 16, 16, 16], "branch_width": 8}
TINY_MOS = {"encoder": "mobilenetv3", "encoder_options": {"width_mult": 0.25}, "widths": [16, 16, 8],
            "point_width": 16, "head_width": 8}
# Small configurations of every trainable network, and the role each file should have.
TRAINED = {
    "gsn": (TINY_VGG, "coarse"),
    "lrn": (TINY_VGG, "refiner"),
    "glfn": ({}, "fusion"),
    "hierpr": (TINY_MOS, "refiner"),
    "hierpr-l": ({**TINY_MOS, "in_channels": 3}, "coarse"),
    "refinemask": ({"pyramid": [8, 8, 16, 16], "width": 32}, "refiner"),
}

pytestmark = pytest.mark.usefixtures("single_thread")


def _architecture(name: str) -> str:
    return name.split("-")[0]


def _save(name: str, folder: Path) -> tuple[Path, SegmentationModel]:
    config, _ = TRAINED[name]
    torch.manual_seed(3)
    model = build(_architecture(name), config).eval()
    path = folder / f"{name}.safetensors"
    save_model(model, path, {"note": "test"})
    return path, model


# ----------------------------------------------------------------------------- contract and registry


def test_every_registered_network_declares_the_contract():
    for spec in ARCHITECTURES.values():
        cls = spec.model_class
        assert issubclass(cls, SegmentationModel) and cls.architecture == spec.id
        assert cls.input_normalisation in NORMALISATIONS and cls.size_multiple >= 1
        assert set(spec.roles) <= set(ROLES)
    with torch.device("meta"):
        for name, (config, role) in TRAINED.items():
            model = build(_architecture(name), config)
            assert model.role == role == role_of(_architecture(name), config)
            assert model.takes_coarse == (role != "coarse")
    assert BASNet.input_normalisation == "max"
    assert [a.id for a in architectures(role="fusion")] == ["glfn"]
    assert "birefnet" not in trainable_ids() and "basnet" in trainable_ids()
    # Backbones are a registry of their own, not networks.
    assert not set(BACKBONES) & set(ARCHITECTURES)


def test_each_key_signature_recognises_its_own_network_only():
    with torch.device("meta"):
        for name, (config, _) in {**TRAINED, "basnet": ({}, "coarse"),
                                  "birefnet": ({"backbone": "pvt_v2_b0"}, "coarse")}.items():
            keys = list(build(_architecture(name), config).state_dict())
            assert recognise(keys).id == _architecture(name)
    with pytest.raises(WeightsError, match="not a BiRefNet or BASNet state dict"):
        recognise(["model.diffusion_model.out.weight"])


def test_library_code_reads_the_contract_not_getattr_defaults():
    pattern = re.compile(r"getattr\((self\.)?(model|network|net|block|module)\b")
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in LIBRARY
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_no_bare_value_error_is_raised_in_library_code():
    # Errors users can cause are MeticulousError subclasses: the CLI prints them as one line.
    offenders = [f"{p.relative_to(REPO)}:{n}" for p in LIBRARY
                 for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"raise\s+ValueError\b", line)]
    assert offenders == []


# ----------------------------------------------------------------------------- one loader


@pytest.mark.parametrize("name", list(TRAINED))
def test_a_trained_file_loads_through_load_model_with_its_role(tmp_path, name):
    path, model = _save(name, tmp_path)
    architecture = _architecture(name)
    role = TRAINED[name][1]
    info = inspect_weights(path)
    assert (info.architecture, info.role, info.trained) == (architecture, role, True)
    assert file_role(path) == role
    loaded = load_model(path, role=role)
    assert type(loaded) is type(model) and loaded.config == model.config and not loaded.training
    x = torch.randn(1, 3, 32, 32)
    coarse = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.run(x, coarse), model.run(x, coarse), rtol=0, atol=0)
    other = "fusion" if role != "fusion" else "coarse"
    with pytest.raises(WeightsError, match=f"{architecture} {role} network, but a {other} network is needed"):
        load_model(path, role=other)


def test_a_trained_basnet_loads_as_a_coarse_model(tmp_path):
    torch.manual_seed(0)
    model = BASNet().to(torch.bfloat16)  # half the bytes on disk; loading converts to float32
    path = tmp_path / "basnet-mine.safetensors"
    save_model(model, path)
    assert file_role(path) == "coarse"
    loaded = load_model(path, role="coarse")
    assert isinstance(loaded, BASNet) and loaded.input_normalisation == "max"
    key = "refunet.conv_d0.weight"
    assert torch.equal(loaded.state_dict()[key], model.state_dict()[key].float())


def test_a_trained_id_is_found_in_learned_models_json(tmp_path):
    from comfyui_meticulous.weights.trained import write_manifest_entry

    path, _ = _save("glfn", tmp_path)
    write_manifest_entry(tmp_path, {"id": "my-fusion", "filename": path.name})
    assert load_model("my-fusion", folders=[tmp_path]).architecture == "glfn"
    with pytest.raises(WeightsError, match="neither a file nor listed"):
        load_model("nobody", folders=[tmp_path])


def test_a_folder_is_refused_with_what_to_pass(tmp_path):
    _save("glfn", tmp_path)
    with pytest.raises(WeightsError, match=r"is a folder, not a weight file \(it holds glfn.safetensors\): pass"):
        load_model(tmp_path)


def test_non_finite_weights_are_refused_naming_the_key(tmp_path):
    path, model = _save("glfn", tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["final.weight"][0, 0, 1, 1] = float("nan")
    save_file(state, str(path), metadata={"format": FORMAT, "block": "glfn", "config": "{}"})
    with pytest.raises(WeightsError, match="key 'final.weight' holds NaN or infinite values"):
        load_model(path)
    state["final.weight"][0, 0, 1, 1] = float("-inf")
    save_file(state, str(path), metadata={"format": FORMAT, "block": "glfn", "config": "{}"})
    with pytest.raises(WeightsError, match="key 'final.weight' holds NaN or infinite values"):
        load_model(path)


def test_a_trained_file_that_differs_from_its_header_is_refused(tmp_path):
    path, model = _save("gsn", tmp_path)
    state = dict(model.state_dict())
    save_file(state, str(path), metadata={"format": FORMAT, "block": "lrn", "config": "{}"})
    with pytest.raises(WeightsError, match="missing|shape"):
        load_model(path)
    with pytest.raises(WeightsError, match="missing|shape"):
        inspect_weights(path)
    save_file(state, str(path), metadata={"format": FORMAT, "block": "unet", "config": "{}"})
    with pytest.raises(WeightsError, match="unknown network 'unet'"):
        load_model(path)
    save_file(state, str(path))  # our keys, but no header saying how the network was configured
    with pytest.raises(WeightsError, match="not the header"):
        load_model(path)


# ----------------------------------------------------------------------------- cut --weights


def test_cut_takes_a_trained_whole_predictor_and_refuses_a_refiner(tmp_path, capsys):
    gsn, _ = _save("gsn", tmp_path)
    refiner, _ = _save("refinemask", tmp_path)
    image = tmp_path / "in" / "photo.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(image)
    out = tmp_path / "out"
    assert main(["cut", str(image), "-o", str(out), "--weights", str(gsn), "--device", "cpu"]) == 0
    with Image.open(out / "photo.png") as cutout:
        assert cutout.mode == "RGBA" and cutout.size == (56, 40)
    capsys.readouterr()
    assert main(["cut", str(image), "-o", str(tmp_path / "out2"), "--weights", str(refiner), "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "refiner network, but a coarse network is needed" in error
    assert "Traceback" not in error


def test_input_checks_raise_input_errors():
    with torch.device("meta"):
        refiner = build("refinemask", TRAINED["refinemask"][0])
    with pytest.raises(InputError, match="pass the coarse logits"):
        refiner.check_input(torch.zeros(1, 3, 16, 16))
    with pytest.raises(InputError, match="multiples of 8"):
        refiner.check_input(torch.zeros(1, 3, 20, 16), torch.zeros(1, 1, 4, 4))
