"""A real ComfyUI host for the integration tests: installed once into a cache, started per test module.

The host is ComfyUI v0.3.64 with VideoHelperSuite 1.7.9, both from the source archives in
``../shared/comfyui/hosts`` (or ``$METICULOUS_SHARED/comfyui/hosts``), installed into a virtual
environment under ``~/.cache/comfyui-meticulous/hosts/`` (``$METICULOUS_HOST_CACHE`` overrides
the folder). The environment sees the interpreter's own packages (torch among them) and gets
ComfyUI's other requirements from the package registry. Run by hand or from ``.ci/run``::

    python tests/comfy_host.py          # install when missing, print the host's folder
    python tests/comfy_host.py --force  # install afresh

Nothing here touches the node pack: the host's fixes (below) are made in the host's own copy.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("METICULOUS_SHARED", REPO.parent / "shared"))
ARCHIVES = SHARED / "comfyui" / "hosts"
COMFYUI_VERSION = "0.3.64"
COMFYUI_ARCHIVE = "ComfyUI-0.3.64-a125cd84.tar.gz"
VHS_ARCHIVE = "ComfyUI-VideoHelperSuite-1.7.9-4ee72c0.tar.gz"
# torch comes from the interpreter (the CPU build); this torchvision matches it. Its wheel is
# built for CUDA, so it is installed without dependencies and its compiled-op registrations
# are skipped (see _patch_torchvision).
TORCH = "torch==2.13.0"
TORCHVISION = "torchvision==0.28.0"
# ComfyUI's requirements that the host gets elsewhere or does without (torchaudio: core's audio
# nodes log an import failure, nothing else).
SKIPPED_REQUIREMENTS = {"torch", "torchvision", "torchaudio"}
# What VideoHelperSuite needs: ffmpeg (a binary bundled in imageio-ffmpeg) and OpenCV.
VHS_REQUIREMENTS = ["imageio-ffmpeg", "opencv-python"]
# Bumped whenever the steps below change, so that a cached host made by older steps is rebuilt.
RECIPE = 1


@dataclass(frozen=True)
class Host:
    """An installed host: its folder, Python, ComfyUI checkout and VideoHelperSuite checkout."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "venv" / "bin" / "python"

    @property
    def comfyui(self) -> Path:
        return self.root / "ComfyUI"

    @property
    def vhs(self) -> Path:
        return self.root / "ComfyUI-VideoHelperSuite"

    @property
    def stamp(self) -> Path:
        return self.root / "ready.json"


def cache_root() -> Path:
    return Path(os.environ.get("METICULOUS_HOST_CACHE", Path.home() / ".cache" / "comfyui-meticulous" / "hosts"))


def archives() -> list[Path]:
    return [ARCHIVES / COMFYUI_ARCHIVE, ARCHIVES / VHS_ARCHIVE]


def missing_archives() -> list[Path]:
    return [path for path in archives() if not path.is_file()]


def _recipe() -> dict:
    """What a cached host was built from; a host whose stamp differs is rebuilt."""
    digests = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in archives()}
    return {"recipe": RECIPE, "python": sys.version.split()[0], "executable": sys.executable, "archives": digests}


def host() -> Host:
    tag = f"comfyui-{COMFYUI_VERSION}-py{sys.version_info.major}{sys.version_info.minor}"
    return Host(cache_root() / tag)


def installed() -> Host | None:
    """The cached host when it is complete and built from the current archives and steps."""
    found = host()
    if missing_archives() or not found.stamp.is_file() or not found.python.exists():
        return None
    try:
        stamp = json.loads(found.stamp.read_text())
    except ValueError:
        return None
    return found if stamp.get("built_from") == _recipe() else None


def _run(command: list, **options) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run(command, check=True, **options)


def _pip(python: Path, *args: str) -> None:
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args])


def _requirements(comfyui: Path) -> list[str]:
    """ComfyUI's requirements without the ones in ``SKIPPED_REQUIREMENTS``."""
    kept = []
    for line in (comfyui / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        name = line.split(";")[0]
        for mark in "<>=!~[ ":
            name = name.split(mark)[0]
        if line and name.lower() not in SKIPPED_REQUIREMENTS:
            kept.append(line)
    return kept


def _patch_torchvision(python: Path) -> None:
    """Let torchvision import without its compiled ops (a CUDA wheel beside the CPU torch).

    ``torchvision/__init__.py`` imports ``_meta_registrations``, which registers fake kernels
    for ops that were not loaded and raises; that import is made conditional on
    ``extension._has_ops()``. Only the host's own copy of torchvision is changed.
    """
    init = Path(subprocess.run([str(python), "-c", "import importlib.util as u; "
                                "print(u.find_spec('torchvision').origin)"],
                               check=True, capture_output=True, text=True).stdout.strip())
    text = init.read_text()
    marker = "# meticulous host: registrations need the compiled ops"
    if marker in text:
        return
    listed = "    _meta_registrations,\n"
    if text.count(listed) != 1 or "from . import extension" not in text:
        raise RuntimeError(f"{init} is not laid out as expected: this torchvision needs another workaround")
    text = text.replace(listed, "", 1)
    text = text.replace("\ntry:\n", f"\nif extension._has_ops():  {marker}\n"
                                     f"    from torchvision import _meta_registrations  # noqa: F401\n\ntry:\n", 1)
    init.write_text(text)
    for cached in init.parent.glob("__pycache__/__init__.*"):
        cached.unlink()


def prepare(force: bool = False) -> Host:
    """Install the host unless a complete one from the same archives is cached; return it."""
    if missing := missing_archives():
        raise FileNotFoundError(f"ComfyUI host archives not found: {', '.join(map(str, missing))}; check out "
                                f"the shared folder beside the repository or set METICULOUS_SHARED")
    if not force and (ready := installed()):
        return ready
    target = host()
    # The stamp is written last: an interrupted install never looks finished and is redone.
    if target.root.exists():
        shutil.rmtree(target.root)
    target.root.mkdir(parents=True)
    for archive in archives():
        with tarfile.open(archive) as tar:
            tar.extractall(target.root, filter="data")
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(target.root / "venv")])
    if subprocess.run([str(target.python), "-c", "import torch"], capture_output=True).returncode:
        _pip(target.python, TORCH)
    # Pinned for every install: a requirement that wants torchvision (spandrel) would otherwise
    # bring the newest torchvision and, with it, a CUDA build of a newer torch.
    constraints = target.root / "constraints.txt"
    constraints.write_text(f"{TORCH}\n{TORCHVISION}\n")
    _pip(target.python, "-c", str(constraints), *_requirements(target.comfyui), *VHS_REQUIREMENTS,
         "-r", str(REPO / "requirements.txt"))
    _pip(target.python, "-c", str(constraints), "--no-deps", TORCHVISION)
    _patch_torchvision(target.python)
    _run([str(target.python), "-c", "import torch, torchvision, yaml, aiohttp, av, cv2, imageio_ffmpeg"])
    target.stamp.write_text(json.dumps({"built_from": _recipe(), "built": time.time()}, indent=1))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="install afresh even when a host is cached")
    args = parser.parse_args()
    start = time.monotonic()
    ready = prepare(force=args.force)
    print(f"ComfyUI {COMFYUI_VERSION} host ready in {time.monotonic() - start:.0f} s: {ready.root}")


if __name__ == "__main__":
    main()
