"""``--frames`` on Ray: chunks' logits on a pool of model actors, the recurrence on the driver,
the PNGs written by Ray tasks."""

from pathlib import Path

import numpy as np
import torch

from .frames import ChunkLogits, FrameOptions, compute_chunk, stitch_and_write, write_chunk
from .job import JobOptions, Matter, Report, Weights
from .ray_engine import connect, map_actors, pool_size

NO_WEIGHTS = np.zeros((0, 1, 1, 1), dtype=np.float32)


class ChunkActor:
    """One model per actor; each row is a chunk ``(start, stop)`` of the clip's frames."""

    def __init__(self, shared: list, options: JobOptions, device: str | None, strength: float):
        import ray

        weights, self.paths = ray.get(shared)
        self.matter = Matter(weights, options, device)
        self.strength = strength

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunks = [compute_chunk(self.matter, self.paths, (int(start), int(stop)), self.strength)
                  for start, stop in zip(batch["start"], batch["stop"])]
        return {
            "start": batch["start"],
            "logits": _column([chunk.logits.numpy() for chunk in chunks]),
            "weights": _column([NO_WEIGHTS if chunk.weights is None else chunk.weights.numpy() for chunk in chunks]),
            "size": np.array([chunk.image_size for chunk in chunks], dtype=np.int64),
        }


def _column(values: list) -> np.ndarray:
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _chunk(row: dict) -> ChunkLogits:
    weights = np.asarray(row["weights"])
    return ChunkLogits(int(row["start"]), torch.from_numpy(np.array(row["logits"], dtype=np.float32)),
                       torch.from_numpy(np.array(weights, dtype=np.float32)) if weights.size else None,
                       tuple(int(side) for side in row["size"]))


def run_frames_ray(paths: list[str], output: Path, weights: Weights, options: JobOptions,
                   frame_options: FrameOptions, bounds: list[tuple[int, int]], first: int,
                   previous: torch.Tensor | None, settings: dict[str, str], report: Report, *,
                   address: str | None, num_gpus_per_worker: float, workers: int | None) -> None:
    ray, started = connect(address)
    context = ray.data.DataContext.get_current()
    preserve = context.execution_options.preserve_order
    try:
        # The recurrence needs the chunks in order; Ray Data then releases them in order.
        context.execution_options.preserve_order = True
        size = pool_size(ray, num_gpus_per_worker, workers)
        shared = [ray.put(weights), ray.put(paths)]
        device = "cuda" if num_gpus_per_worker > 0 else None
        rows = ray.data.from_items([{"start": start, "stop": stop} for start, stop in bounds[first:]])
        chunks = map_actors(rows, ray, ChunkActor, size, num_gpus_per_worker, batch_size=1,
                            fn_constructor_kwargs={"shared": shared, "options": options, "device": device,
                                                   "strength": frame_options.strength})
        writer = ray.remote(num_cpus=1, max_retries=3)(write_chunk)
        pending = []

        def write(chunk_paths: list[str], smoothed: torch.Tensor) -> None:
            pending.append(writer.remote(output, chunk_paths, smoothed, options.cut))
            while len(pending) > 2 * size:  # bounded: the driver does not hold the whole film
                done, _ = ray.wait(pending, num_returns=1)
                ray.get(done)
                pending.remove(done[0])

        stitch_and_write((_chunk(row) for row in chunks.iter_rows()), output, paths, bounds, first,
                         previous, settings, write, report)
        ray.get(pending)
    finally:
        context.execution_options.preserve_order = preserve
        if started:
            ray.shutdown()
