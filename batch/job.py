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

import numpy as np
import torch
from torch import nn

from ..errors import InputError, WeightsError
from ..files.atomic import atomic_write
from ..highres import HighResOptions, segment_highres
from ..inference.device import CPU_BATCH, pick_device, pick_dtype
from ..inference.predict import predict_logits
from ..models.loading import build_from_state_dict, read_safetensors
from ..weights import WeightsEntry, get_entry, resolve_weights
from .io import IMAGE_SUFFIXES, find_images, image_tensor, is_local, output_names

REPORT_NAME = "batch_report.json"
GPU_BATCH = 4


@dataclass(frozen=True)
class JobOptions:
    """The ``cut`` settings of a job, shipped to every worker.

    ``batch_size`` 0 picks images per model pass from the device: 1 on the CPU (batching buys
    nothing there), ``GPU_BATCH`` elsewhere. Only images of the same size share a pass.
    """

    resolution: int | None = None
    keep_aspect: bool = False
    hires: bool = False
    max_patches: int | None = None
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
        if name in seen:
            raise InputError(f"{seen[name]} and {source} would both be written as {output / name}; "
                             f"rename one, or run them into different output folders")
        seen[name] = source
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
    # Built once on the meta device's cheap path: an unsuitable file fails here, not on every worker.
    resolved.build(torch.device("cpu"), torch.float32)
    return resolved


# --- the per-item work ---------------------------------------------------------------------

class Matter:
    """A loaded model and the job's settings: images in, alpha mattes out.

    One per process (one per Ray actor): building it is the expensive part of a worker's start.
    """

    def __init__(self, weights: Weights, options: JobOptions, device: str | None = None):
        self.options = options
        self.device = pick_device(device or options.device)
        self.model = weights.build(self.device, pick_dtype(self.device, options.precision))
        self.batch = options.model_batch(self.device)
        self.highres = HighResOptions(max_patches=options.max_patches, coarse_resolution=options.resolution)

    def alphas(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        """``uint8 [H,W,3]`` images -> float ``[H,W]`` alphas in 0..1 on the CPU, in order.

        Consecutive images of one size share a model pass of up to ``batch`` images.
        """
        results: list[torch.Tensor] = []
        start = 0
        while start < len(images):
            stop = start + 1
            while (stop < len(images) and stop - start < self.batch
                   and images[stop].shape == images[start].shape):
                stop += 1
            batch = torch.cat([image_tensor(pixels) for pixels in images[start:stop]])
            results.extend(self._alpha(batch))
            start = stop
        return results

    def try_alphas(self, images: list[np.ndarray]) -> list[torch.Tensor | BaseException]:
        """Like :meth:`alphas`, but an image that fails yields its exception instead.

        When a shared pass fails its images are retried one by one, so one bad image (too
        large for the device, say) does not take the others of its batch with it.
        """
        try:
            return self.alphas(images)
        except Exception as error:  # noqa: BLE001 - reported per item by the caller
            if len(images) == 1:
                return [error]
        results: list[torch.Tensor | BaseException] = []
        for pixels in images:
            results.extend(self.try_alphas([pixels]))
        return results

    def _alpha(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode():
            if self.options.hires:
                prediction = segment_highres(self.model, images, self.highres).prediction
            else:
                prediction = predict_logits(self.model, images, resolution=self.options.resolution,
                                            keep_aspect=self.options.keep_aspect, batch_size=len(images))
            return list(prediction.probabilities().cpu())


def describe(error: BaseException) -> str:
    """A one-line message for the report: ours as written, others with their type."""
    from ..errors import MeticulousError

    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, MeticulousError) else f"{type(error).__name__}: {text}"


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
