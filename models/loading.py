"""The one loader: any weights we publish or produce, architecture read from the file, strict keys.

A file is read with safetensors only (never a pickle). A file trained with this package names
its architecture and configuration in its header (:mod:`..weights.trained`); published
BiRefNet and BASNet weights are recognised by their keys (:func:`.registry.recognise`) and the
backbone by its shapes. Either way the keys must be exactly those of the network built; two
kinds of entries may be absent because they carry no learned information and older or
converted files drop them: BatchNorm ``num_batches_tracked`` counters and Swin's integer
``relative_position_index`` tables, which we compute (and compare when the file has them).
Every floating-point value must be finite.
"""

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..errors import InputError, WeightsError
from ..weights.trained import FORMAT, decode_header, read_metadata, resolve_trained, save_trained
from .backbones import detect_backbone
from .backbones.swin import relative_position_index
from .base import SegmentationModel
from .birefnet import PATCH_ORDERS
from .registry import ARCHITECTURES, Architecture, recognise, role_of

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".pkl")

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class WeightsInfo:
    """What a weight file holds, read from its header: the architecture id, the constructor
    arguments, the role of the network they build, and whether this package trained it."""

    architecture: str
    config: dict
    role: str
    trained: bool
    metadata: dict


def _check_file(path: Path) -> None:
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.safetensors"))[:5]
        inside = f" (it holds {', '.join(found)})" if found else " (it holds no .safetensors file)"
        raise WeightsError(f"{path} is a folder, not a weight file{inside}: pass the path of the "
                           f".safetensors file itself, or a catalogue id such as 'birefnet'")
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path}: pickle checkpoints ({path.suffix}) can run arbitrary code and are not loaded. "
            f"Use the model's .safetensors file (see `python -m comfyui_meticulous models`).")


def _unreadable(path: Path, err: Exception) -> WeightsError:
    return WeightsError(
        f"{path} ({path.stat().st_size:,} bytes) is not a readable safetensors file ({err}). It may be "
        f"truncated by an interrupted download or not a weight file at all: delete it and "
        f"download it again.")


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` file, on the CPU; ``WeightsError`` if it is not one."""
    path = Path(path)
    _check_file(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _unreadable(path, err) from None


_HEADER_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def _read_header(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The file's tensors as meta tensors of the right shape (nothing is read but the header)
    and its metadata."""
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            shapes = {}
            for key in handle.keys():
                part = handle.get_slice(key)
                dtype = _HEADER_DTYPES.get(part.get_dtype(), torch.int64)
                shapes[key] = torch.empty(part.get_shape(), dtype=dtype, device="meta")
            return shapes, dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise _unreadable(path, err) from None


def identify(state_dict: StateDict, metadata: Mapping[str, str] | None = None, *,
             patch_order: str = "einops", origin: str = "state dict") -> tuple[Architecture, dict]:
    """The architecture and configuration of ``state_dict`` (shapes only: meta tensors do),
    from the header of a trained file when ``metadata`` has one, else from its keys."""
    header = decode_header(metadata or {}, origin)
    if header is not None:
        block = header.get("block")
        if block not in ARCHITECTURES:
            raise WeightsError(f"{origin} holds an unknown network {block!r}; a newer version of this "
                               f"package may read it")
        return ARCHITECTURES[block], dict(header.get("config") or {})
    try:
        architecture = recognise(state_dict)
    except WeightsError as err:
        raise WeightsError(f"{origin}: {err}") from None
    if architecture.id == "birefnet":
        if patch_order not in PATCH_ORDERS:
            raise WeightsError(f"patch_order must be one of {sorted(PATCH_ORDERS)}, got {patch_order!r}")
        return architecture, {"backbone": detect_backbone(state_dict), "patch_order": patch_order}
    if architecture.id == "basnet":
        return architecture, {}
    raise WeightsError(
        f"{origin} has the keys of a {architecture.id} but not the header ('{FORMAT}') that says how it was "
        f"configured; export trained networks with `python -m comfyui_meticulous train` or save_trained")


def detect_family(state_dict: StateDict) -> str:
    """The architecture id of a published state dict (``"birefnet"``, ``"basnet"``) from its keys."""
    return recognise(state_dict).id


def _computed_buffer(key: str, like: torch.Tensor) -> torch.Tensor | None:
    """The value of a non-learned buffer the file may omit, or None if ``key`` is not one."""
    if key.endswith("num_batches_tracked"):
        return torch.zeros((), dtype=torch.int64)
    if key.endswith("relative_position_index"):
        return relative_position_index(math.isqrt(like.shape[0]))
    return None


def check_keys(model: torch.nn.Module, state_dict: StateDict, origin: str) -> None:
    """``WeightsError`` unless ``state_dict`` has exactly ``model``'s keys (less omittable
    buffers) with its shapes and float tensors where it has them; shapes only, so the meta
    tensors of a file's header do."""
    expected = model.state_dict()
    name = type(model).__name__
    unexpected = [key for key in state_dict if key not in expected]
    if unexpected:
        raise WeightsError(
            f"{origin}: unexpected key '{unexpected[0]}' ({len(unexpected)} in all) for {name}; the file "
            f"belongs to another architecture or configuration")
    for key, like in expected.items():
        tensor = state_dict.get(key)
        if tensor is None:
            if _computed_buffer(key, like) is None:
                raise WeightsError(
                    f"{origin}: key '{key}' is missing (expected shape {list(like.shape)}); the file is "
                    f"incomplete or from a different {name} configuration")
            continue
        if tuple(tensor.shape) != tuple(like.shape):
            raise WeightsError(f"{origin}: key '{key}' has shape {list(tensor.shape)}, expected {list(like.shape)}")
        if like.is_floating_point() and tensor.dtype not in FLOAT_DTYPES:
            raise WeightsError(f"{origin}: key '{key}' has dtype {tensor.dtype}, expected a float tensor")


def _complete_state_dict(model: torch.nn.Module, state_dict: StateDict, dtype: torch.dtype,
                         origin: str) -> dict[str, torch.Tensor]:
    """``state_dict`` checked against ``model`` key by key, omitted buffers computed, floats in
    ``dtype``: the dict to assign."""
    check_keys(model, state_dict, origin)
    complete = {}
    for key, like in model.state_dict().items():
        computed = _computed_buffer(key, like)
        tensor = state_dict.get(key)
        if tensor is None:
            complete[key] = computed
        elif like.is_floating_point():
            if not torch.isfinite(tensor).all():
                raise WeightsError(
                    f"{origin}: key '{key}' holds NaN or infinite values; the file is damaged or was saved "
                    f"from a training run that diverged. Download or export it again.")
            # A fresh copy: tensors read from a file can sit at addresses that send the CPU
            # kernels down another vector path, which changes the last bits of the outputs.
            complete[key] = tensor.to(dtype, copy=True)
        elif (computed is not None and key.endswith("relative_position_index")
              and not torch.equal(tensor.long(), computed)):
            raise WeightsError(f"{origin}: key '{key}' does not hold the standard Swin relative-position index")
        else:
            complete[key] = tensor.to(like.dtype)
    return complete


def _build_on_meta(architecture: Architecture, config: dict, origin: str) -> SegmentationModel:
    try:
        with torch.device("meta"):
            return architecture.build(config)
    except InputError as err:
        raise WeightsError(f"{origin}: the configuration in its header does not build a network ({err})") from None


def _expected(expect: str | Iterable[str] | None) -> tuple[str, ...] | None:
    return None if expect is None else ((expect,) if isinstance(expect, str) else tuple(expect))


def _check_expectations(architecture: str, role: str, expect: tuple[str, ...] | None, wanted_role: str | None,
                        origin: str) -> None:
    if expect is not None and architecture not in expect:
        raise WeightsError(f"{origin} holds {architecture} weights, but a {' or '.join(expect)} model is needed here")
    if wanted_role is not None and role != wanted_role:
        use = {"coarse": "Load Segmentation Model, `cut --weights`",
               "refiner": "Uncertainty Refine's learned_weights",
               "fusion": "Global-Local Fuse's learned_weights"}[role]
        raise WeightsError(f"{origin} holds a {architecture} {role} network, but a {wanted_role} network is "
                           f"needed here; use it in {use}")


def build_from_state_dict(state_dict: StateDict, *, dtype: torch.dtype = torch.float32,
                          patch_order: str = "einops", expect: str | Iterable[str] | None = None,
                          role: str | None = None, metadata: Mapping[str, str] | None = None,
                          origin: str = "state dict") -> SegmentationModel:
    """An eval-mode network on the CPU whose architecture is read from ``state_dict`` (and the
    trained-file header in ``metadata``), after the strict key check."""
    architecture, config = identify(state_dict, metadata, patch_order=patch_order, origin=origin)
    model = _build_on_meta(architecture, config, origin)
    _check_expectations(architecture.id, model.role, _expected(expect), role, origin)
    model.load_state_dict(_complete_state_dict(model, state_dict, dtype, origin), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def inspect_weights(path: str | os.PathLike, *, patch_order: str = "einops") -> WeightsInfo:
    """What the file at ``path`` holds, from its header alone (no tensor is read), after the
    strict key check against the network it describes; ``WeightsError`` if it fits none."""
    path = Path(path)
    shapes, metadata = _read_header(path)
    architecture, config = identify(shapes, metadata, patch_order=patch_order, origin=str(path))
    model = _build_on_meta(architecture, config, str(path))
    check_keys(model, shapes, str(path))
    return WeightsInfo(architecture.id, config, model.role, metadata.get("format") == FORMAT, metadata)


def file_role(path: str | os.PathLike) -> str | None:
    """The role of the network a trained file holds, from its header's architecture and
    configuration (the tensors are not read); None for any other file (published weights,
    or a file that is no weight file: loading it says what is wrong)."""
    try:
        header = decode_header(read_metadata(path), str(path))
    except WeightsError:
        return None
    if header is None or header.get("block") not in ARCHITECTURES:
        return None
    try:
        return role_of(header["block"], header.get("config"))
    except InputError:
        return None


def _source_path(source: str | os.PathLike, folders: list[str | os.PathLike] | None):
    """The file and catalogue entry (or None) ``source`` names: a path, a catalogue id, or the
    id of a trained model listed in ``learned_models.json`` in one of ``folders``."""
    path = Path(source)
    suffix = path.suffix.lower()
    if (path.exists() or not isinstance(source, str) or os.sep in source or "/" in source
            or suffix in (".safetensors", *PICKLE_SUFFIXES)):
        return path, None
    from ..weights.catalogue import catalogue, get_entry
    from ..weights.hub import resolve_weights
    if source not in catalogue() and folders:
        return resolve_trained(source, list(folders)), None
    entry = get_entry(source)
    return resolve_weights(entry), entry


def load_model(source: str | os.PathLike | StateDict, device: torch.device | str | None = None,
               dtype: torch.dtype | None = None, *, patch_order: str | None = None,
               expect: str | Iterable[str] | None = None, role: str | None = None,
               folders: list[str | os.PathLike] | None = None) -> SegmentationModel:
    """Load a network from a ``.safetensors`` path, a catalogue id, a trained model's id, or a state dict.

    Returns an eval-mode :class:`~.base.SegmentationModel` whose contract (normalisation, sizes,
    role) says how to run it. ``dtype`` defaults to float32 (files stored in fp16/bf16 are
    converted); ``device`` to the CPU. ``patch_order`` overrides the image-patch channel order
    of BiRefNet weights. ``expect`` (architecture ids) and ``role`` (``"coarse"``, ``"refiner"``,
    ``"fusion"``) reject other networks with a clear error. ``folders`` are searched for
    ``learned_models.json`` entries when ``source`` is an id outside the catalogue.
    """
    dtype = dtype or torch.float32
    if dtype not in FLOAT_DTYPES:
        raise WeightsError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype}")
    entry, metadata = None, None
    if isinstance(source, Mapping):
        state_dict, origin = source, "state dict"
    else:
        path, entry = _source_path(source, folders)
        state_dict, origin = read_safetensors(path), str(path)
        metadata = read_metadata(path)
    order = patch_order or (entry.patch_order if entry is not None and entry.patch_order else "einops")
    model = build_from_state_dict(state_dict, dtype=dtype, patch_order=order, expect=expect, role=role,
                                  metadata=metadata, origin=origin)
    if entry is not None:
        entry.configure(model)
    return model.to(device) if device is not None else model


def save_model(model: SegmentationModel, path: str | os.PathLike,
               metadata: Mapping[str, object] | None = None) -> str:
    """Write ``model`` to ``path`` as a trained file (its architecture and configuration in the
    header) that :func:`load_model` reads back; returns the file's sha256."""
    return save_trained(model.state_dict(), path, model.architecture, model.config, metadata)
