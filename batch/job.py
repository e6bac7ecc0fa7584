"""What a batch job is, whichever engine runs it: inputs, the resumable plan, the weights, the
per-item work and the report.

An item is finished when both of its output files exist; files are renamed into place only when
complete, so the output folder itself is the job's record of progress. A rerun (after a crash,
a Ctrl-C or a lost cluster) plans only the items without both files.
"""

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, WeightsError
from ..files.atomic import atomic_write
from ..files.images import Picture
from ..highres import HighResOptions, segment_highres
from ..inference.cutout import CutOptions
from ..inference.device import CPU_BATCH, pick_device, pick_dtype
from ..inference.predict import predict_logits
from ..inference.prediction import Prediction
from ..models.loading import build_from_state_dict, read_safetensors
from ..weights import WeightsEntry, get_entry, resolve_weights
from .io import IMAGE_SUFFIXES, Cutout, cutout, find_images, is_local, model_input, output_names

REPORT_NAME = "batch_report.json"
GPU_BATCH = 4


@dataclass(frozen=True)
class JobOptions:
    """The settings of a job, shipped to every worker: ``cut``'s own (``cut``), the device and
    precision, and ``batch_size``: images per model pass, 0 = 1 on the CPU (batching buys
    nothing there) and ``GPU_BATCH`` elsewhere. Only images of one size share a pass."""

    cut: CutOptions = CutOptions()
    device: str = "auto"
    precision: str = "auto"
    batch_size: int = 0

    def __post_init__(self):
        if self.batch_size < 0:
            raise InputError(f"--batch-size must be 0 (automatic) or more, got {self.batch_size}")

    def model_batch(self, device: torch.device) -> int:
        return self.batch_size or (CPU_BATCH if device.type == "cpu" else GPU_BATCH)


# --- inputs and the plan -------------------------------------------------------------------

def list_inputs(source: str | os.PathLike) -> list[str]:
    """The items of ``source``: the images in a folder (sorted), one image, or a list file.

    A list file has one path or URI per line; blank lines and lines starting with ``#`` are
    ignored, and relative paths are taken relative to the list file's folder. A URI folder
    (``s3://bucket/photos/``) is listed through pyarrow's filesystems, which Ray brings.
    """
    source = str(source)
    if not is_local(source):
        return _list_uri_folder(source)
    path = Path(source)
    if path.is_dir():
        return [str(p) for p in find_images([path])]
    if not path.is_file():
        raise InputError(f"input not found: {path}")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [str(path)]
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        items.append(line if not is_local(line) or Path(line).is_absolute() else str(path.parent / line))
    if not items:
        raise InputError(f"the list file {path} names no inputs")
    return items


def _list_uri_folder(uri: str) -> list[str]:
    try:
        from pyarrow import fs
    except ImportError:
        raise InputError(f"{uri}: reading URIs needs the [distributed] extra "
                         f"(pip install 'comfyui-meticulous[distributed]')") from None
    filesystem, root = fs.FileSystem.from_uri(uri)
    scheme = uri.split("://", 1)[0]
    infos = filesystem.get_file_info(fs.FileSelector(root, recursive=False))
    found = sorted(f"{scheme}://{info.path}" for info in infos
                   if info.type == fs.FileType.File and Path(info.path).suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {uri}")
    return found


@dataclass(frozen=True)
class Plan:
    """The items of a job still to do, and those skipped because their outputs are complete."""

    output: Path
    todo: list[str]
    skipped: list[str]

    @property
    def total(self) -> int:
        return len(self.todo) + len(self.skipped)


def is_complete(output: Path, source: str) -> bool:
    return all((output / name).is_file() for name in output_names(source))


def make_plan(inputs: list[str], output: str | os.PathLike) -> Plan:
    """Split ``inputs`` into items to do and items already finished in ``output``.

    Two inputs that would write the same output file are refused before any work, as are
    local inputs that do not exist (a job should not fail on them hours in).
    """
    output = Path(output)
    seen: dict[str, str] = {}
    for source in inputs:
        name = output_names(source)[0]
        if name.casefold() in seen:  # one file on case-insensitive filesystems (Windows, macOS)
            raise InputError(f"{seen[name.casefold()]} and {source} would both be written as {output / name}; "
                             f"rename one, or run them into different output folders")
        seen[name.casefold()] = source
        if is_local(source) and not Path(source).is_file():
            raise InputError(f"input not found: {source}")
        if is_local(source) and Path(source).resolve().parent == output.resolve():
            raise InputError(f"{source} lies in the output folder {output}; choose another output folder")
    todo, skipped = [], []
    for source in inputs:
        (skipped if is_complete(output, source) else todo).append(source)
    return Plan(output, todo, skipped)


# --- weights -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Weights:
    """Weights resolved and verified once, on the machine that starts the job.

    Workers get ``state_dict`` (through Ray's object store), never a path or an id to look up:
    nothing is downloaded or hashed per worker, and workers need neither network nor the model
    folder.
    """

    origin: str
    state_dict: dict[str, torch.Tensor]
    entry: WeightsEntry | None = None

    def build(self, device: torch.device, dtype: torch.dtype) -> nn.Module:
        order = (self.entry.patch_order if self.entry else None) or "einops"
        model = build_from_state_dict(self.state_dict, dtype=dtype, patch_order=order, origin=self.origin)
        if self.entry is not None:
            self.entry.configure(model)
        return model.to(device)


def resolve(model: str | None = None, weights: str | os.PathLike | None = None) -> Weights:
    """Find, verify (sha256, catalogue ids) and read the weights, checking they build a model."""
    if weights is not None:
        path, entry = Path(weights), None
    elif model is not None:
        entry = get_entry(model)
        path = resolve_weights(model)
    else:
        raise WeightsError("name a catalogue model (--model ID) or a weight file (--weights FILE)")
    resolved = Weights(str(path), read_safetensors(path), entry)
    # Built once here: a file of another architecture fails now, not on every worker.
    resolved.build(torch.device("cpu"), torch.float32)
    return resolved


# --- the per-item work ---------------------------------------------------------------------

class Matter:
    """A loaded model and the job's settings: pictures in, cut-outs out.

    One per process (one per Ray actor): building it is the expensive part of a worker's start.
    """

    def __init__(self, weights: Weights, options: JobOptions, device: str | None = None):
        self.options = options
        self.device = pick_device(device or options.device)
        self.model = weights.build(self.device, pick_dtype(self.device, options.precision))
        self.batch = options.model_batch(self.device)
        self.highres = HighResOptions(max_patches=options.cut.max_patches,
                                      coarse_resolution=options.cut.resolution)

    def predict(self, images: torch.Tensor) -> Prediction:
        """The model's prediction for ``images`` ``[n,H,W,3]`` (one-shot, or high-res)."""
        with torch.inference_mode():
            if self.options.cut.hires:
                return segment_highres(self.model, images, self.highres).prediction
            return predict_logits(self.model, images, resolution=self.options.cut.resolution,
                                  keep_aspect=self.options.cut.keep_aspect, batch_size=len(images))

    def cutouts(self, pictures: list[Picture]) -> list[Cutout]:
        """The cut-out of each picture, in order; consecutive pictures of one size share a
        model pass of up to ``batch`` images."""
        results: list[Cutout] = []
        start = 0
        while start < len(pictures):
            stop = start + 1
            while (stop < len(pictures) and stop - start < self.batch
                   and pictures[stop].rgb.shape == pictures[start].rgb.shape):
                stop += 1
            group = pictures[start:stop]
            images = torch.cat([model_input(picture) for picture in group])
            with torch.inference_mode():
                alphas = self.predict(images).probabilities().cpu()
            results.extend(cutout(picture, alpha, self.options.cut) for picture, alpha in zip(group, alphas))
            start = stop
        return results

    def try_cutouts(self, pictures: list[Picture]) -> list[Cutout | Exception]:
        """Like :meth:`cutouts`, but a picture that fails yields its exception instead.

        When a shared pass fails its pictures are retried one by one, so one bad image (too
        large for the device, say) does not take the others of its batch with it.
        """
        try:
            return self.cutouts(pictures)
        except Exception as error:  # noqa: BLE001 - reported per item by the caller
            if len(pictures) == 1:
                return [error]
        results: list[Cutout | Exception] = []
        for picture in pictures:
            results.extend(self.try_cutouts([picture]))
        return results


# --- the report ----------------------------------------------------------------------------

@dataclass
class Report:
    """What a run did; written to ``OUTPUT/batch_report.json``."""

    engine: str
    output: str
    inputs: int
    skipped: int
    done: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    started: float = field(default_factory=time.time)

    def fail(self, source: str, message: str) -> None:
        self.failed.append({"input": source, "error": message})

    def finish(self) -> "Report":
        self.seconds = round(time.time() - self.started, 3)
        return self

    @property
    def throughput(self) -> float:
        """Items finished per second of the run (0 when nothing ran)."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def write(self) -> Path:
        path = Path(self.output) / REPORT_NAME
        record = asdict(self)
        record.pop("started")
        record["items_per_second"] = round(self.throughput, 4)
        atomic_write(path, json.dumps(record, indent=2) + "\n")
        return path

    def summary(self) -> str:
        return (f"{self.done} done, {len(self.failed)} failed, {self.skipped} skipped of {self.inputs} "
                f"in {self.seconds:.1f} s ({self.throughput:.2f} items/s); "
                f"report: {Path(self.output) / REPORT_NAME}")
