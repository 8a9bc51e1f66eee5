"""SIGINT / SIGTERM as a request to stop at the next step boundary (the trainer then saves
a checkpoint), instead of an exception in the middle of a step."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A run stopped by SIGINT/SIGTERM after saving what it could; ``exit_status`` is
    128 + the signal number (130, 143), what a shell reports for a process it killed."""

    def __init__(self, signum: int, what: str = "run"):
        super().__init__(f"the {what} was stopped by signal {signal.Signals(signum).name}")
        self.exit_status = 128 + signum


class StopSignals(contextlib.AbstractContextManager):
    """Within the block, SIGINT and SIGTERM set :attr:`received` (the signal number) instead
    of interrupting, and call ``on_signal(signum)`` if given (e.g. to pass the signal on to
    a child process). Blocks nest: an inner block passes a signal on to the outer one's
    handler, and starts stopped if the outer one already got one. The previous handlers
    come back on exit. Outside the main thread, where
    Python cannot install handlers, signals keep their usual effect."""

    def __init__(self, on_signal: Callable[[int], None] | None = None):
        self.received: int | None = None
        self.on_signal = on_signal
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:
        self.received = signum
        if self.on_signal is not None:
            self.on_signal(signum)
        outer = self._previous.get(signum)
        if isinstance(getattr(outer, "__self__", None), StopSignals):
            outer(signum, frame)

    def __enter__(self) -> StopSignals:
        self.received = None
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not in the main thread
                self._previous[sig] = signal.signal(sig, self._handler)
            outer = getattr(self._previous.get(sig), "__self__", None)
            if isinstance(outer, StopSignals) and outer.received is not None:
                self.received = outer.received  # a signal before this block began
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
