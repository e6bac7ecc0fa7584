"""Loading published weights: architecture chosen from the weights, strict keys, clear errors.

A file is read with safetensors only (never a pickle). Its keys must be exactly those of the
architecture it implies; two kinds of entries may be absent because they carry no learned
information and older or converted files drop them: BatchNorm ``num_batches_tracked`` counters
and Swin's integer ``relative_position_index`` tables, which we compute (and compare when the
file has them).
"""

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..errors import WeightsError
from .backbones import detect_backbone
from .backbones.swin import relative_position_index
from .basnet import BASNet, is_basnet_state_dict
from .birefnet import PATCH_ORDERS, BiRefNet

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FAMILIES = ("birefnet", "basnet")

StateDict = Mapping[str, torch.Tensor]


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, on the CPU; ``WeightsError`` if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    if path.suffix.lower() in (".pth", ".pt", ".ckpt", ".bin", ".pkl"):
        raise WeightsError(
            f"{path}: pickle checkpoints ({path.suffix}) can run arbitrary code and are not loaded. "
            f"Use the model's .safetensors file (see `python -m comfyui_meticulous models`).")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        size = path.stat().st_size
        raise WeightsError(
            f"{path} ({size:,} bytes) is not a readable safetensors file ({err}). It may be "
            f"truncated by an interrupted download or not a weight file at all: delete it and "
            f"download it again.") from None


def detect_family(state_dict: StateDict) -> str:
    """``"birefnet"`` or ``"basnet"`` from key names; ``WeightsError`` for anything else."""
    if is_basnet_state_dict(state_dict):
        return "basnet"
    if any(key.startswith("bb.") for key in state_dict) and any(key.startswith("decoder.") for key in state_dict):
        return "birefnet"
    sample = ", ".join(list(state_dict)[:4]) or "no tensors at all"
    raise WeightsError(
        f"not a BiRefNet or BASNet state dict: expected keys under 'bb.', 'squeeze_module.' and "
        f"'decoder.' (BiRefNet) or BASNet's 'inconv.', 'convbg_1.', 'refunet.'; found {sample}")


def _build_on_meta(family: str, state_dict: StateDict, patch_order: str) -> nn.Module:
    with torch.device("meta"):
        if family == "basnet":
            return BASNet()
        return BiRefNet(detect_backbone(state_dict), patch_order=patch_order)


def _computed_buffer(key: str, like: torch.Tensor) -> torch.Tensor | None:
    """The value of a non-learned buffer the file may omit, or None if ``key`` is not one."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros((), dtype=torch.int64)
    if key.endswith("relative_position_index"):
        return relative_position_index(math.isqrt(like.shape[0]))
    return None


def _complete_state_dict(model: nn.Module, state_dict: StateDict, dtype: torch.dtype,
                         origin: str) -> dict[str, torch.Tensor]:
    """Check ``state_dict`` against ``model`` key by key and return the dict to assign."""
    expected = model.state_dict()
    unexpected = [key for key in state_dict if key not in expected]
    if unexpected:
        raise WeightsError(
            f"{origin}: unexpected key '{unexpected[0]}' ({len(unexpected)} in all) for "
            f"{type(model).__name__}; the file belongs to another architecture or configuration")
    complete = {}
    for key, like in expected.items():
        computed = _computed_buffer(key, like)
        tensor = state_dict.get(key)
        if tensor is None:
            if computed is None:
                raise WeightsError(
                    f"{origin}: key '{key}' is missing (expected shape {list(like.shape)}); the "
                    f"file is incomplete or from a different {type(model).__name__} configuration")
            complete[key] = computed
            continue
        if tuple(tensor.shape) != tuple(like.shape):
            raise WeightsError(
                f"{origin}: key '{key}' has shape {list(tensor.shape)}, expected {list(like.shape)}")
        if like.is_floating_point():
            if tensor.dtype not in FLOAT_DTYPES:
                raise WeightsError(f"{origin}: key '{key}' has dtype {tensor.dtype}, expected a float tensor")
            # A fresh copy: tensors read from a file can sit at addresses that send the CPU
            # kernels down another vector path, which changes the last bits of the outputs.
            complete[key] = tensor.to(dtype, copy=True)
        elif computed is not None and key.endswith("relative_position_index") and not torch.equal(tensor.long(), computed):
            raise WeightsError(f"{origin}: key '{key}' does not hold the standard Swin relative-position index")
        else:
            complete[key] = tensor.to(like.dtype)
    return complete


def build_from_state_dict(state_dict: StateDict, *, dtype: torch.dtype = torch.float32,
                          patch_order: str = "einops", expect: str | None = None,
                          origin: str = "state dict") -> nn.Module:
    """An eval-mode model on the CPU whose architecture is read from ``state_dict``."""
    family = detect_family(state_dict)
    if expect is not None and family != expect:
        raise WeightsError(f"{origin} holds {family} weights, but a {expect} model is needed here")
    if patch_order not in PATCH_ORDERS:
        raise WeightsError(f"patch_order must be one of {sorted(PATCH_ORDERS)}, got {patch_order!r}")
    model = _build_on_meta(family, state_dict, patch_order)
    model.load_state_dict(_complete_state_dict(model, state_dict, dtype, origin), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_model(source: str | os.PathLike | StateDict, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None, *, patch_order: str | None = None,
               expect: str | None = None) -> nn.Module:
    """Load a segmentation model from a ``.safetensors`` path, a manifest id, or a state dict.

    Returns an eval-mode module whose ``forward`` maps ImageNet-normalised ``[B,3,H,W]``
    (H, W multiples of 32) to final-mask logits ``[B,1,H,W]``. ``dtype`` defaults to float32
    (files stored in fp16/bf16 are converted); ``device`` to the CPU. ``patch_order`` overrides
    the image-patch channel order of BiRefNet weights; ``expect`` (``"birefnet"``/``"basnet"``)
    rejects other families with a clear error.
    """
    dtype = dtype or torch.float32
    if dtype not in FLOAT_DTYPES:
        raise WeightsError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    entry = None
    if isinstance(source, Mapping):
        state_dict, origin = source, "state dict"
    else:
        path = Path(source)
        if not path.exists() and isinstance(source, str) and os.sep not in source and not path.suffix:
            from ..weights import get_entry, resolve_weights
            entry = get_entry(source)
            path = resolve_weights(source)
        state_dict, origin = read_safetensors(path), str(path)
    # Catalogue entries of networks without image patches (BASNet) give no order.
    order = patch_order or (entry.patch_order if entry else None) or "einops"
    model = build_from_state_dict(state_dict, dtype=dtype, patch_order=order, expect=expect, origin=origin)
    if entry is not None:
        entry.configure(model)
    return model.to(device) if device is not None else model
