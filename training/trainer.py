"""Training a learned block: seeded, resumable, mixed precision on CUDA, validated in mBA/MQ.

Every random choice of step ``s`` (batch order, crops, flips, coarse perturbations) comes from
generators seeded with ``(seed, s)`` and the model's initialisation from ``seed``, so a run is
reproducible and a resumed run takes exactly the steps the uninterrupted one would have. The
checkpoint is one safetensors file: model, optimizer moments, the step, the options and the
gradient scaler's state in its metadata; no pickle anywhere.
"""

import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError, WeightsError
from ..inference.images import normalise
from ..metrics import mba_mq
from ..files.atomic import atomic_path
from ..models.base import SegmentationModel
from ..models.registry import build, get_architecture, trainable_ids
from ..weights.trained import save_trained, write_manifest_entry
from .losses import LOSSES, block_loss

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_FORMAT = "comfyui-meticulous-checkpoint-1"
# Each block's own paper loss: HRSOD's pixel-wise cross-entropy, MeticulousNet's per-block losses,
# RefineMask's stage loss, BASNet's hybrid loss.
DEFAULT_LOSS = {"gsn": "bce", "lrn": "bce", "glfn": "bce", "hierpr": "mos", "refinemask": "refinemask",
                "basnet": "hybrid"}

CoarseSource = Callable[[Tensor, Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class TrainOptions:
    """What to train and how. ``size``: images and masks are resized to ``size²`` when loaded;
    ``crop``: training sees random ``crop²`` windows of them (the whole image if None);
    ``schedule``: ``cosine`` decays the learning rate to 0 over ``steps`` after ``warmup``
    linear steps, ``constant`` keeps it. ``amp`` only takes effect on CUDA."""

    block: str
    config: dict = field(default_factory=dict)
    loss: str = "auto"
    size: int = 1024
    crop: int | None = None
    batch_size: int = 4
    steps: int = 20000
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup: int = 0
    schedule: str = "cosine"
    grad_clip: float | None = None
    flip: bool = True
    seed: int = 0
    amp: bool = True
    val_every: int = 1000
    checkpoint_every: int = 1000

    def __post_init__(self):
        if self.block not in trainable_ids():
            raise InputError(f"unknown block {self.block!r}; expected one of {', '.join(trainable_ids())}")
        if self.loss != "auto" and self.loss not in LOSSES:
            raise InputError(f"unknown loss {self.loss!r}; expected auto or one of {', '.join(LOSSES)}")
        if self.schedule not in ("cosine", "constant"):
            raise InputError(f"schedule must be cosine or constant, got {self.schedule!r}")
        if self.crop is not None and not 0 < self.crop <= self.size:
            raise InputError(f"crop must be between 1 and size ({self.size}), got {self.crop}")
        if min(self.batch_size, self.steps, self.size, self.val_every, self.checkpoint_every) < 1:
            raise InputError("batch size, steps, size and the validation/checkpoint intervals must be >= 1")

    @property
    def loss_name(self) -> str:
        return DEFAULT_LOSS[self.block] if self.loss == "auto" else self.loss

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def _generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for one (seed, stream...) pair, independent of every other pair."""
    value = seed
    for part in stream:
        value = (value * 1_000_003 + part + 1) % (2 ** 63)
    return torch.Generator().manual_seed(value)


class StepSampler:
    """Batches of dataset indices for steps ``start..stop-1``: epochs are seeded permutations, a
    step takes the next ``batch_size`` positions, wrapping into the next epoch."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int, stop: int):
        self.size, self.batch_size, self.seed, self.start, self.stop = size, batch_size, seed, start, stop
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            self._orders = {epoch: torch.randperm(self.size, generator=_generator(self.seed, 0, epoch)).tolist()}
        return self._orders[epoch]

    def batch(self, step: int) -> list[int]:
        first = step * self.batch_size
        return [self._order(p // self.size)[p % self.size] for p in range(first, first + self.batch_size)]

    def __iter__(self):
        return (self.batch(step) for step in range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def augment(images: Tensor, masks: Tensor, coarse: Tensor | None, crop: int | None, flip: bool,
            generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-sample random ``crop²`` window and horizontal flip of images, masks and (full-size)
    coarse logits alike."""
    b, _, h, w = images.shape
    if crop is not None and (crop, crop) != (h, w):
        tops = torch.randint(0, h - crop + 1, (b,), generator=generator).tolist()
        lefts = torch.randint(0, w - crop + 1, (b,), generator=generator).tolist()

        def cut(x: Tensor) -> Tensor:
            windows = zip(tops, lefts)
            return torch.stack([x[i, :, top:top + crop, left:left + crop] for i, (top, left) in enumerate(windows)])

        images, masks = cut(images), cut(masks)
        coarse = None if coarse is None else cut(coarse)
    if flip:
        flips = (torch.rand(b, generator=generator) < 0.5).to(images.device).view(b, 1, 1, 1)
        images, masks = torch.where(flips, images.flip(-1), images), torch.where(flips, masks.flip(-1), masks)
        coarse = None if coarse is None else torch.where(flips, coarse.flip(-1), coarse)
    return images, masks, coarse


def training_outputs(model: SegmentationModel, x: Tensor, coarse: Tensor | None):
    """What a block's loss needs: every output for deeply supervised blocks, else the logits."""
    return model.training_outputs(x, coarse)


def block_logits(model: SegmentationModel, x: Tensor, coarse: Tensor | None) -> Tensor:
    """The block's final logits ``[B,1,H,W]`` (its inference path)."""
    return model.run(x, coarse)


class ProgressLine:
    """One status line on ``stream``: rewritten in place on a terminal, printed every
    ``every`` seconds otherwise."""

    def __init__(self, total: int, stream=None, every: float = 30.0):
        self.total, self.stream = total, stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every, self.last, self.started = (0.2 if self.tty else every), 0.0, time.monotonic()

    def update(self, step: int, loss: float, metrics: dict | None, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        done = step / self.total
        bar = "#" * int(24 * done) + "." * (24 - int(24 * done))
        rate = step / max(now - self.started, 1e-9)
        text = f"step {step}/{self.total} [{bar}] loss {loss:.4f}"
        if metrics:
            text += f" | val mBA {metrics['mBA']:.4f} MQ {metrics['MQ']:.4f}"
        text += f" | {rate:.2f} step/s"
        self.stream.write(("\r" + text + " " * 4) if self.tty else text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


class Trainer:
    """Trains ``options.block`` on ``train`` (a dataset of ``(image [3,S,S], mask [1,S,S])``)
    and validates on ``val``; blocks that refine a coarse mask get it from ``coarse``, or from
    the dataset when its items carry precomputed coarse logits as a third element.

    ``out`` holds the checkpoint; if it already has one for the same block and configuration,
    training resumes from it (``resume=False`` starts over). ``init`` is a state dict to start
    from (e.g. published BASNet weights). ``device`` defaults to the CPU.
    """

    def __init__(self, options: TrainOptions, train: Dataset, out: str | os.PathLike, *,
                 val: Dataset | None = None, coarse: CoarseSource | None = None,
                 device: torch.device | str = "cpu", init: dict[str, Tensor] | None = None,
                 resume: bool = True, workers: int = 0):
        if len(train) == 0:
            raise InputError("the training set is empty")
        self.options, self.train_set, self.val_set = options, train, val
        self.out, self.device, self.workers = Path(out), torch.device(device), workers
        torch.manual_seed(options.seed)
        self.model = build(options.block, options.config)
        multiple = self.model.size_multiple
        if options.size % multiple or (options.crop or multiple) % multiple:
            raise InputError(f"a {options.block} needs a size and crop that are multiples of {multiple}; "
                             f"got size {options.size}, crop {options.crop}")
        if init is not None:
            missing, unexpected = self.model.load_state_dict(init, strict=False)
            if unexpected or len(missing) == len(self.model.state_dict()):
                raise WeightsError(f"the initial weights do not fit a {options.block} with this configuration "
                                   f"({len(unexpected)} unexpected, {len(missing)} missing keys)")
        self.model.to(self.device).train()
        self.takes_coarse = self.model.takes_coarse
        if self.takes_coarse and coarse is None and getattr(train, "coarse", None) is None:
            raise InputError(f"a {options.block} refines a coarse mask: give a coarse source "
                             f"(a frozen model, or perturbed ground truth) or precomputed coarse logits")
        self.coarse = coarse
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        cuda = self.device.type == "cuda"
        self.amp_dtype = None
        if options.amp and cuda:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if cuda:
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        self.step = 0
        self.metrics: dict | None = None
        if resume and (self.out / CHECKPOINT).is_file():
            self.load_checkpoint(self.out / CHECKPOINT)

    def normalise(self, images: Tensor) -> Tensor:
        """Images in 0..1 as the block takes them: its own input normalisation, as at inference."""
        return normalise(images, self.model.input_normalisation)

    # ------------------------------------------------------------------ schedule and steps

    def learning_rate(self, step: int) -> float:
        o = self.options
        if step < o.warmup:
            return o.lr * (step + 1) / o.warmup
        if o.schedule == "constant":
            return o.lr
        progress = (step - o.warmup) / max(1, o.steps - o.warmup)
        return o.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                              enabled=self.amp_dtype is not None)

    def _coarse_for(self, images: Tensor, masks: Tensor, generator: torch.Generator,
                    given: Tensor | None = None) -> Tensor | None:
        """Full-size coarse logits: ``given`` ones (from the dataset) or the coarse source's."""
        if not self.takes_coarse:
            return None
        if given is not None:
            logits = given.to(self.device).float()
        else:
            with torch.no_grad():
                # A copy: predictions made in inference mode cannot enter an autograd graph.
                logits = self.coarse(images, masks, generator).float().clone()
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def train_step(self, images: Tensor, masks: Tensor, coarse: Tensor | None = None) -> float:
        """One optimisation step on a batch at ``size²`` (with its precomputed coarse logits, if
        the dataset has them); returns the loss."""
        o = self.options
        generator = _generator(o.seed, 1, self.step)
        images, masks = images.to(self.device, non_blocking=True), masks.to(self.device, non_blocking=True)
        coarse = self._coarse_for(images, masks, generator, coarse)
        images, masks, coarse = augment(images, masks, coarse, o.crop, o.flip, generator)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        with self._autocast():
            outputs = training_outputs(self.model, self.normalise(images), coarse)
        loss = block_loss(o.loss_name, outputs, masks, refiner=self.takes_coarse)
        if not torch.isfinite(loss):
            raise InputError(f"the loss became {loss.item()} at step {self.step}; lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if o.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return loss.item()

    def run(self, steps: int | None = None, progress: ProgressLine | None = None) -> list[float]:
        """Train up to step ``steps`` (default ``options.steps``), validating and checkpointing on
        schedule and at the end. Returns the loss of every step taken."""
        stop = self.options.steps if steps is None else min(steps, self.options.steps)
        sampler = StepSampler(len(self.train_set), self.options.batch_size, self.options.seed, self.step, stop)
        loader = DataLoader(self.train_set, batch_sampler=sampler, num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        losses, smooth = [], None
        for images, masks, *coarse in loader:
            losses.append(self.train_step(images, masks, *coarse))
            smooth = losses[-1] if smooth is None else 0.9 * smooth + 0.1 * losses[-1]
            if self.val_set is not None and (self.step % self.options.val_every == 0 or self.step == stop):
                self.metrics = self.validate()
            if self.step % self.options.checkpoint_every == 0 or self.step == stop:
                self.save_checkpoint()
            if progress is not None:
                progress.update(self.step, smooth, self.metrics, force=self.step == stop)
        if progress is not None:
            progress.close()
        return losses

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def predict(self, images: Tensor, masks: Tensor, index: int,
                coarse: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Probabilities ``[B,1,S,S]`` of the block on full validation images, and those of its
        coarse input (None for blocks without one; ``coarse`` if precomputed). The coarse input
        of validation image ``index`` is the same at every validation."""
        images, masks = images.to(self.device), masks.to(self.device)
        coarse = self._coarse_for(images, masks, _generator(self.options.seed, 2, index), coarse)
        was_training = self.model.training
        self.model.eval()
        try:
            with self._autocast():
                logits = block_logits(self.model, self.normalise(images), coarse).float()
        finally:
            self.model.train(was_training)
        return torch.sigmoid(logits), None if coarse is None else torch.sigmoid(coarse)

    def validate(self, dataset: Dataset | None = None) -> dict:
        """Mean mBA and MQ of the block on ``dataset`` (the validation set) at ``size²``, and of its
        coarse input (``coarse_mBA``, ``coarse_MQ``) for refiners and fusions."""
        dataset = self.val_set if dataset is None else dataset
        scores: dict[str, list[float]] = {"mBA": [], "MQ": [], "coarse_mBA": [], "coarse_MQ": []}
        for index in range(len(dataset)):
            image, mask, *given = dataset[index]
            prob, coarse = self.predict(image[None], mask[None], index, *(c[None] for c in given))
            truth = mask[0].numpy() > 0.5
            for prefix, p in (("", prob), ("coarse_", coarse)):
                if p is not None:
                    mba, mq = mba_mq(p[0, 0].cpu().numpy() > 0.5, truth)
                    scores[prefix + "mBA"].append(mba)
                    scores[prefix + "MQ"].append(mq)
        return {key: float(np.nanmean(values)) for key, values in scores.items() if values}

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Write model, optimizer and progress to ``path`` (``out/checkpoint.safetensors``)."""
        path = Path(path) if path is not None else self.out / CHECKPOINT
        tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        state = self.optimizer.state_dict()
        for index, slots in state["state"].items():
            for name, value in slots.items():
                tensors[f"optimizer.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
        meta = {"format": CHECKPOINT_FORMAT, "step": str(self.step), "options": self.options.to_json(),
                "config": json.dumps(self.model.config), "param_groups": json.dumps(state["param_groups"]),
                "scaler": json.dumps(self.scaler.state_dict()), "metrics": json.dumps(self.metrics)}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as staging:
            save_file(tensors, str(staging), metadata=meta)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore model, optimizer and progress from a checkpoint of the same block and configuration."""
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise WeightsError(f"{path} is not a training checkpoint of this package")
            saved = json.loads(meta["options"])
            config = json.loads(json.dumps(self.model.config))  # tuples read back as lists
            if saved["block"] != self.options.block or json.loads(meta["config"]) != config:
                raise WeightsError(f"{path} is a checkpoint of a {saved['block']} with another configuration; "
                                   f"use another output folder or start over")
            names = handle.keys()
            tensors = {key: handle.get_tensor(key) for key in names}
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
        slots: dict[int, dict[str, Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                slots.setdefault(int(index), {})[name] = value
        self.optimizer.load_state_dict({"state": slots, "param_groups": json.loads(meta["param_groups"])})
        self.scaler.load_state_dict(json.loads(meta["scaler"]))
        self.step = int(meta["step"])
        self.metrics = json.loads(meta["metrics"])

    # ------------------------------------------------------------------ export

    def export(self, model_id: str, *, data: str, title: str | None = None, metrics: dict | None = None,
               folder: str | os.PathLike | None = None) -> Path:
        """Write the trained block to ``folder/<model_id>.safetensors`` (``out`` by default) and its
        entry to ``learned_models.json`` there: architecture, training data and settings, metrics."""
        folder = Path(folder) if folder is not None else self.out
        path = folder / f"{model_id}.safetensors"
        o = self.options
        training = {"data": data, "steps": self.step, "size": o.size, "crop": o.crop, "batch_size": o.batch_size,
                    "loss": o.loss_name, "lr": o.lr, "seed": o.seed, "device": self.device.type,
                    "precision": str(self.amp_dtype or torch.float32).replace("torch.", "")}
        metrics = self.metrics if metrics is None else metrics
        digest = save_trained(self.model.state_dict(), path, o.block, self.model.config,
                              {"training": training, "metrics": metrics})
        write_manifest_entry(folder, {
            "id": model_id, "title": title or f"{o.block} trained on {data}", "block": o.block,
            "architecture": get_architecture(o.block).description, "config": self.model.config,
            "filename": path.name,
            "size": path.stat().st_size, "sha256": digest, "training": training, "metrics": metrics})
        return path

