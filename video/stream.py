"""Matting a whole video batch in chunks, with bounded device and host memory.

Frames go to the compute device one chunk at a time and results are written straight into
outputs allocated once for the whole video, so memory beyond the outputs does not grow with
the number of frames.
"""

from dataclasses import dataclass, replace
from typing import Callable, Hashable

import torch
from torch import nn

from ..checks import check_images
from ..errors import InputError
from ..inference.device import CPU_BATCH
from ..inference.predict import predict_logits
from ..inference.prediction import Prediction
from .temporal import TemporalState, retention, stabilise

RunFn = Callable[[torch.Tensor], Prediction]
ProgressFn = Callable[[int, int], None]
FreeMemoryFn = Callable[[torch.device], int]

MAX_BATCH = 32
# Share of the free device memory a chunk may plan to use: the probe under-counts allocator
# fragmentation and whatever other nodes allocate meanwhile.
MEMORY_SHARE = 0.7


@dataclass(frozen=True)
class VideoMatte:
    """The result of :func:`matte_video`.

    ``masks`` ``[N,H,W]`` and ``rgba`` ``[N,H,W,4]`` (the input colours with the mask as alpha)
    are float32 on the input frames' device. ``state`` continues the temporal smoothing in the
    next chunk of the same video (on the CPU, so it holds no device memory between runs); None
    when smoothing is off.
    """

    masks: torch.Tensor
    rgba: torch.Tensor
    state: TemporalState | None


def model_runner(model: nn.Module, *, resolution: int | None = None,
                 keep_aspect: bool = False) -> RunFn:
    """A :data:`RunFn` that runs a plain network once over the whole chunk."""
    def run(frames: torch.Tensor) -> Prediction:
        return predict_logits(model, frames, resolution=resolution, keep_aspect=keep_aspect,
                              batch_size=frames.shape[0])
    return run


def device_free_memory(device: torch.device) -> int:
    """Bytes a chunk can use on a CUDA ``device``: free memory plus PyTorch's unused cache."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def batch_size_for(free_bytes: int, frame_bytes: int) -> int:
    """Frames per chunk that fit in ``MEMORY_SHARE`` of ``free_bytes`` at ``frame_bytes`` each."""
    return max(1, min(MAX_BATCH, int(free_bytes * MEMORY_SHARE) // max(1, frame_bytes)))


def _matte_chunk(frames: torch.Tensor, run: RunFn, device: torch.device, strength: float,
                 state: TemporalState | None, source: Hashable, masks: torch.Tensor,
                 rgba: torch.Tensor) -> TemporalState | None:
    """Fill the output slices ``masks`` and ``rgba`` for one chunk; returns the state after it."""
    chunk = frames.to(device=device, dtype=torch.float32, non_blocking=True)
    prediction = run(chunk)
    if prediction.batch != len(chunk):
        raise InputError(
            f"the pipeline returned {prediction.batch} predictions for {len(chunk)} frames")
    logits = prediction.logits.float()
    if strength == 0.0:
        state = None
    else:
        logits, state = stabilise(logits, chunk, strength, state, source)
    masks.copy_(replace(prediction, logits=logits).probabilities(tuple(frames.shape[1:3])))
    rgba[..., :3].copy_(frames)
    rgba[..., 3].copy_(masks)
    return state


def matte_video(frames: torch.Tensor, run: RunFn, *, device: torch.device | str,
                batch_size: int = 0, temporal_smoothing: float = 0.0,
                state: TemporalState | None = None, source: Hashable = None,
                free_memory: FreeMemoryFn | None = None,
                progress: ProgressFn | None = None) -> VideoMatte:
    """Segment every frame of ``frames`` ``[N,H,W,3|4]`` (0..1) with ``run``, in chunks.

    ``run`` takes a chunk ``[n,H,W,3]`` float32 already on ``device`` and returns its
    :class:`Prediction` (see :func:`model_runner`). ``batch_size`` 0 picks the chunk size: on
    CUDA a one-frame probe measures the peak memory a frame needs and the rest is sized from
    ``free_memory(device)`` (default :func:`device_free_memory`); elsewhere ``CPU_BATCH``.
    On CUDA out-of-memory the chunk is retried once at half the size, which is kept for the
    rest of the video.

    ``temporal_smoothing`` 0..1 is the stabiliser's strength (0 = every frame on its own, the
    exact per-frame result); ``state`` and ``source`` continue a video split over several calls
    (see :class:`TemporalState`). ``progress(done, total)`` is called after every chunk; an
    exception raised there stops the run and leaves ``state`` as it was.
    """
    frames = check_images(frames, "frames")
    if batch_size < 0:
        raise InputError(f"batch_size must be 0 (automatic) or more, got {batch_size}")
    retention(temporal_smoothing)  # rejects an out-of-range strength before any work
    device = torch.device(device)
    total, height, width = frames.shape[:3]
    masks = torch.empty((total, height, width), dtype=torch.float32, device=frames.device)
    rgba = torch.empty((total, height, width, 4), dtype=torch.float32, device=frames.device)
    probe = batch_size == 0 and device.type == "cuda"
    size = batch_size or (1 if probe else CPU_BATCH)
    retried = False
    start = 0
    with torch.inference_mode():
        while start < total:
            stop = min(total, start + size)
            if probe:
                torch.cuda.reset_peak_memory_stats(device)
                baseline = torch.cuda.memory_allocated(device)
            try:
                state_after = _matte_chunk(frames[start:stop], run, device, temporal_smoothing,
                                           state, source, masks[start:stop], rgba[start:stop])
            except torch.OutOfMemoryError as error:
                if retried:
                    raise InputError(
                        f"out of memory on {device} even with {size} frame(s) per chunk; set a "
                        f"smaller batch_size or resolution, or free memory (unload other "
                        f"models)") from error
                out_of_memory = True
            else:
                out_of_memory = False
            if out_of_memory:
                # Retried outside the except block, so the failed chunk's tensors are freed first.
                retried = True
                size = max(1, size // 2)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            state = state_after
            if probe:
                probe = False
                frame_bytes = torch.cuda.max_memory_allocated(device) - baseline
                size = batch_size_for((free_memory or device_free_memory)(device), frame_bytes)
            start = stop
            if progress is not None:
                progress(start, total)
    return VideoMatte(masks, rgba, None if state is None else state.to("cpu"))
