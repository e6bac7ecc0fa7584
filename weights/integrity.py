"""File integrity: sha256 digests, remembered per file so that large files are hashed once.

A digest is remembered by (real path, size, mtime_ns) in a small JSON file in the user's cache
folder (``$XDG_CACHE_HOME`` or ``~/.cache``): a file that is replaced or altered on disk changes
its size or mtime and is hashed again. A digest learnt on first use is written next to the
file as ``<file>.sha256``, in ``sha256sum`` format, so a later corrupted or swapped file is caught.
"""

import hashlib
import json
import os
import re
import struct
from pathlib import Path

from ..files.atomic import atomic_write

HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 8 << 20
# A safetensors file starts with the byte length of its JSON header (u64, little-endian).
_MAX_HEADER = 100 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Lower-case hex sha256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def looks_like_safetensors(path: str | os.PathLike) -> bool:
    """Whether the file has a safetensors header: cheap, catches saved error pages and pickles."""
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        head = file.read(9)
    if len(head) < 9:
        return False
    (header_length,) = struct.unpack("<Q", head[:8])
    return 2 <= header_length <= min(_MAX_HEADER, size - 8) and head[8:9] == b"{"


def memo_path() -> Path:
    """The JSON file holding remembered digests."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "comfyui-meticulous" / "verified-weights.json"


def _read_memo() -> dict:
    try:
        return json.loads(memo_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_memo(memo: dict) -> None:
    path = memo_path()
    memo = {key: record for key, record in memo.items() if os.path.exists(key)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(memo, indent=1, sort_keys=True))
    except OSError:
        pass  # without a writable cache folder files are simply hashed again next time


def _stamp(path: str | os.PathLike) -> tuple[str, dict]:
    status = os.stat(path)
    return os.path.realpath(path), {"size": status.st_size, "mtime_ns": status.st_mtime_ns}


def remembered_digest(path: str | os.PathLike) -> str | None:
    """The digest remembered for the file as it is now on disk, or None."""
    key, stamp = _stamp(path)
    record = _read_memo().get(key)
    if record is None or {name: record.get(name) for name in stamp} != stamp:
        return None
    return record.get("sha256")


def remember_digest(path: str | os.PathLike, digest: str) -> None:
    """Remember ``digest`` for the file as it is now on disk."""
    key, stamp = _stamp(path)
    memo = _read_memo()
    memo[key] = {**stamp, "sha256": digest}
    _write_memo(memo)


def forget_digest(path: str | os.PathLike) -> None:
    """Drop what is remembered about ``path`` (which may no longer exist)."""
    memo = _read_memo()
    if memo.pop(os.path.realpath(path), None) is not None:
        _write_memo(memo)


def file_sha256(path: str | os.PathLike) -> str:
    """The file's sha256, hashed only if it is not remembered for the file as it is now."""
    digest = remembered_digest(path)
    if digest is None:
        digest = sha256_file(path)
        remember_digest(path, digest)
    return digest


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the digest learnt on first use is kept: ``<file>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def read_sidecar(path: str | os.PathLike) -> str | None:
    """The digest recorded next to the file, or None."""
    try:
        text = sidecar_path(path).read_text(encoding="utf-8").split()
    except OSError:
        return None
    return text[0].lower() if text and HEX64.fullmatch(text[0].lower()) else None


def write_sidecar(path: str | os.PathLike, digest: str) -> None:
    """Record ``digest`` next to the file (``sha256sum -c`` can check it)."""
    try:
        atomic_write(sidecar_path(path), f"{digest}  {Path(path).name}\n")
    except OSError:
        # In a read-only folder nothing can be recorded: the file is used as it is, unchecked.
        pass
