"""Where each input's cut-out and mask go, decided before any work starts.

Rules (also in the README's "Command line" section):

* ``NAME.ext`` gives ``NAME.png`` (RGBA) and ``NAME_mask.png``.
* Names are given in input order (files of a folder sorted by name). An input whose names are
  already taken, by an earlier input's outputs or by an input file in the output folder, uses
  ``NAME_ext`` instead, then ``NAME_ext_2``, ``NAME_ext_3`` ...: ``a.jpg`` and ``a.png`` give
  ``a.png`` and ``a_png.png``. Names compare case-insensitively (as on Windows and macOS).
* An input file is never an output: an output folder that holds inputs is refused unless
  allowed, and then the inputs' own names are taken.
* Existing files are never replaced unless ``overwrite``; the check is made here for the whole
  batch and again at each rename, so a file created meanwhile is not replaced either.
"""

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class OutputNames:
    """One input ``source`` and the ``rgba`` and ``mask`` files it becomes."""

    source: Path
    rgba: Path
    mask: Path


def _candidates(source: Path):
    stem, ext = source.stem, source.suffix.lstrip(".")
    yield stem
    base = f"{stem}_{ext}" if ext else stem
    if ext:
        yield base
    number = 2
    while True:
        yield f"{base}_{number}"
        number += 1


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def plan_outputs(sources: list[Path], folder: str | Path, *, allow_input_folder: bool = False,
                 overwrite: bool = False) -> list[OutputNames]:
    """The output names of every source in ``folder`` (see the module notes for the rules).

    Raises :class:`InputError` when ``folder`` is an existing file, holds inputs (unless
    ``allow_input_folder``), or already has one of the outputs (unless ``overwrite``).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output path {folder} is an existing file; give a folder for the cut-outs")
    inside = [s for s in sources if folder.is_dir() and _same_folder(s.parent, folder)]
    if inside and not allow_input_folder:
        raise InputError(f"output folder {folder} holds {len(inside)} of the input images (first: {inside[0].name}); "
                         f"choose another folder, or pass --allow-input-folder (inputs are never overwritten)")
    taken = {s.name.casefold() for s in inside}
    plans = []
    for source in sources:
        for base in _candidates(source):
            names = (f"{base}.png", f"{base}{MASK_SUFFIX}.png")
            if not any(name.casefold() in taken for name in names):
                break
        taken.update(name.casefold() for name in names)
        plans.append(OutputNames(source, folder / names[0], folder / names[1]))
    if not overwrite:
        existing = [path.name for plan in plans for path in (plan.rgba, plan.mask) if path.exists()]
        if existing:
            raise InputError(f"{len(existing)} output files already exist in {folder} (first: {existing[0]}); "
                             f"pass --overwrite to replace them, or choose another folder")
    return plans


def prepare_folder(folder: str | Path) -> Path:
    """Create ``folder`` if needed and make sure files can be written there (a probe file is
    created and removed), so a read-only folder is reported before any work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-", suffix=".partial")
        os.close(handle)
        os.unlink(probe)
    except FileExistsError:
        raise InputError(f"output path {folder} is an existing file; give a folder for the cut-outs") from None
    except OSError as err:
        raise InputError(f"cannot write to output folder {folder}: {err.strerror or err}") from None
    return folder
