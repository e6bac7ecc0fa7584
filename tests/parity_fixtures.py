"""The parity fixtures: where the cases lie, and their weights regenerated from a key manifest.

The parity cases in ``tests/fixtures/reference`` hold inputs, outputs and intermediate tensors
of the official implementations, measured with random but reproducible weights; no weight file
is stored. Larger cases of the same kind are optional: they are read from ``reference`` in the
folder ``METICULOUS_SHARED`` names (default ``../shared`` beside the repository), and tests
that use them skip, saying so, where it is absent.

Weights: every tensor is drawn on its own from a CPU generator seeded with ``zlib.crc32(key)``,
in float32, by the first rule that matches (``N``: randn, ``U``: rand):

* ``running_var``: ``1 + 0.1 * U``; ``running_mean``: ``0.1 * N``; ``num_batches_tracked``: 0;
* 1-D ``*.weight`` (norm scales): ``1 + 0.1 * N``; ``*.bias``: ``0.05 * N``;
* ``relative_position_bias_table``: ``0.02 * N``;
* any other float of ndim >= 2: ``N * (1 / fan_in) ** 0.5`` with ``fan_in = prod(shape[1:])``;
* any other float: ``0.05 * N``.

The other integer buffers (Swin's ``relative_position_index``) are not random: a model computes
them itself, so they are left out unless ``reference_buffers`` supplies them. Each case's
``weights_sha256`` says whether this reproduces the weights the reference outputs were made with.

Manifest format, one line per ``state_dict`` entry in the model's own order:
``key<TAB>comma-separated shape<TAB>dtype`` (empty shape for a 0-d tensor).
"""

import hashlib
import json
import math
import os
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFERENCE = FIXTURES / "reference"
EXTRA_REFERENCE = Path(os.environ.get("METICULOUS_SHARED", FIXTURES.parents[2] / "shared")) / "reference"

_DTYPES = {"float32": torch.float32, "int64": torch.int64}

Spec = list[tuple[str, tuple[int, ...], str]]


def load_spec(path: Path | str) -> Spec:
    """A manifest as ``[(key, shape, dtype name), ...]`` in ``state_dict`` order."""
    spec = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        spec.append((key, tuple(int(n) for n in shape.split(",")) if shape else (), dtype))
    return spec


def _sidecar(name: str) -> Path | None:
    """The ``.json`` of case ``name`` (e.g. ``"basnet/basnet_128x160"``), in-repo first."""
    for folder in (REFERENCE, EXTRA_REFERENCE):
        if (folder / f"{name}.json").exists():
            return folder / f"{name}.json"
    return None


def parity_cases(*names: str) -> list:
    """One ``pytest.param`` per case name, skipped where the case is in neither folder (only the
    optional larger cases can be missing)."""
    return [pytest.param(name, id=name.rsplit("/", 1)[-1], marks=pytest.mark.skipif(
        _sidecar(name) is None, reason=f"optional parity case {name} is not in {EXTRA_REFERENCE} "
                                       f"(set METICULOUS_SHARED to the folder that holds reference/)"))
            for name in names]


def load_case(name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, metadata)`` of a parity case."""
    sidecar = _sidecar(name)
    if sidecar is None:
        raise FileNotFoundError(f"parity case {name} is neither in {REFERENCE} nor in {EXTRA_REFERENCE}")
    return load_file(str(sidecar.with_suffix(".safetensors"))), json.loads(sidecar.read_text())


def _float_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    leaf = key.rsplit(".", 1)[-1]

    def normal() -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32)

    if leaf == "running_var":
        return 1 + 0.1 * torch.rand(shape, generator=generator, dtype=torch.float32)
    if leaf == "running_mean":
        return 0.1 * normal()
    if leaf == "weight" and len(shape) == 1:
        return 1 + 0.1 * normal()
    if leaf == "bias":
        return 0.05 * normal()
    if leaf == "relative_position_bias_table":
        return 0.02 * normal()
    if len(shape) >= 2:
        return normal() * (1 / math.prod(shape[1:])) ** 0.5
    return 0.05 * normal()


def deterministic_state_dict(spec: Spec, reference_buffers: dict[str, torch.Tensor] | None = None
                             ) -> dict[str, torch.Tensor]:
    """The weights of ``spec``: floats and ``num_batches_tracked`` as the recipe above makes them,
    other integer buffers copied from ``reference_buffers`` (a model's own ``state_dict()``) or,
    without it, left out as published weight files leave them out."""
    weights = {}
    for key, shape, dtype in spec:
        if dtype == "float32":
            weights[key] = _float_tensor(key, shape)
        elif key.endswith("num_batches_tracked"):
            weights[key] = torch.zeros(shape, dtype=torch.int64)
        elif reference_buffers is not None:
            buffer = reference_buffers[key]
            if tuple(buffer.shape) != shape or buffer.dtype != _DTYPES[dtype]:
                raise ValueError(f"{key}: the reference buffer is {tuple(buffer.shape)} {buffer.dtype}, "
                                 f"the manifest says {shape} {dtype}")
            weights[key] = buffer.detach().clone()
    return weights


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """The ``weights_sha256`` of a parity case: SHA-256 over every float tensor and every
    ``num_batches_tracked``, in the dict's order, each as a header line
    ``key<TAB>(shape tuple)<TAB>torch dtype`` then its raw little-endian bytes. Other integer
    buffers are left out, so the digest is the same with or without ``reference_buffers``."""
    digest = hashlib.sha256()
    for key, tensor in state_dict.items():
        if not (tensor.is_floating_point() or key.endswith("num_batches_tracked")):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}\t{tuple(tensor.shape)}\t{tensor.dtype}\n".encode())
        digest.update(tensor.numpy().astype(tensor.numpy().dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.hexdigest()
