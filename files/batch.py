"""Run one job per file; a file that fails is reported and the rest of the batch goes on."""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..errors import MeticulousError

Item = TypeVar("Item")


@dataclass(frozen=True)
class Failure:
    """A file that failed: its ``name`` and a one-line ``reason``."""

    name: str
    reason: str


@dataclass
class BatchReport:
    """What a batch did: ``done`` names, ``failed`` :class:`Failure` s, in the order run."""

    done: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 when every file was done, 1 when any failed."""
        return 1 if self.failed else 0

    def summary(self) -> str:
        """One line for the end of a run, naming every failed file."""
        total = len(self.done) + len(self.failed)
        line = f"{len(self.done)} of {total} images done"
        if self.failed:
            line += f", {len(self.failed)} failed: " + ", ".join(f.name for f in self.failed)
        return line


def describe(err: Exception) -> str:
    """A one-line reason for a per-file failure: our own messages as they are, file-system
    errors with their path, anything else with its type (it is likely a bug worth reporting)."""
    if isinstance(err, MeticulousError):
        return str(err)
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return f"{type(err).__name__}: {err}"


def run_each(items: Iterable[Item], job: Callable[[Item], object], *, name: Callable[[Item], str] = str,
             report: BatchReport | None = None, on_failure: Callable[[Failure], None] | None = None,
             on_item: Callable[[], None] | None = None) -> BatchReport:
    """Call ``job(item)`` for every item, collecting failures instead of stopping.

    ``Exception`` s are failures of that item; ``KeyboardInterrupt`` and other
    ``BaseException`` s (a SIGTERM turned into :class:`~.interrupts.Terminated`) end the batch.
    ``on_failure`` is told of each failure as it happens, ``on_item`` after every item.
    """
    report = report if report is not None else BatchReport()
    for item in items:
        try:
            job(item)
        except Exception as err:  # noqa: BLE001 - one file's failure must not end the batch
            failure = Failure(name(item), describe(err))
            report.failed.append(failure)
            if on_failure is not None:
                on_failure(failure)
        else:
            report.done.append(name(item))
        if on_item is not None:
            on_item()
    return report


def readable_images(paths: list[Path], report: BatchReport,
                    on_failure: Callable[[Failure], None] | None = None) -> list[Path]:
    """The ``paths`` whose headers read and whose size is within limits (see
    :func:`~.images.probe_image`); the others go into ``report.failed``. Cheap (no pixels are
    decoded), so a batch can report them before it loads a model."""
    from .images import probe_image

    readable = []
    run_each(paths, lambda path: (probe_image(path), readable.append(path)), name=str, report=report,
             on_failure=on_failure)
    report.done.clear()  # read, not done: the real jobs report them
    return readable
