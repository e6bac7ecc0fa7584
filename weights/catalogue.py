"""The weights catalogue: every model a user can pick, where it is published, how to check it.

The catalogue is ``weights_manifest.json`` at the package root (its format is
``weights_manifest.schema.json``). An entry names one file in one Hugging Face repository at
one revision, with its sha256 where it is known; where it is not, the digest of the first file
verified on this machine is recorded next to it (see :mod:`.integrity`).
"""

import difflib
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import WeightsError

MANIFEST = Path(__file__).resolve().parent.parent / "weights_manifest.json"


@dataclass(frozen=True)
class WeightsEntry:
    """One published weight file and what it is.

    ``resolution`` is the native ``(height, width)``, or None for a model trained at dynamic
    sizes, whose side range is ``resolution_range`` ``(min, max)``. ``sha256`` is None where
    the digest is not known in advance. ``folder`` is the model-folder key the file belongs to
    in a host application: ``"meticulous"``, or ``"background_removal"`` for ComfyUI core's file.
    ``gated``: the repository needs a Hugging Face login (``HF_TOKEN``) and accepted terms.
    ``layout_verified``: whether the file's keys have been checked against our network; until
    they are, the strict check on first load decides (and nothing is recorded for a file that
    fails it).
    """

    id: str
    title: str
    architecture: str
    backbone: str
    task: str
    resolution: tuple[int, int] | None
    resolution_range: tuple[int, int] | None
    repo: str
    revision: str
    revision_pinned: bool
    filename: str
    local_filename: str
    folder: str
    size: int | None
    size_exact: bool
    sha256: str | None
    licence: str
    patch_order: str | None
    notes: str
    gated: bool = False
    layout_verified: bool = True

    @property
    def non_commercial(self) -> bool:
        """Whether the licence forbids commercial use (Creative Commons NC licences)."""
        return "NC" in self.licence.replace("-", " ").split()

    @property
    def licence_text(self) -> str:
        """The licence as users should read it, with a note for non-commercial ones."""
        return f"{self.licence} (non-commercial use only)" if self.non_commercial else self.licence

    @classmethod
    def from_json(cls, item: dict) -> "WeightsEntry":
        """An entry from its manifest object (validated by the schema in the tests)."""
        fields = dict(item)
        size = fields.pop("resolution")
        fields["resolution"] = (size["height"], size["width"]) if "height" in size else None
        fields["resolution_range"] = (size["min"], size["max"]) if "min" in size else None
        return cls(**fields)

    def configure(self, model) -> None:
        """Give ``model`` this entry's working size: ``native_resolution`` and ``resolution_range``."""
        model.native_resolution = self.resolution
        if self.resolution_range is not None:
            model.resolution_range = self.resolution_range


def load_catalogue(path: str | os.PathLike) -> dict[str, WeightsEntry]:
    """The entries of the manifest at ``path``, by id."""
    try:
        items = json.loads(Path(path).read_text(encoding="utf-8"))["models"]
        entries = [WeightsEntry.from_json(item) for item in items]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WeightsError(f"the weights manifest {path} cannot be read: {err}") from err
    by_id = {entry.id: entry for entry in entries}
    if len(by_id) != len(entries):
        raise WeightsError(f"the weights manifest {path} lists an id more than once")
    return by_id


@functools.cache
def catalogue() -> dict[str, WeightsEntry]:
    """The packaged catalogue, by id, in manifest order."""
    return load_catalogue(MANIFEST)


def licence_summary() -> str:
    """One line naming the catalogue's licences: the ids under each, the most common one last
    as "every other model"."""
    by_licence: dict[str, list[str]] = {}
    for entry in catalogue().values():
        by_licence.setdefault(entry.licence_text, []).append(entry.id)
    common = max(by_licence, key=lambda licence: len(by_licence[licence]))
    parts = [f"{', '.join(ids)}: {licence}" for licence, ids in by_licence.items() if licence != common]
    return "; ".join([*parts, f"every other model: {common}"] if parts else [f"every model: {common}"])


def get_entry(model_id: str) -> WeightsEntry:
    """The catalogue entry ``model_id``; ``WeightsError`` naming the known ids otherwise."""
    entries = catalogue()
    if model_id in entries:
        return entries[model_id]
    close = difflib.get_close_matches(model_id, entries, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise WeightsError(
        f"unknown model id {model_id!r}.{hint} Known ids: {', '.join(entries)} "
        f"(`python -m comfyui_meticulous models` lists them with sizes).")
