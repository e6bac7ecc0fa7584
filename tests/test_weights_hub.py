"""Finding, downloading and verifying weights, against a local stand-in for the Hugging Face Hub.

``FakeHub`` answers on 127.0.0.1 the way the Hub answers for a large (LFS) file:
``HEAD /<repo>/resolve/<revision>/<file>`` gives a 302 to a content host with ``X-Repo-Commit``,
``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``; the content host serves the bytes, with
``Range`` support. huggingface_hub reads ``HF_ENDPOINT``, ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``
into ``huggingface_hub.constants`` when it is imported, so in-process tests set those constants
(and the variables); one test starts fresh processes to show the variables themselves work.
Nothing here can reach the internet: the endpoint is always the local server.
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import huggingface_hub.file_download
import jsonschema
import numpy as np
import pytest
import torch
from huggingface_hub import constants
from PIL import Image
from safetensors.torch import save_file

from comfyui_meticulous.cli import main as cli_main
from comfyui_meticulous.errors import WeightsError
from comfyui_meticulous.inference.device import default_model
from comfyui_meticulous.models import load_model
from comfyui_meticulous.weights import (
    HostFolders,
    get_entry,
    integrity,
    load_catalogue,
    resolve_weights,
    set_host_folders,
)
from comfyui_meticulous.weights import cli as weights_cli
from comfyui_meticulous.weights import hub as hub_module
from comfyui_meticulous.weights.cli import add_download_parser, add_models_parser

catalogue_module = sys.modules["comfyui_meticulous.weights.catalogue"]

REPO = Path(__file__).resolve().parents[1]
COMMIT = "4d6f8a1c2b3e5f7091a2b3c4d5e6f708192a3b4c"
TEMPLATE = "/{repo_id}/resolve/{revision}/{filename}"  # as huggingface_hub builds it from HF_ENDPOINT
RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>[^?]+)$")


class FakeHub:
    """Files by (repo, filename); what was asked; how the content host misbehaves."""

    def __init__(self):
        self.hub = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.cdn = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        for server in (self.hub, self.cdn):
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self.hub.server_port}"
        self.reset()

    def reset(self):
        self.files = {}       # (repo, filename) -> bytes
        self.advertised = {}  # (repo, filename) -> sha256 announced instead of the true one
        self.corrupt = False  # serve altered bytes under the true digest
        self.drops = 0        # content responses cut off half-way, then closed
        self.log = []         # (method, path, headers) of every request

    def add(self, repo: str, filename: str, data: bytes):
        self.files[repo, filename] = data

    def requests(self, prefix: str = "") -> list:
        """Requests for files (huggingface_hub also asks the endpoint for other things)."""
        return [r for r in self.log if (RESOLVE.match(r[1]) or r[1].startswith("/cdn/")) and r[1].startswith(prefix)]

    def close(self):
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()

    def _handler(hub):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool):
                hub.log.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                resolve = RESOLVE.match(self.path)
                if resolve:
                    return self._resolve(resolve["repo"], resolve["filename"])
                found = [data for data in hub.files.values() if self.path == f"/cdn/{_sha(data)}"]
                if not found:
                    return self._empty(404)
                return self._content(found[0], body)

            def _empty(self, status: int, headers: dict | None = None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _resolve(self, repo: str, filename: str):
                data = hub.files.get((repo, filename))
                if data is None:
                    return self._empty(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
                digest = hub.advertised.get((repo, filename), _sha(data))
                self._empty(302, {
                    "Location": f"http://127.0.0.1:{hub.cdn.server_port}/cdn/{_sha(data)}",
                    "X-Repo-Commit": COMMIT, "ETag": f'"{digest}"', "X-Linked-Etag": f'"{digest}"',
                    "X-Linked-Size": str(len(data))})

            def _content(self, data: bytes, body: bool):
                start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range", "bytes=0-"))[1])
                payload = (_corrupted(data) if hub.corrupt else data)[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if not body:
                    return
                if hub.drops:
                    hub.drops -= 1
                    self.wfile.write(payload[:len(payload) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        return Handler


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _corrupted(data: bytes) -> bytes:
    """``data`` with 64 bytes in the middle flipped: same size, different digest."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:]


@pytest.fixture(scope="session")
def weights(reference_dir, det_weights, tmp_path_factory):
    """A BiRefNet (PVT-v2-b0) safetensors file from the reference key manifest (~63 MB)."""
    state_dict = det_weights.deterministic_state_dict(
        det_weights.load_spec(reference_dir / "birefnet" / "keys_pvt_v2_b0.tsv"))
    path = tmp_path_factory.mktemp("weights") / "pvt_v2_b0.safetensors"
    save_file(state_dict, str(path))
    data = path.read_bytes()
    return types.SimpleNamespace(path=path, data=data, sha256=_sha(data), state_dict=state_dict)


def _entry(**fields) -> dict:
    entry = {
        "id": "test-pvt", "title": "BiRefNet PVT-v2-b0 test weights", "architecture": "birefnet",
        "backbone": "pvt_v2_b0", "task": "general", "resolution": {"height": 384, "width": 640},
        "repo": "meticulous-test/birefnet-pvt", "revision": "main", "revision_pinned": False,
        "filename": "model.safetensors", "local_filename": "meticulous-test_birefnet-pvt.safetensors",
        "folder": "meticulous", "size": None, "size_exact": False, "sha256": None, "licence": "MIT",
        "patch_order": "einops", "notes": "Test weights; sha256 filled in by the test.",
    }
    return {**entry, **fields}


@pytest.fixture(scope="session")
def manifest(weights, tmp_path_factory):
    """A manifest in the packaged format (checked against its schema) with three test entries."""
    document = {"version": 1, "models": [
        _entry(sha256=weights.sha256, size=len(weights.data), size_exact=True),
        _entry(id="test-pvt-tofu", repo="meticulous-test/birefnet-pvt-tofu",
               local_filename="meticulous-test_birefnet-pvt-tofu.safetensors"),
        _entry(id="test-missing", repo="meticulous-test/not-published",
               local_filename="meticulous-test_not-published.safetensors"),
        _entry(id="test-pvt-nc", repo="meticulous-test/birefnet-pvt-nc", licence="CC BY-NC 4.0", gated=True,
               local_filename="meticulous-test_birefnet-pvt-nc.safetensors"),
    ]}
    schema = json.loads((REPO / "weights_manifest.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(document, schema)
    path = tmp_path_factory.mktemp("manifest") / "weights_manifest.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def entries(manifest):
    return load_catalogue(manifest)


@pytest.fixture
def packaged(monkeypatch, entries):
    """The packaged catalogue with the test entries added, as load_model and the CLI see it."""
    merged = {**catalogue_module.catalogue(), **entries}
    monkeypatch.setattr(catalogue_module, "catalogue", lambda: merged)
    monkeypatch.setattr(weights_cli, "catalogue", lambda: merged)
    return merged


@pytest.fixture(scope="module")
def server():
    hub = FakeHub()
    yield hub
    hub.close()


@pytest.fixture(autouse=True)
def hub(server, weights, tmp_path, monkeypatch):
    """The local Hub with both test repos published, as the only endpoint; caches in tmp_path."""
    server.reset()
    server.add("meticulous-test/birefnet-pvt", "model.safetensors", weights.data)
    server.add("meticulous-test/birefnet-pvt-tofu", "model.safetensors", weights.data)
    cache = tmp_path / "hf" / "hub"
    for name, value in {"HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "hf"),
                        "HF_HUB_CACHE": str(cache), "XDG_CACHE_HOME": str(tmp_path / "user-cache")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.endpoint + TEMPLATE)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf" / ".agent_harnesses.json"))
    set_host_folders(None)
    yield server
    set_host_folders(None)


@pytest.fixture
def comfy_models(tmp_path):
    """ComfyUI-like model folders given to the library as its host's folders."""
    models = tmp_path / "ComfyUI" / "models"
    folders = {"meticulous": [models / "meticulous"], "background_removal": [models / "background_removal"]}
    set_host_folders(HostFolders(search=lambda key: folders[key],
                                 downloads={key: paths[0] for key, paths in folders.items()}))
    return models


def _offline(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _all_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_download_lands_in_the_model_folder_verified_and_loads(hub, entries, weights, comfy_models):
    path = resolve_weights(entries["test-pvt"], progress=False)
    assert path == comfy_models / "meticulous" / "meticulous-test_birefnet-pvt.safetensors"
    assert _sha(path.read_bytes()) == weights.sha256
    # Nothing else is left in the folder: no partial file, no huggingface_hub metadata.
    assert _all_files(comfy_models) == ["meticulous", "meticulous/meticulous-test_birefnet-pvt.safetensors"]
    methods = [r[0] for r in hub.requests()]
    assert methods.count("GET") == 1 and set(methods) == {"HEAD", "GET"}  # metadata probes, then the file once
    model = load_model(path)
    loaded = model.state_dict()
    for key in ("bb.patch_embed1.proj.weight", "decoder.conv_out1.0.weight", "squeeze_module.0.conv_in.weight"):
        assert torch.equal(loaded[key], weights.state_dict[key])


def test_download_without_a_host_goes_to_the_hf_cache_and_is_found_there_next_time(hub, entries, weights):
    path = resolve_weights(entries["test-pvt"], progress=False)
    assert Path(constants.HF_HUB_CACHE) in path.parents
    assert _sha(path.read_bytes()) == weights.sha256
    asked = len(hub.requests())
    assert resolve_weights(entries["test-pvt"], progress=False) == path
    assert len(hub.requests()) == asked  # found in the cache without asking the Hub


def test_a_manifest_id_loads_through_load_model(hub, packaged, weights, capsys):
    # test-pvt-tofu has no known digest: the Hub's sha256 is checked, then learnt.
    model = load_model("test-pvt-tofu")
    assert model.native_resolution == packaged["test-pvt-tofu"].resolution == (384, 640)
    key = "bb.patch_embed1.proj.weight"
    assert torch.equal(model.state_dict()[key], weights.state_dict[key])
    said = capsys.readouterr().err
    assert "First use of BiRefNet PVT-v2-b0 test weights [test-pvt-tofu]: downloading size unknown from " in said
    assert "Licence: MIT." in said and "commercial" not in said


def test_first_download_of_a_non_commercial_model_says_so_once(hub, packaged, weights, comfy_models, capsys):
    hub.add("meticulous-test/birefnet-pvt-nc", "model.safetensors", weights.data)
    path = resolve_weights("test-pvt-nc", progress=False)
    said = capsys.readouterr().err
    assert f"  to {path}\n" in said and "Licence: CC BY-NC 4.0 (non-commercial use only)." in said
    assert "may not be used commercially" in said and "set HF_TOKEN" in said
    resolve_weights("test-pvt-nc", progress=False)
    assert capsys.readouterr().err == ""  # said once: nothing more once the file is there


def test_a_file_of_another_network_is_refused_before_anything_is_recorded(hub, weights, comfy_models):
    # A PVT-v2-b0 BiRefNet served for the Swin-T catalogue entry: refused before it is kept or trusted.
    lite = get_entry("birefnet-lite")
    hub.add(lite.repo, lite.filename, weights.data)
    with pytest.raises(WeightsError, match=r"holds birefnet \(pvt_v2_b0\) weights, but birefnet-lite is "
                                           r"birefnet \(swin_v1_t\)"):
        load_model("birefnet-lite")
    assert _all_files(comfy_models) == ["meticulous"]

    # The same file saved by hand under the Swin-L HR model's name.
    hr = get_entry("birefnet-hr")
    placed = comfy_models / "meticulous" / hr.local_filename
    placed.write_bytes(weights.data)
    with pytest.raises(WeightsError, match=r"but birefnet-hr is birefnet \(swin_v1_l\).*Nothing was recorded"):
        load_model("birefnet-hr")
    assert placed.read_bytes() == weights.data  # left where the user put it
    assert not integrity.sidecar_path(placed).exists()
    memo = json.loads(integrity.memo_path().read_text()) if integrity.memo_path().exists() else {}
    assert memo == {}


def test_a_download_first_says_what_it_fetches_how_big_and_where_to(hub, entries, weights, comfy_models, capsys):
    path = resolve_weights(entries["test-pvt"])
    said = capsys.readouterr().err
    assert (f"First use of BiRefNet PVT-v2-b0 test weights [test-pvt]: downloading "
            f"{len(weights.data) / 1e6:,.0f} MB from {hub.endpoint}/meticulous-test/birefnet-pvt/") in said
    assert f"  to {path}" in said
    assert resolve_weights(entries["test-pvt"]) == path
    assert "First use" not in capsys.readouterr().err  # installed now: nothing to announce
    resolve_weights(entries["test-pvt-tofu"], progress=False)
    assert "First use" in capsys.readouterr().err  # said without a progress bar too: the licence matters


def test_quick_start_cut_downloads_the_default_model_and_cuts_out_the_sample_photo(hub, weights, tmp_path, capsys,
                                                                                  monkeypatch):
    # The README's first command on a CPU machine, with a small stand-in file under the default
    # model's name; its backbone differs from the real file's, so the layout check stands aside.
    monkeypatch.setattr(hub_module, "check_layout", lambda entry, path: None)
    entry = get_entry(default_model(torch.device("cpu")))
    hub.add(entry.repo, entry.filename, weights.data)
    out = tmp_path / "cutouts"
    assert cli_main(["cut", str(REPO / "samples" / "cat.jpg"), "-o", str(out), "--device", "cpu"]) == 0
    said = capsys.readouterr().err
    size = f"{'' if entry.size_exact else '~'}{entry.size / 1e6:,.0f} MB"
    assert f"First use of {entry.title} [{entry.id}]: downloading {size}" in said
    assert f"  to the Hugging Face cache {constants.HF_HUB_CACHE}" in said
    rgba, mask = Image.open(out / "cat.png"), Image.open(out / "cat_mask.png")
    assert rgba.mode == "RGBA" and rgba.size == mask.size == Image.open(REPO / "samples" / "cat.jpg").size
    assert np.ptp(np.asarray(mask)) > 0


@pytest.mark.parametrize("host", [True, False], ids=["model-folder", "hf-cache"])
def test_checksum_mismatch_is_caught_and_the_file_is_gone(hub, entries, weights, tmp_path, host, request):
    models = request.getfixturevalue("comfy_models") if host else None
    hub.corrupt = True
    with pytest.raises(WeightsError) as caught:
        resolve_weights(entries["test-pvt"], progress=False)
    message = str(caught.value)
    assert weights.sha256 in message and _sha(_corrupted(weights.data)) in message
    assert f"{hub.endpoint}/meticulous-test/birefnet-pvt/resolve/main/model.safetensors" in message
    assert "deleted" in message
    if host:
        assert str(models / "meticulous" / "meticulous-test_birefnet-pvt.safetensors") in message
        assert _all_files(models) == ["meticulous"]
    else:
        assert [p for p in Path(constants.HF_HUB_CACHE).rglob("*") if p.is_file() and "blobs" in p.parts] == []
        assert list(Path(constants.HF_HUB_CACHE).rglob("snapshots/*/*")) == []
    memo = json.loads(integrity.memo_path().read_text()) if integrity.memo_path().exists() else {}
    assert memo == {}  # nothing rejected is remembered as verified


def test_a_file_the_catalogue_does_not_pin_is_refused_before_download(hub, entries, comfy_models):
    hub.advertised["meticulous-test/birefnet-pvt", "model.safetensors"] = "0" * 64
    with pytest.raises(WeightsError, match="now serves a file with sha256 0{64}.*Nothing was downloaded"):
        resolve_weights(entries["test-pvt"], progress=False)
    assert hub.requests("/cdn/") == []
    assert _all_files(comfy_models) == []


def test_404_says_where_to_put_the_file(hub, entries, comfy_models):
    start = time.perf_counter()
    with pytest.raises(WeightsError) as caught:
        resolve_weights(entries["test-missing"], progress=False)
    assert time.perf_counter() - start < 1
    message = str(caught.value)
    assert "HTTP 404" in message
    assert f"{hub.endpoint}/meticulous-test/not-published/resolve/main/model.safetensors" in message
    assert str(comfy_models / "meticulous" / "meticulous-test_not-published.safetensors") in message
    assert _all_files(comfy_models) == []


@pytest.fixture
def instant_retries(monkeypatch):
    """huggingface_hub waits 1 s before each of its five resume attempts; the tests need not."""
    monkeypatch.setattr(huggingface_hub.file_download, "time", types.SimpleNamespace(sleep=lambda seconds: None))


@pytest.mark.parametrize("host", [True, False], ids=["model-folder", "hf-cache"])
def test_a_dropped_connection_leaves_no_partial_file_and_a_retry_succeeds(
        hub, entries, weights, instant_retries, host, request):
    models = request.getfixturevalue("comfy_models") if host else None
    hub.drops = 100
    with pytest.raises(WeightsError, match="failed .*no partial file was kept"):
        resolve_weights(entries["test-pvt"], progress=False)
    resumed = [r for r in hub.requests("/cdn/") if "range" in r[2]]
    assert resumed, "huggingface_hub resumed with Range requests before giving up"
    cache = Path(constants.HF_HUB_CACHE)
    if host:
        assert _all_files(models) == ["meticulous"]
    assert [p for p in cache.rglob("*") if p.is_file() and ("blobs" in p.parts or "snapshots" in p.parts)] == []
    assert list(cache.rglob("*.incomplete")) == []

    hub.drops = 0
    path = resolve_weights(entries["test-pvt"], progress=False)
    assert _sha(path.read_bytes()) == weights.sha256


def test_a_transient_drop_is_resumed_and_the_result_verified(hub, entries, weights, comfy_models, instant_retries):
    hub.drops = 1
    path = resolve_weights(entries["test-pvt"], progress=False)
    assert _sha(path.read_bytes()) == weights.sha256
    assert len(hub.requests("/cdn/")) == 2


def test_offline_with_the_file_in_a_model_folder_loads_without_any_request(
        hub, entries, weights, comfy_models, monkeypatch):
    folder = comfy_models / "meticulous"
    folder.mkdir(parents=True)
    (folder / "meticulous-test_birefnet-pvt.safetensors").write_bytes(weights.data)
    _offline(monkeypatch)
    path = resolve_weights(entries["test-pvt"])
    model = load_model(path)
    assert torch.equal(model.state_dict()["bb.norm4.weight"], weights.state_dict["bb.norm4.weight"])
    assert hub.log == []


def test_offline_with_the_file_in_the_hf_cache_makes_no_request(hub, entries, monkeypatch):
    downloaded = resolve_weights(entries["test-pvt"], progress=False)
    hub.log.clear()
    _offline(monkeypatch)
    assert resolve_weights(entries["test-pvt"]) == downloaded
    assert hub.log == []


def test_offline_with_the_file_absent_fails_fast_and_says_where_to_put_it(hub, entries, comfy_models, monkeypatch):
    _offline(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as caught:
        resolve_weights(entries["test-pvt"])
    assert time.perf_counter() - start < 1
    assert hub.log == []
    message = str(caught.value)
    assert "offline mode is on" in message
    expected_path = comfy_models / "meticulous" / "meticulous-test_birefnet-pvt.safetensors"
    assert f"Looked in:\n  {expected_path}\n  the Hugging Face cache {constants.HF_HUB_CACHE}" in message
    assert f"and save it as\n  {expected_path}" in message
    assert f"{hub.endpoint}/meticulous-test/birefnet-pvt/resolve/main/model.safetensors" in message


def test_an_unreachable_hub_fails_fast(entries, comfy_models, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", closed)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", closed + TEMPLATE)
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="cannot be reached"):
        resolve_weights(entries["test-pvt"])
    assert time.perf_counter() - start < 1


def test_a_verified_file_is_hashed_once_and_a_later_change_is_caught(hub, entries, comfy_models, monkeypatch):
    hashed = []
    real_sha256 = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda path: hashed.append(path) or real_sha256(path))
    path = resolve_weights(entries["test-pvt"], progress=False)
    for _ in range(3):
        assert resolve_weights(entries["test-pvt"]) == path
    assert len(hashed) == 1

    with open(path, "r+b") as file:  # bit rot: same size, one byte changed
        file.seek(path.stat().st_size // 2)
        byte = file.read(1)
        file.seek(-1, os.SEEK_CUR)
        file.write(bytes([byte[0] ^ 1]))
    with pytest.raises(WeightsError, match="moved aside") as caught:
        resolve_weights(entries["test-pvt"])
    assert str(path) in str(caught.value)
    assert not path.exists() and path.with_name(path.name + ".rejected").exists()


def test_unknown_digest_is_learnt_on_first_use_and_a_swapped_file_is_caught(hub, entries, weights, comfy_models):
    path = resolve_weights(entries["test-pvt-tofu"], progress=False)
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text() == f"{weights.sha256}  {path.name}\n"  # the Hub's digest, checked

    path.write_bytes(weights.data[:-8] + b"\0" * 8)  # a different file under the same name
    with pytest.raises(WeightsError, match="recorded in .*sha256 when a file was first used"):
        resolve_weights(entries["test-pvt-tofu"])
    assert path.with_name(path.name + ".rejected").exists()


def test_a_file_that_is_not_safetensors_is_moved_aside(entries, comfy_models):
    folder = comfy_models / "meticulous"
    folder.mkdir(parents=True)
    page = folder / "meticulous-test_birefnet-pvt-tofu.safetensors"
    page.write_text("<!DOCTYPE html><title>Rate limited</title>")
    with pytest.raises(WeightsError, match="is not a safetensors file. It was moved aside"):
        resolve_weights(entries["test-pvt-tofu"])
    assert not page.exists()


def test_cli_download_then_models_table(hub, packaged, weights, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    add_download_parser(commands)
    add_models_parser(commands)
    folder = tmp_path / "models"

    args = parser.parse_args(["download", "test-pvt", "test-pvt-tofu", "--dir", str(folder)])
    assert args.func(args) == 0
    published, learnt = (folder / packaged[name].local_filename for name in ("test-pvt", "test-pvt-tofu"))
    assert published.read_bytes() == learnt.read_bytes() == weights.data
    out = capsys.readouterr().out
    assert f"test-pvt: {published} (sha256 verified against the published digest; licence MIT)" in out
    assert f"test-pvt-tofu: {learnt} (sha256 recorded on first use: the catalogue publishes no digest" in out
    hand_placed = folder / packaged["birefnet-lite"].local_filename
    hand_placed.write_bytes(b"never used")

    args = parser.parse_args(["models", "--dir", str(folder)])
    assert args.func(args) == 0
    captured = capsys.readouterr()
    rows = {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in captured.out.splitlines())}
    assert rows["ID"] == ["ID", "TITLE", "SIZE", "LICENCE", "INSTALLED", "SHA256"]
    assert rows["test-pvt"][3:] == ["MIT", str(published), "verified (published digest)"]
    assert rows["test-pvt-tofu"][3:] == ["MIT", str(learnt), "verified (recorded on first use)"]
    assert rows["birefnet-lite"][4:] == [str(hand_placed), "not recorded yet"]
    assert rows["birefnet"][4:] == ["-", "-"]
    assert rows["birefnet"][2] == "~885 MB" and rows["birefnet-lite-2k"][2] == "178 MB"
    assert rows["rmbg-2"][3] == "CC BY-NC 4.0 (non-commercial use only)"
    assert "note: rmbg-2: non-commercial use only; gated" in captured.err

    args = parser.parse_args(["download", "no-such-model"])
    assert args.func(args) == 1
    assert "unknown model id 'no-such-model'" in capsys.readouterr().err


def test_models_verify_reports_a_failing_file_and_leaves_it_in_place(hub, packaged, weights, tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_models_parser(parser.add_subparsers())
    folder = tmp_path / "models"
    folder.mkdir()
    placed = folder / packaged["test-pvt"].local_filename
    placed.write_bytes(weights.data[:-8] + b"\0" * 8)  # right network, wrong bytes
    args = parser.parse_args(["models", "--dir", str(folder), "--verify"])
    assert args.func(args) == 1
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if line.startswith("test-pvt "))
    assert re.split(r"\s{2,}", row)[-1] == "FAILED (published digest)"
    assert "It was left in place" in captured.err
    assert placed.exists() and not placed.with_name(placed.name + ".rejected").exists()
    assert _all_files(folder) == [placed.name]


def test_the_offline_message_gives_a_command_that_runs_from_a_custom_nodes_folder(hub, comfy_models, tmp_path,
                                                                                  monkeypatch):
    # In ComfyUI the pack is a folder in custom_nodes whose name is no importable module, so
    # `python -m comfyui_meticulous` fails there; the command runs the pack's __main__.py as a file.
    _offline(monkeypatch)
    with pytest.raises(WeightsError) as caught:
        load_model("birefnet-lite")
    command = str(caught.value).split("run:\n  ")[1].splitlines()[0]
    assert "__main__.py download birefnet-lite --dir" in command
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**env, "HF_HUB_OFFLINE": "1"})
    assert "No module named" not in done.stderr
    assert done.returncode == 1 and "[birefnet-lite] is not installed, and offline mode is on" in done.stderr


_CHILD = """
import json, sys, time
from comfyui_meticulous.errors import WeightsError
from comfyui_meticulous.weights import load_catalogue, resolve_weights
entry = load_catalogue(sys.argv[1])[sys.argv[2]]
start = time.perf_counter()
try:
    print(json.dumps({"path": str(resolve_weights(entry, progress=False))}))
except WeightsError as err:
    print(json.dumps({"error": str(err), "seconds": time.perf_counter() - start}))
"""


def test_hf_environment_variables_are_honoured_in_a_fresh_process(hub, manifest, weights, tmp_path):
    env = {name: value for name, value in os.environ.items() if not name.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "home"), HF_TOKEN="hf_test_token",
               XDG_CACHE_HOME=str(tmp_path / "user-cache"), HF_HUB_DISABLE_PROGRESS_BARS="1")

    def child(entry_id: str, **extra) -> dict:
        done = subprocess.run([sys.executable, "-c", _CHILD, str(manifest), entry_id], env={**env, **extra},
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    downloaded = Path(child("test-pvt")["path"])
    assert tmp_path / "home" / "hub" in downloaded.parents  # HF_HOME decides the cache
    assert _sha(downloaded.read_bytes()) == weights.sha256
    head = [r for r in hub.requests() if r[0] == "HEAD"]
    assert head and all(r[2].get("authorization") == "Bearer hf_test_token" for r in head)

    hub.log.clear()
    assert Path(child("test-pvt", HF_HUB_OFFLINE="1")["path"]) == downloaded
    missing = child("test-missing", HF_HUB_OFFLINE="1")
    assert "offline mode is on" in missing["error"] and missing["seconds"] < 1
    assert hub.log == []
