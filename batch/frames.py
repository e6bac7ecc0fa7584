"""``--frames``: one clip's frames matted in chunks, anywhere, smoothed as if in one piece.

The temporal stabiliser (:mod:`..video.temporal`) is a recurrence over smoothed logits::

    ẑ_t = lerp(z_t, ẑ_{t-1}, w_t)        w_t = a · (1 - g_t)

where the gate ``g_t`` depends only on frames ``t-1`` and ``t``. So the expensive part — the
model's logits ``z_t`` and the weights ``w_t`` — is computed per chunk, independently, on any
worker (with one frame of overlap, the frame before the chunk, for the gate); only the cheap
elementwise recurrence runs in order, on the driver, carrying ``ẑ`` across chunk borders
exactly. The result is the one :func:`..video.matte_video` computes in a single process, with
the same operations in the same order (checked by the tests).

Resumable: after a chunk is written, the smoothed logits of its last frame are saved in
``OUTPUT/.frames_state/``; a rerun starts at the first chunk that is not finished, from the
state saved before it.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..files.atomic import atomic_path
from ..files.images import Picture, read_image
from ..inference.cutout import CutOptions
from ..inference.prediction import Prediction
from ..video.temporal import gate_frames, motion_gate, retention
from .io import cutout, is_local, model_input, write_cutout_files
from .job import JobOptions, Matter, Report, Weights, is_complete, make_plan

STATE_FOLDER = ".frames_state"


@dataclass(frozen=True)
class FrameOptions:
    """``strength``: temporal smoothing 0..1 (0 = every frame on its own); ``chunk``: frames
    per worker job."""

    strength: float = 0.5
    chunk: int = 48

    def __post_init__(self):
        retention(self.strength)
        if self.chunk < 1:
            raise InputError(f"--chunk-frames must be at least 1, got {self.chunk}")


def chunk_bounds(total: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(total)`` in runs of ``chunk`` frames."""
    return [(start, min(total, start + chunk)) for start in range(0, total, chunk)]


@dataclass(frozen=True)
class ChunkLogits:
    """A chunk's raw logits ``[n,1,h,w]`` and stabiliser weights ``w`` (None when smoothing
    is off), float32 on the CPU; ``image_size`` is the frames' ``(H, W)``."""

    start: int
    logits: torch.Tensor
    weights: torch.Tensor | None
    image_size: tuple[int, int]


RunFn = Callable[[torch.Tensor], Prediction]


def chunk_logits(run: RunFn, frames: torch.Tensor, start: int, strength: float, batch: int,
                 device: torch.device) -> ChunkLogits:
    """The parallel part for one chunk. ``frames`` ``[n,H,W,3]`` are the chunk's frames, led by
    the frame before the chunk when ``start`` > 0 (the gate of the first frame needs it).

    The model sees ``batch`` frames per pass, as :func:`matte_video` does with ``batch_size``.
    """
    frames = frames.to(device=device, dtype=torch.float32)
    current = frames[1:] if start > 0 else frames
    with torch.inference_mode():
        logits = torch.cat([run(current[i:i + batch]).logits.float() for i in range(0, len(current), batch)])
        keep = retention(strength)
        weights = None
        if keep > 0.0:
            blurred = gate_frames(frames, tuple(logits.shape[-2:]))
            # The first frame of the clip is compared with itself, as the stabiliser does.
            weights = keep * (1.0 - motion_gate(blurred[1:] if start > 0 else blurred, blurred[:1]))
    return ChunkLogits(start, logits.cpu(), None if weights is None else weights.cpu(),
                       tuple(frames.shape[1:3]))


class Stitcher:
    """The in-order part: the stabiliser's recurrence over chunks, carrying ``ẑ`` across borders."""

    def __init__(self, previous: torch.Tensor | None = None):
        self.previous = previous  # [1,1,h,w] smoothed logits of the frame before the next chunk

    def smooth(self, chunk: ChunkLogits) -> torch.Tensor:
        """Smoothed logits ``[n,1,h,w]`` of ``chunk``, which must follow the previous one."""
        if chunk.weights is None:
            self.previous = chunk.logits[-1:].clone()
            return chunk.logits
        logits, weights = chunk.logits, chunk.weights
        previous = self.previous if self.previous is not None else logits[:1]
        smoothed = torch.empty_like(logits)
        for index in range(len(logits)):
            previous = torch.lerp(logits[index:index + 1], previous, weights[index:index + 1])
            smoothed[index:index + 1] = previous
        self.previous = previous.clone()
        return smoothed


def probabilities(smoothed: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Masks ``[n,H,W]`` from smoothed logits, resized as :func:`matte_video` resizes them."""
    return Prediction(smoothed, tuple(image_size)).probabilities(tuple(image_size))


# --- the job -------------------------------------------------------------------------------

def read_frames(paths: list[str]) -> list[Picture]:
    """The frames as ``cut`` reads them; ``InputError`` if one is unreadable or of another size."""
    pictures = [read_image(path) for path in paths]
    first = pictures[0].rgb.shape
    for path, picture in zip(paths, pictures):
        if picture.rgb.shape != first:
            raise InputError(f"{path} is {picture.rgb.shape[2]}x{picture.rgb.shape[1]} but {paths[0]} is "
                             f"{first[2]}x{first[1]}: all frames of a clip must share one size")
    return pictures


def compute_chunk(matter: Matter, paths: list[str], bounds: tuple[int, int], strength: float) -> ChunkLogits:
    """Read a chunk's frames (and the one before it) and compute its :class:`ChunkLogits`."""
    start, stop = bounds
    frames = torch.cat([model_input(picture) for picture in read_frames(paths[max(0, start - 1):stop])])
    return chunk_logits(matter.predict, frames, start, strength, matter.batch, matter.device)


def write_chunk(output: Path, paths: list[str], smoothed: torch.Tensor, options: CutOptions) -> None:
    """Write the cut-outs and masks of a chunk's frames from their smoothed logits."""
    pictures = read_frames(paths)
    masks = probabilities(smoothed, tuple(pictures[0].rgb.shape[1:3]))
    for path, picture, mask in zip(paths, pictures, masks):
        write_cutout_files(output, path, cutout(picture, mask, options))


def _state_path(output: Path, index: int) -> Path:
    return output / STATE_FOLDER / f"chunk_{index:06d}.safetensors"


def _settings(weights: Weights, options: JobOptions, frame_options: FrameOptions, total: int) -> dict[str, str]:
    """What a saved state depends on: a state saved under other settings is not reused."""
    return {"weights": weights.origin, "options": repr(options), "strength": repr(frame_options.strength),
            "chunk": str(frame_options.chunk), "frames": str(total)}


def save_state(output: Path, index: int, previous: torch.Tensor, settings: dict[str, str]) -> None:
    path = _state_path(output, index)
    path.parent.mkdir(exist_ok=True)
    with atomic_path(path) as staging:
        save_file({"previous": previous.contiguous()}, str(staging), metadata=settings)


def load_state(output: Path, index: int, settings: dict[str, str]) -> torch.Tensor | None:
    from safetensors import safe_open

    path = _state_path(output, index)
    try:
        with safe_open(str(path), "pt") as handle:
            if handle.metadata() != settings:
                return None
        return load_file(str(path))["previous"]
    except (OSError, SafetensorError):
        return None


def resume_point(output: Path, paths: list[str], bounds: list[tuple[int, int]],
                 settings: dict[str, str]) -> tuple[int, torch.Tensor | None]:
    """The first chunk to compute and the state to enter it with: chunks before it are written
    and have their state saved."""
    previous = None
    for index, (start, stop) in enumerate(bounds):
        state = load_state(output, index, settings)
        if state is None or not all(is_complete(output, path) for path in paths[start:stop]):
            return index, previous
        previous = state
    return len(bounds), previous


def stitch_and_write(chunks: Iterable[ChunkLogits], output: Path, paths: list[str],
                     bounds: list[tuple[int, int]], first: int, previous: torch.Tensor | None,
                     settings: dict[str, str], write: Callable[[list[str], torch.Tensor], None],
                     report: Report) -> None:
    """Run the recurrence over ``chunks`` (in order, from chunk ``first``), hand each chunk's
    smoothed logits to ``write``, and save the state after it."""
    stitcher = Stitcher(previous)
    for index, chunk in enumerate(chunks, start=first):
        start, stop = bounds[index]
        if chunk.start != start:
            raise RuntimeError(f"chunk starting at frame {chunk.start} arrived where {start} was expected")
        write(paths[start:stop], stitcher.smooth(chunk))
        save_state(output, index, stitcher.previous, settings)
        report.done += stop - start


def run_frames(inputs: list[str], output: Path, weights: Weights, options: JobOptions,
               frame_options: FrameOptions, *, engine: str = "local", address: str | None = None,
               num_gpus_per_worker: float = 0.0, workers: int | None = None) -> Report:
    """Matte the frames ``inputs`` (one clip, in this order) into ``output``; see the module
    docstring. A frame that cannot be read stops the job: the frames after it depend on it."""
    if not all(map(is_local, inputs)):
        raise InputError("--frames reads a folder every worker sees; URIs are not supported there")
    output = Path(output)
    make_plan(inputs, output)  # the same checks as for images: names, existence, output folder
    bounds = chunk_bounds(len(inputs), frame_options.chunk)
    settings = _settings(weights, options, frame_options, len(inputs))
    first, previous = resume_point(output, inputs, bounds, settings)
    skipped = bounds[first - 1][1] if first > 0 else 0
    report = Report(engine, str(output), len(inputs), skipped)
    if first == len(bounds):
        return report.finish()
    if engine == "ray":
        from .ray_frames import run_frames_ray

        run_frames_ray(inputs, output, weights, options, frame_options, bounds, first, previous, settings,
                       report, address=address, num_gpus_per_worker=num_gpus_per_worker, workers=workers)
    else:
        matter = Matter(weights, options)
        chunks = (compute_chunk(matter, inputs, bounds[index], frame_options.strength)
                  for index in range(first, len(bounds)))
        stitch_and_write(chunks, output, inputs, bounds, first, previous, settings,
                         lambda paths, smoothed: write_chunk(output, paths, smoothed, options.cut), report)
    return report.finish()
