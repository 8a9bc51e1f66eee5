"""SIGINT / SIGTERM as a request to stop after the current step (the trainer then saves a
checkpoint), instead of an exception in the middle of a step."""

from __future__ import annotations

import contextlib
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals(contextlib.AbstractContextManager):
    """Within the block, SIGINT and SIGTERM set :attr:`received` (the signal number) instead
    of interrupting; the previous handlers come back on exit. Outside the main thread,
    where Python cannot install handlers, signals keep their usual effect."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, _frame) -> None:
        self.received = signum

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not in the main thread
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
