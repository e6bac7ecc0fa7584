"""Files of networks trained with this package: the header that makes them self-describing, and
the ``learned_models.json`` manifest beside them.

A trained file is a ``.safetensors`` state dict whose metadata names the architecture and its
constructor arguments (``format``, ``block``, ``config``), so ``load_model`` builds it without
any other file. Exports also get an entry in ``learned_models.json`` in their folder
(architecture, training data, metrics, sha256); :func:`resolve_trained` finds a file by that
entry's id.
"""

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import WeightsError
from ..files.atomic import atomic_path, atomic_write
from .integrity import sha256_file

FORMAT = "comfyui-meticulous-learned-1"
MANIFEST = "learned_models.json"


def save_trained(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, architecture: str,
                 config: Mapping, metadata: Mapping[str, object] | None = None) -> str:
    """Write ``state_dict`` to ``path`` with the header naming ``architecture`` and its ``config``;
    returns the file's sha256. ``metadata`` values are stored as JSON strings."""
    path = Path(path)
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state_dict.items()}
    header = {"format": FORMAT, "block": architecture, "config": json.dumps(dict(config))}
    header.update({key: json.dumps(value) for key, value in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as staging:
        save_file(tensors, str(staging), metadata=header)
    return sha256_file(path)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The raw metadata of a safetensors file (header only); ``WeightsError`` if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path} is not a readable safetensors file ({err})") from None


def decode_header(metadata: Mapping[str, str], origin: str) -> dict | None:
    """The description of a trained file from its raw ``metadata``: ``block`` (the architecture
    id), ``config`` and any extra entries, JSON-decoded; None for a file without our header."""
    if metadata.get("format") != FORMAT:
        return None
    decoded = {"block": metadata.get("block")}
    for key, value in metadata.items():
        if key in ("format", "block"):
            continue
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            raise WeightsError(f"{origin}: metadata entry '{key}' is not valid JSON") from None
    return decoded


def trained_header(path: str | os.PathLike) -> dict | None:
    """:func:`decode_header` of the file at ``path``."""
    return decode_header(read_metadata(path), str(path))


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
    atomic_write(path, json.dumps({"version": 1, "models": entries}, indent=2) + "\n")
    return path


def resolve_trained(name: str, folders: list[str | os.PathLike]) -> Path:
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
    raise WeightsError(f"trained model '{name}' is neither a file nor listed in {looked}")
