"""SIGTERM (and SIGHUP) as exceptions, so that cleanup code runs when a run is stopped.

Python turns SIGINT into ``KeyboardInterrupt``, which unwinds the stack and lets
:func:`~.atomic.atomic_path` remove its temporary file; SIGTERM, by default, kills the process
on the spot and leaves that file behind. Inside :func:`signals_as_exceptions` it raises
:class:`Terminated` instead. (SIGKILL cannot be caught: a run killed that way may leave a
``.NAME.<pid>-<random>.partial`` file, safe to delete.)
"""

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(BaseException):
    """The process was asked to stop by ``signum``; a ``BaseException`` like
    ``KeyboardInterrupt``, so ``except Exception`` blocks do not swallow it."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise(signum, frame):
    raise Terminated(signum)


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block SIGTERM and SIGHUP raise :class:`Terminated` in the main thread.

    Outside the main thread (signal handlers can only be set there) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    previous = {name: signal.signal(getattr(signal, name), _raise) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
