"""Learned blocks trained with this package: build, save, load, and use as refine or fuse steps.

A learned block file is a ``.safetensors`` state dict whose metadata names the block and its
constructor arguments (``format``, ``block``, ``config``), so it loads without any other file.
Exports also get an entry in ``learned_models.json`` beside them (architecture, training data,
metrics, sha256); :func:`resolve_block` finds a file by that entry's id.

Blocks that take a coarse mask (``takes_coarse``: LRN, GLFN, MeticulousNet H, the RefineMask
refiner) are called ``model(x, coarse_logits)``; ``highres.learned`` runs them on predictions.
A GSN or BASNet is a coarse model like any other and goes through
:func:`~comfyui_meticulous.inference.predict_logits`.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import InputError, WeightsError
from ..weights.integrity import sha256_file
from .basnet import BASNet
from .hierpr import MeticulousNet
from .hrsod import GLFN, GSN, LRN
from .loading import read_safetensors
from .refinemask import RefineMaskRefiner

FORMAT = "comfyui-meticulous-learned-1"
MANIFEST = "learned_models.json"
BLOCKS = {"gsn": GSN, "lrn": LRN, "glfn": GLFN, "hierpr": MeticulousNet, "refinemask": RefineMaskRefiner,
          "basnet": BASNet}
ARCHITECTURES = {
    "gsn": "HRSOD Global Semantic Network (VGG-16 FCN, dilated side branches)",
    "lrn": "HRSOD Local Refinement Network (VGG-16 FCN guided at strides 8 and 4)",
    "glfn": "HRSOD Global-Local Fusion Network (dense, growth 2, dilations 1/6/12/18)",
    "hierpr": "MeticulousNet H (HierPR point-wise refinement, recursive decoder)",
    "refinemask": "RefineMask-style stage-wise refiner with boundary-aware updates",
    "basnet": "BASNet (predict and refine)",
}


def build_block(block: str, config: Mapping | None = None) -> nn.Module:
    """A freshly initialised ``block`` (one of :data:`BLOCKS`) with constructor arguments ``config``."""
    if block not in BLOCKS:
        raise InputError(f"unknown block {block!r}; expected one of {', '.join(BLOCKS)}")
    try:
        return BLOCKS[block](**dict(config or {}))
    except TypeError as err:
        raise InputError(f"bad configuration for {block}: {err}") from None


def block_config(model: nn.Module) -> dict:
    """The constructor arguments of a built block (BASNet has none)."""
    return dict(getattr(model, "config", {}))


def save_block(model: nn.Module, path: str | os.PathLike, block: str,
               metadata: Mapping[str, object] | None = None) -> str:
    """Write ``model``'s state dict to ``path`` with the block description; returns its sha256.

    ``metadata`` values are stored as JSON strings. The file is written beside its final name and
    renamed into place, so a crash never leaves a truncated file under that name.
    """
    path = Path(path)
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in model.state_dict().items()}
    header = {"format": FORMAT, "block": block, "config": json.dumps(block_config(model))}
    header.update({key: json.dumps(value) for key, value in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".partial")
    save_file(tensors, str(staging), metadata=header)
    os.replace(staging, path)
    return sha256_file(path)


def block_metadata(path: str | os.PathLike) -> dict:
    """The block description of a learned block file: ``block``, ``config`` and any extra keys
    (JSON-decoded). ``WeightsError`` for files that are not learned blocks."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file ({err})") from None
    if raw.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a learned block file (no '{FORMAT}' format tag); "
                           f"published BiRefNet/BASNet weights load with load_model instead")
    meta = {key: value for key, value in raw.items() if key not in ("format", "block")}
    decoded = {"block": raw.get("block")}
    for key, value in meta.items():
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            raise WeightsError(f"{path}: metadata entry '{key}' is not valid JSON") from None
    return decoded


def is_block_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a learned block file (reads the header only)."""
    try:
        block_metadata(path)
    except WeightsError:
        return False
    return True


def load_block(source: str | os.PathLike, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32, *, expect: str | tuple[str, ...] | None = None,
               folders: list[str | os.PathLike] | None = None) -> nn.Module:
    """An eval-mode learned block from a file, or from an id in ``learned_models.json`` in one of
    ``folders`` (see :func:`resolve_block`). ``expect`` rejects other blocks with a clear error."""
    path = Path(source)
    if not path.is_file():
        path = resolve_block(str(source), folders or [])
    meta = block_metadata(path)
    block = meta["block"]
    if expect is not None and block not in ((expect,) if isinstance(expect, str) else expect):
        raise WeightsError(f"{path} holds a {block} block, but {expect} is needed here")
    if block not in BLOCKS:
        raise WeightsError(f"{path} holds an unknown block {block!r}; a newer version of this package may read it")
    state = read_safetensors(path)
    with torch.device("meta"):
        model = build_block(block, meta.get("config"))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise WeightsError(f"{path}: {'missing' if missing else 'unexpected'} key '{first}' for the {block} "
                           f"configuration stored in the file; the file is damaged")
    for key, like in expected.items():
        if tuple(state[key].shape) != tuple(like.shape):
            raise WeightsError(f"{path}: key '{key}' has shape {list(state[key].shape)}, expected {list(like.shape)}")
        # A fresh copy: tensors read from a file can sit at addresses that send the CPU kernels
        # down another vector path, which changes the last bits of the outputs.
        state[key] = state[key].to(dtype=dtype if like.is_floating_point() else state[key].dtype, copy=True)
    model.load_state_dict(state, strict=True, assign=True)
    model = model.eval().requires_grad_(False)
    return model.to(device) if device is not None else model


def read_manifest(folder: str | os.PathLike) -> list[dict]:
    """The entries of ``folder/learned_models.json`` (empty when there is none)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text())["models"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise WeightsError(f"{path} is not a learned-model manifest ({err})") from None


def write_manifest_entry(folder: str | os.PathLike, entry: Mapping) -> Path:
    """Add ``entry`` to ``folder/learned_models.json``, replacing an entry with the same id."""
    path = Path(folder) / MANIFEST
    entries = [item for item in read_manifest(folder) if item.get("id") != entry["id"]]
    entries.append(dict(entry))
    staging = path.with_name(path.name + ".partial")
    staging.write_text(json.dumps({"version": 1, "models": entries}, indent=2) + "\n")
    os.replace(staging, path)
    return path


def resolve_block(name: str, folders: list[str | os.PathLike]) -> Path:
    """The file of manifest entry ``name`` in the first of ``folders`` that lists it."""
    for folder in folders:
        for entry in read_manifest(folder):
            if entry.get("id") == name:
                path = Path(folder) / entry["filename"]
                if not path.is_file():
                    raise WeightsError(f"{Path(folder) / MANIFEST} lists '{name}' as {entry['filename']}, "
                                       f"which is not in {folder}")
                return path
    looked = ", ".join(str(Path(f) / MANIFEST) for f in folders) or "no folder"
    raise WeightsError(f"learned block '{name}' is neither a file nor listed in {looked}")
