"""Shared test fixtures.

Parity fixtures live in ``../shared/reference`` beside the repository (or wherever
``METICULOUS_SHARED`` points). They are required: a missing folder fails the tests that
need it instead of skipping them, so a green run always means parity was checked.
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("METICULOUS_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"parity fixtures not found at {path}; check out the shared folder beside the "
            f"repository or set METICULOUS_SHARED", pytrace=False)
    return path


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(REFERENCE)


@pytest.fixture(scope="session")
def det_weights(reference_dir):
    """The fixtures' own ``deterministic_weights`` module, loaded from the shared folder."""
    spec = importlib.util.spec_from_file_location(
        "deterministic_weights", reference_dir / "deterministic_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_case(reference_dir):
    """``load_case("birefnet/birefnet_swin_v1_t_512x512")`` -> (tensors, metadata)."""
    def load(name: str):
        base = reference_dir / name
        return (load_file(str(_require(base.with_suffix(".safetensors")))),
                json.loads(_require(base.with_suffix(".json")).read_text()))
    return load


@pytest.fixture
def single_thread():
    """One torch thread: for files of tiny tensors, where extra threads only add
    synchronisation, which gets slow on busy machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
