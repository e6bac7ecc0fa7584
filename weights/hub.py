"""Finding a catalogue model's weights on disk, or downloading them from the Hugging Face Hub.

Lookup order: the host's model folders (or ``search_dirs``), then the Hugging Face cache, then
a download at the entry's revision, into the host's model folder (or ``download_dir``), else
into the Hugging Face cache. Every file is checked before it is returned: first that it holds
the network its entry names (architecture, backbone, every key: header only), then its sha256.
A digest is recorded (trust on first use) only for a file that passed the first check.
All network access goes through huggingface_hub, so ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_TOKEN`` and ``HF_HUB_CACHE`` apply as huggingface_hub reads them (all but ``HF_TOKEN`` once,
when it is imported).
"""

import os
import shlex
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import httpx, silent_tqdm

from ..errors import WeightsError
from ..files.atomic import atomic_path
from . import integrity
from .catalogue import WeightsEntry, get_entry
from .folders import host_folders

PathLike = str | os.PathLike
# Network failures as huggingface_hub raises them: HTTP and transport errors of the HTTP
# client it ships (``huggingface_hub.utils.httpx``), and OS errors.
_NETWORK_ERRORS = (OSError, httpx.HTTPError)
_LOGIN_HINT = "set HF_TOKEN if the repository needs a login"
_HTTP_HINTS = {401: _LOGIN_HINT, 403: _LOGIN_HINT, 404: "the catalogue may be out of date"}


def _entry(model: str | WeightsEntry) -> WeightsEntry:
    return model if isinstance(model, WeightsEntry) else get_entry(model)


def weights_url(model: str | WeightsEntry) -> str:
    """The URL the file is downloaded from (honours ``HF_ENDPOINT``)."""
    entry = _entry(model)
    return hf_hub_url(entry.repo, entry.filename, revision=entry.revision)


def _folders(entry: WeightsEntry, search_dirs: Sequence[PathLike] | None) -> list[Path]:
    if search_dirs is None:
        host = host_folders()
        search_dirs = host.search(entry.folder) if host is not None else []
    return [Path(folder) for folder in search_dirs]


def _download_folder(entry: WeightsEntry, download_dir: PathLike | None) -> Path | None:
    if download_dir is not None:
        return Path(download_dir)
    host = host_folders()
    if host is not None and entry.folder in host.downloads:
        return Path(host.downloads[entry.folder])
    return None


def _cached(entry: WeightsEntry) -> Path | None:
    found = try_to_load_from_cache(entry.repo, entry.filename, revision=entry.revision)
    return Path(found) if isinstance(found, str) else None


def installed_path(model: str | WeightsEntry, *, search_dirs: Sequence[PathLike] | None = None) -> Path | None:
    """Where the file is on this machine, unchecked and without any network access; None if absent."""
    entry = _entry(model)
    for folder in _folders(entry, search_dirs):
        if (folder / entry.local_filename).is_file():
            return folder / entry.local_filename
    return _cached(entry)


def expected_digest(model: str | WeightsEntry, path: PathLike) -> str | None:
    """The sha256 the file at ``path`` must have: the catalogue's, else the one learnt on first
    use (recorded next to the file, or the name of its Hugging Face cache blob), else None."""
    entry = _entry(model)
    if entry.sha256 is not None:
        return entry.sha256
    blob = Path(os.path.realpath(path))
    if blob.parent.name == "blobs" and integrity.HEX64.fullmatch(blob.name):
        return blob.name
    return integrity.read_sidecar(path)


def resolve_weights(model: str | WeightsEntry, *, search_dirs: Sequence[PathLike] | None = None,
                    download_dir: PathLike | None = None, download: bool = True,
                    progress: bool = True, check_only: bool = False) -> Path:
    """A verified local path to the weights of catalogue id ``model`` (or a ``WeightsEntry``).

    ``search_dirs`` replaces the host's model folders; ``download_dir`` is where a download is
    saved (default: the host's model folder, else the Hugging Face cache). ``check_only``
    checks an installed file and changes nothing: a failing file is neither moved aside nor
    deleted, and no digest is recorded. Raises ``WeightsError`` saying where we looked and
    where to put the file when it cannot be had.
    """
    entry = _entry(model)
    folders = _folders(entry, search_dirs)
    for folder in folders:
        path = folder / entry.local_filename
        if path.is_file():
            return _verified(entry, path, folders, moved_aside=True, check_only=check_only)
    cached = _cached(entry)
    if cached is not None:
        return _verified(entry, cached, folders, moved_aside=False, check_only=check_only)
    target = _download_folder(entry, download_dir)
    if not download:
        raise _missing(entry, folders, target, "downloading was not requested")
    if constants.is_offline_mode():
        raise _missing(entry, folders, target, "offline mode is on (HF_HUB_OFFLINE=1)")
    expected = _published_digest(entry, folders, target)
    _announce(entry, target)
    if target is None:
        return _download_to_cache(entry, folders, expected, progress)
    return _download_to_folder(entry, target, folders, expected, progress)


def _announce(entry: WeightsEntry, target: Path | None) -> None:
    """Say once, before the first byte, what is downloaded, how big it is, where it goes and
    under which licence (on stderr, which ComfyUI's log records too): a first ``cut`` may
    otherwise seem to hang for minutes on a file of hundreds of MB."""
    size = "size unknown" if entry.size is None else f"{'' if entry.size_exact else '~'}{entry.size / 1e6:,.0f} MB"
    where = target / entry.local_filename if target is not None else f"the Hugging Face cache {constants.HF_HUB_CACHE}"
    lines = [f"First use of {entry.title} [{entry.id}]: downloading {size} from {weights_url(entry)}",
             f"  to {where}", f"Licence: {entry.licence_text}."]
    if entry.non_commercial:
        lines.append(f"Note: {entry.id} may not be used commercially under its licence ({entry.licence}); "
                     f"see https://huggingface.co/{entry.repo} for the terms.")
    if entry.gated:
        lines.append(f"{entry.repo} is gated: accept its terms on the Hub and set HF_TOKEN.")
    print("\n".join(lines), file=sys.stderr, flush=True)


def check_layout(entry: WeightsEntry, path: Path) -> None:
    """``WeightsError`` unless the file holds the network ``entry`` names: its architecture, its
    backbone, and exactly its keys (read from the header; no tensor is loaded)."""
    from ..models.loading import inspect_weights  # the loader imports this package

    unverified = ("" if entry.layout_verified else
                  f" The catalogue entry's key layout had not been checked against a real file yet; if {path} "
                  f"is the genuine {entry.repo} file, this entry needs correcting.")
    try:
        info = inspect_weights(path, patch_order=entry.patch_order or "einops")
    except WeightsError as err:
        raise WeightsError(f"{entry.id}: {err}. Nothing was recorded for this file.{unverified}") from None
    found, wanted = info.architecture, entry.architecture
    if info.architecture == "birefnet":
        found += f" ({info.config['backbone']})"
    if entry.architecture == "birefnet":
        wanted += f" ({entry.backbone})"
    if found != wanted:
        raise WeightsError(
            f"{entry.id}: {path} holds {found} weights, but {entry.id} is {wanted}. It is probably another "
            f"model saved under this name. Nothing was recorded for this file: give it its own catalogue "
            f"file name (`python -m comfyui_meticulous models` lists them) or load it by its path.{unverified}")


def _verified(entry: WeightsEntry, path: Path, folders: list[Path], *, moved_aside: bool,
              check_only: bool = False) -> Path:
    """``path`` once its network and its digest are checked; a file whose digest fails is moved
    aside (in a model folder) or deleted (in the Hugging Face cache) unless ``check_only``."""
    expected = expected_digest(entry, path)
    if not integrity.looks_like_safetensors(path):
        _reject(entry, path, folders, "is not a safetensors file", moved_aside, check_only)
    check_layout(entry, path)
    actual = integrity.file_sha256(path) if not check_only else integrity.sha256_file(path)
    if expected is None:
        if not check_only:
            integrity.write_sidecar(path, actual)  # trust on first use
    elif actual != expected:
        _reject(entry, path, folders, f"has sha256 {actual}, expected {expected}", moved_aside, check_only)
    return path


def _reject(entry: WeightsEntry, path: Path, folders: list[Path], problem: str, moved_aside: bool,
            check_only: bool = False) -> NoReturn:
    learnt = entry.sha256 is None and integrity.read_sidecar(path) is not None
    trust = (f" The expected digest was recorded in {integrity.sidecar_path(path)} when a file was "
             f"first used here; delete that record if you trust the new file.") if learnt else ""
    if check_only:
        raise WeightsError(f"{entry.id}: {path} {problem}. It was left in place.{trust}")
    integrity.forget_digest(path)
    if moved_aside:
        aside = path.with_name(path.name + ".rejected")
        os.replace(path, aside)
        fate, place = f"It was moved aside to {aside}.", path
    else:
        blob = Path(os.path.realpath(path))
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        fate, place = "It was deleted from the Hugging Face cache.", _hand_placement(entry, folders, None)
    raise WeightsError(f"{entry.id}: {path} {problem}. {fate}{trust}\n{_how_to_install(entry, place)}")


def _hand_placement(entry: WeightsEntry, folders: list[Path], target: Path | None) -> Path | None:
    folder = target if target is not None else (folders[0] if folders else None)
    return folder / entry.local_filename if folder is not None else None


def download_command(model_id: str) -> str:
    """A shell command that runs ``download model_id`` with this interpreter and this package's
    own folder, so it works from a ComfyUI custom_nodes folder (whose name is no module name)
    as well as from an installed package."""
    main = Path(__file__).resolve().parent.parent / "__main__.py"
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(main))} download {model_id}"


def _how_to_install(entry: WeightsEntry, place: Path | None) -> str:
    url = weights_url(entry)
    command = download_command(entry.id)
    if place is None:
        manual = f"Download\n  {url}\nand pass the file's path to load_model (or to `cut --weights`)"
    else:
        manual = f"Download\n  {url}\nand save it as\n  {place}"
        command += f" --dir {shlex.quote(str(place.parent))}"
    login = " (after accepting its terms on the Hub and setting HF_TOKEN)" if entry.gated else ""
    return f"{manual}\nor, with network access{login}, run:\n  {command}"


def _missing(entry: WeightsEntry, folders: list[Path], target: Path | None, reason: str) -> WeightsError:
    looked = [str(folder / entry.local_filename) for folder in folders]
    looked.append(f"the Hugging Face cache {constants.HF_HUB_CACHE} ({entry.repo} at {entry.revision})")
    return WeightsError(
        f"{entry.title} [{entry.id}] is not installed, and {reason}.\nLooked in:\n  "
        + "\n  ".join(looked) + "\n" + _how_to_install(entry, _hand_placement(entry, folders, target)))


def _published_digest(entry: WeightsEntry, folders: list[Path], target: Path | None) -> str | None:
    """The digest to check the download against, after asking the Hub what it serves.

    One request without retries: an unreachable Hub fails at once instead of after
    huggingface_hub's back-off, and a file that no longer matches the catalogue is refused
    before any byte of it is fetched.
    """
    url = weights_url(entry)
    try:
        published = get_hf_file_metadata(url)
    except OfflineModeIsEnabled as err:
        raise _missing(entry, folders, target, "offline mode is on (HF_HUB_OFFLINE=1)") from err
    except HfHubHTTPError as err:
        status = err.response.status_code
        hint = f"; {_HTTP_HINTS[status]}" if status in _HTTP_HINTS else ""
        raise _missing(entry, folders, target, f"the Hub answered HTTP {status} for {url}{hint}") from err
    except _NETWORK_ERRORS as err:
        raise _missing(entry, folders, target, f"the Hub at {constants.ENDPOINT} cannot be reached ({err})") from err
    etag = (published.etag or "").lower()
    served = etag if integrity.HEX64.fullmatch(etag) else None
    if entry.sha256 is not None and served is not None and served != entry.sha256:
        raise WeightsError(
            f"{entry.id}: {url} now serves a file with sha256 {served}, but the catalogue pins "
            f"{entry.sha256}. Nothing was downloaded: the catalogue entry is out of date, and a newer "
            f"comfyui-meticulous may know the new file.")
    return entry.sha256 or served


def _fetch(entry: WeightsEntry, folders: list[Path], target: Path | None, progress: bool, **where) -> Path:
    try:
        return Path(hf_hub_download(entry.repo, entry.filename, revision=entry.revision,
                                    tqdm_class=None if progress else silent_tqdm, **where))
    except _NETWORK_ERRORS as err:
        kept = target if target is not None else constants.HF_HUB_CACHE
        raise _missing(entry, folders, target, f"the download from {weights_url(entry)} failed ({err}); "
                                               f"no partial file was kept in {kept}") from err


def _download_to_cache(entry: WeightsEntry, folders: list[Path], expected: str | None, progress: bool) -> Path:
    path = _fetch(entry, folders, None, progress)
    try:
        check_layout(entry, path)
    except WeightsError as err:
        _reject(entry, path, folders, f"was downloaded from {weights_url(entry)} but is refused: {err}",
                moved_aside=False)
    actual = integrity.file_sha256(path)
    if expected is not None and actual != expected:
        _reject(entry, path, folders, f"was downloaded from {weights_url(entry)} with sha256 {actual}, "
                                      f"expected {expected}", moved_aside=False)
    return path


def _download_to_folder(entry: WeightsEntry, target: Path, folders: list[Path], expected: str | None,
                        progress: bool) -> Path:
    """Download into a private folder beside the destination, then rename: a failed or rejected
    download leaves nothing a model list would show, and huggingface_hub's ``.cache`` metadata
    of ``local_dir`` downloads never lands in the models folder."""
    target.mkdir(parents=True, exist_ok=True)
    final = target / entry.local_filename
    staging = target / f".{entry.local_filename}.{uuid.uuid4().hex[:12]}.download"
    try:
        with atomic_path(final) as part:
            os.replace(_fetch(entry, folders, target, progress, local_dir=staging), part)
            try:
                check_layout(entry, part)
            except WeightsError as err:
                raise WeightsError(f"{err}\nThe file downloaded from {weights_url(entry)} was deleted; nothing "
                                   f"was saved as {final}.") from None
            actual = integrity.sha256_file(part)
            if expected is not None and actual != expected:
                raise WeightsError(
                    f"{entry.id}: the file downloaded from {weights_url(entry)} has sha256 {actual}, "
                    f"expected {expected}. It was deleted; nothing was saved as {final}.\n"
                    f"{_how_to_install(entry, final)}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    integrity.remember_digest(final, actual)
    if entry.sha256 is None:
        integrity.write_sidecar(final, actual)
    return final
