"""Progress bars for the command line (tqdm), fed by the library's ``progress(done, total)``
callbacks: over the images of a batch, the windows of the high-resolution pass, video frames.

Bars go to stderr and only when it is a terminal, so logs and pipes stay clean; ``quiet``
turns them off everywhere.
"""

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


def bars_wanted(quiet: bool = False) -> bool:
    """Whether to draw bars: not ``quiet``, and stderr is a terminal."""
    return not quiet and sys.stderr.isatty()


class Bar:
    """A ``progress(done, total)`` callable that draws a tqdm bar with time estimates; the bar
    starts over when ``total`` changes (the high-res pass counts images, then windows)."""

    def __init__(self, description: str, *, enabled: bool, unit: str = "it", position: int = 0):
        self._bar = tqdm(total=0, desc=description, unit=unit, position=position, leave=position == 0,
                         disable=not enabled, dynamic_ncols=True)

    def __call__(self, done: int, total: int) -> None:
        if self._bar.total != total:
            self._bar.reset(total=total)
        self._bar.update(done - self._bar.n)

    def describe(self, description: str) -> None:
        self._bar.set_description_str(description)

    def write(self, line: str) -> None:
        """Print a line above the bar (or plainly when bars are off)."""
        self._bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self._bar.close()


@contextmanager
def progress_bar(description: str, *, enabled: bool, unit: str = "it", position: int = 0) -> Iterator[Bar]:
    """A :class:`Bar`, closed on the way out."""
    bar = Bar(description, enabled=enabled, unit=unit, position=position)
    try:
        yield bar
    finally:
        bar.close()
