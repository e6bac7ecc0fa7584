"""Write-then-rename: a file appears under its final name complete or not at all.

Every file this package writes (cut-outs, masks, weights, trained blocks, digests, reports)
goes through :func:`atomic_path`. The temporary name is unique per writer (process id plus a
random suffix), so concurrent runs into one folder never collide, and it starts with a dot and
ends with ``.partial`` so folder scans (and users) can tell it apart from finished files.
"""

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_SUFFIX = ".partial"


def partial_name(path: Path) -> Path:
    """A unique temporary name beside ``path``: ``.NAME.<pid>-<random>.partial``."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit rename it to ``path``.

    On any exception (KeyboardInterrupt and SystemExit included) the temporary file is removed
    and the exception propagates unchanged, so a failed cleanup never hides the first error.
    ``overwrite=False`` refuses to replace an existing ``path`` (FileExistsError), checked
    again at the rename so that a file created meanwhile by another process is not replaced.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists")
    staging = partial_name(path)
    try:
        yield staging
        if overwrite:
            os.replace(staging, path)
        else:
            _link_no_replace(staging, path)
    finally:
        try:
            staging.unlink(missing_ok=True)
        except OSError:
            pass


def _link_no_replace(staging: Path, path: Path) -> None:
    # link() fails if the target exists, unlike rename(): no window for a race. Filesystems
    # without hard links (FAT, some network shares) fall back to a checked rename.
    try:
        os.link(staging, path)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists") from None
    except OSError:
        if path.exists():
            raise FileExistsError(f"{path} already exists") from None
        os.replace(staging, path)


def atomic_write(path: str | os.PathLike, data: bytes | str, *, encoding: str = "utf-8") -> None:
    """Write ``data`` (bytes, or text in ``encoding``) to ``path`` atomically."""
    payload = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(path) as staging:
        staging.write_bytes(payload)
