"""Shared test fixtures.

The data the suite needs lives in ``tests/fixtures``: the official implementations' key
manifests and compact parity cases (``fixtures/reference``, read through ``parity_fixtures``,
which also regenerates their weights) and the ComfyUI node schema snapshots
(``fixtures/comfyui``). A fresh clone runs every check with nothing beside it; larger optional
parity cases are used when the shared folder is there (see ``parity_fixtures``).
"""

from pathlib import Path

import pytest
import torch

import parity_fixtures


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The in-repo folder with the key manifests (``birefnet/keys_*.tsv``, ``basnet/keys.tsv``)."""
    return parity_fixtures.REFERENCE


@pytest.fixture(scope="session")
def det_weights():
    """The deterministic weight generator: ``load_spec``, ``deterministic_state_dict``,
    ``state_dict_sha256``."""
    return parity_fixtures


@pytest.fixture(scope="session")
def load_case():
    """``load_case("birefnet/birefnet_swin_v1_t_192x256")`` -> (tensors, metadata)."""
    return parity_fixtures.load_case


@pytest.fixture
def single_thread():
    """One torch thread: for files of tiny tensors, where extra threads only add
    synchronisation, which gets slow on busy machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
