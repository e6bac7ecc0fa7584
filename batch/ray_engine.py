"""The Ray engine: the batch job as a Ray Data pipeline, on a local Ray or an existing cluster.

    read_binary_files -> decode + matte (a pool of actors, one model each) -> encode + write (tasks)

Reading goes through Ray's own file readers, so any filesystem pyarrow knows (local paths,
``s3://``, ``gs://``, ...) works without code of ours. Outputs are written by the workers into
``OUTPUT``, which must therefore be a folder every worker sees (any local folder on one
machine; a shared mount on a cluster).

Fault tolerance is Ray's: an actor that dies (a killed process, a lost node) is restarted up
to ``MAX_RESTARTS`` times, and the batches it had in flight are resubmitted up to
``MAX_TASK_RETRIES`` times; nothing else is redone. Per-item errors travel with the item in its
``error`` column and end in the report instead of failing the job.
"""

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..files.batch import describe
from .io import Cutout, read_image_bytes, write_cutout_files
from .job import JobOptions, Matter, Plan, Report, Weights

MAX_RESTARTS = 4
MAX_TASK_RETRIES = 4
NO_PIXELS = np.zeros((0, 0, 3), dtype=np.uint8)
NO_ALPHA = np.zeros((0, 0), dtype=np.float32)


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'comfyui-meticulous[distributed]'") from None
    return ray


def _column(values: list) -> np.ndarray:
    """An object column of per-row values (arrays of different shapes, bytes or None)."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


class MatteActor:
    """One model per actor, built once from the weights in the object store.

    Takes ``bytes``, ``path`` rows as Ray's reader gives them; decodes, runs the model, and
    returns ``path``, ``colour`` (uint8 ``[H,W,3]``), ``alpha`` (float32 ``[H,W]``), ``icc``
    and ``error`` ("" when fine). Encoded files travel to the actor, not decoded pixels: a
    12 MP photo is a few MB as a JPEG and 144 MB as float colour.
    """

    def __init__(self, weights: list, options: JobOptions, device: str | None):
        import ray

        # The reference arrives inside a list so that Ray hands it over unresolved: the weights
        # are fetched here, once per actor (and again only if the actor is restarted).
        self.matter = Matter(ray.get(weights[0]), options, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(path) for path in batch["path"]]
        errors = [""] * len(paths)
        pictures = {}
        for index, (data, path) in enumerate(zip(batch["bytes"], paths)):
            try:
                pictures[index] = read_image_bytes(bytes(data), path)
            except Exception as error:  # noqa: BLE001 - reported per item
                errors[index] = describe(error)
        results = dict(zip(pictures, self.matter.try_cutouts(list(pictures.values()))))
        colours, alphas, iccs = [], [], []
        for index in range(len(paths)):
            result = results.get(index)
            if isinstance(result, Exception):
                errors[index] = describe(result)
            ok = result is not None and not isinstance(result, Exception)
            colours.append(result.colour if ok else NO_PIXELS)
            alphas.append(result.alpha if ok else NO_ALPHA)
            iccs.append(result.icc_profile if ok and result.icc_profile else b"")
        return {"path": np.array(paths, dtype=object), "colour": _column(colours), "alpha": _column(alphas),
                "icc": _column(iccs), "error": np.array(errors, dtype=object)}


def write_batch(batch: dict[str, np.ndarray], output: str) -> dict[str, np.ndarray]:
    """Write each item's two PNGs; returns only ``path`` and ``error`` to the driver."""
    errors = list(batch["error"])
    for index, path in enumerate(batch["path"]):
        if errors[index]:
            continue
        try:
            # Copies: arrays from the object store are read-only, and torch wants writable memory.
            result = Cutout(np.array(batch["colour"][index]), np.array(batch["alpha"][index]),
                            bytes(batch["icc"][index]) or None)
            write_cutout_files(Path(output), str(path), result)
        except Exception as error:  # noqa: BLE001 - reported per item
            errors[index] = describe(error)
    return {"path": batch["path"], "error": np.array(errors, dtype=object)}


def connect(address: str | None):
    """``ray`` connected to ``address`` (or ``RAY_ADDRESS``, or a local Ray started for the run).

    Returns ``(ray, started)``; ``started`` says the caller should shut Ray down afterwards.
    An already initialised Ray (a test, a notebook) is used as it is.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or None)
    return ray, True


def pool_size(ray, num_gpus_per_worker: float, workers: int | None) -> int:
    """Actors in the pool: ``workers``, else as many as the cluster's GPUs allow at
    ``num_gpus_per_worker`` each, else one per CPU but one (kept for reading and writing)."""
    if workers is not None:
        if workers < 1:
            raise InputError(f"--workers must be at least 1, got {workers}")
        return workers
    resources = ray.cluster_resources()
    if num_gpus_per_worker > 0:
        gpus = resources.get("GPU", 0)
        if gpus < num_gpus_per_worker:
            raise InputError(f"--num-gpus-per-worker {num_gpus_per_worker} but the Ray cluster has "
                             f"{gpus:g} GPUs; use 0 to run on CPUs")
        return max(1, int(gpus // num_gpus_per_worker))
    return max(1, int(resources.get("CPU", 1)) - 1)


def map_actors(dataset, ray, actor: type, size: int, num_gpus_per_worker: float, **options):
    """``dataset.map_batches`` through a pool of 1..``size`` ``actor`` instances, restarts bounded.

    Ray Data's own default restarts dead actors and resubmits their batches without limit; a
    bound makes an input that kills its worker every time end the job instead of looping.
    """
    with warnings.catch_warnings():
        # Ray 2.60 warns that extra remote arguments are going away (in 2.64, hence the upper
        # bound of the [distributed] extra) and has no named parameter for these two yet.
        warnings.simplefilter("ignore", DeprecationWarning)
        return dataset.map_batches(actor, batch_format="numpy",
                                   compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size),
                                   num_cpus=1, num_gpus=num_gpus_per_worker or None,
                                   max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES, **options)


def run_ray(plan: Plan, weights: Weights, options: JobOptions, *, address: str | None = None,
            num_gpus_per_worker: float = 0.0, workers: int | None = None) -> Report:
    """Process ``plan.todo`` as a Ray Data pipeline; see the module docstring."""
    report = Report("ray", str(plan.output), plan.total, len(plan.skipped))
    if not plan.todo:
        return report.finish()
    ray, started = connect(address)
    try:
        size = pool_size(ray, num_gpus_per_worker, workers)
        weights_ref = ray.put(weights)
        device = "cuda" if num_gpus_per_worker > 0 else None
        # Rows per actor call: the model batch, so a pass is never split across calls.
        rows = options.model_batch(torch.device("cuda" if num_gpus_per_worker > 0 else "cpu"))
        files = ray.data.read_binary_files(plan.todo, include_paths=True)
        matted = map_actors(files, ray, MatteActor, size, num_gpus_per_worker, batch_size=rows,
                            fn_constructor_kwargs={"weights": [weights_ref], "options": options, "device": device})
        written = matted.map_batches(write_batch, batch_format="numpy", batch_size=rows,
                                     fn_kwargs={"output": str(plan.output)})
        for batch in written.iter_batches(batch_format="numpy", batch_size=None):
            for path, error in zip(batch["path"], batch["error"]):
                if error:
                    report.fail(str(path), str(error))
                else:
                    report.done += 1
    finally:
        if started:
            ray.shutdown()
    return report.finish()
