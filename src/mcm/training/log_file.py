"""``train.log``: the log lines of a training run (``mcm.*`` loggers, INFO and above), kept in
its output folder by :class:`~mcm.training.trainer.Trainer`, appended to on a resume.

The file gets INFO lines whatever the console shows: the ``mcm`` logger is set to INFO while
the file is open (its previous level comes back on :meth:`TrainLog.close`). A process whose
application configured no logging printed warnings on stderr through ``logging.lastResort``;
a handler on ``mcm`` ends that fallback, so one that does the same is added, unless stderr
*is* the log file (the demo's second training process), which would get each warning twice.
One log is open per process: opening one closes the one before (a run whose caller never
called ``cleanup``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
LOGGER = "mcm"


class TrainLog:
    """Appends the ``mcm`` loggers' records of INFO and above to ``path`` until :meth:`close`."""

    _current: TrainLog | None = None

    def __init__(self, path: str | Path):
        if TrainLog._current is not None:
            TrainLog._current.close()
        self.path = Path(path)
        self.logger = logging.getLogger(LOGGER)
        self.file = logging.FileHandler(self.path, mode="a", encoding="utf-8")
        self.file.setLevel(logging.INFO)
        self.file.setFormatter(logging.Formatter(FORMAT))
        self.handlers: list[logging.Handler] = [self.file]
        if not self.logger.hasHandlers() and not _is_stderr(self.path):
            console = logging.StreamHandler()  # what logging.lastResort printed
            console.setLevel(logging.WARNING)
            self.handlers.append(console)
        self.level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.INFO:
            self.logger.setLevel(logging.INFO)
        for handler in self.handlers:
            self.logger.addHandler(handler)
        TrainLog._current = self

    def close(self) -> None:
        """Stop writing (idempotent) and give the ``mcm`` logger its level back."""
        if TrainLog._current is not self:
            return
        for handler in self.handlers:
            self.logger.removeHandler(handler)
        self.file.close()
        self.logger.setLevel(self.level)
        TrainLog._current = None


def _is_stderr(path: Path) -> bool:
    """Whether this process's stderr is the file at ``path``."""
    try:
        return os.path.samestat(os.fstat(sys.stderr.fileno()), os.stat(path))
    except (AttributeError, OSError, ValueError):  # no stderr, or one without a descriptor
        return False


@contextlib.contextmanager
def console_above(bar: tqdm) -> Iterator[None]:
    """While ``bar`` is drawn, the console handlers of the root and ``mcm`` loggers write
    their lines above it (``tqdm.write``) instead of into the bar's line."""
    if bar.disable:
        yield
        return
    consoles = [
        handler
        for logger in (logging.getLogger(), logging.getLogger(LOGGER))
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream in (sys.stdout, sys.stderr)
    ]
    streams = [handler.stream for handler in consoles]
    for handler, stream in zip(consoles, streams):
        handler.setStream(_AboveBars(stream))
    try:
        yield
    finally:
        for handler, stream in zip(consoles, streams):
            handler.setStream(stream)


class _AboveBars:
    """A text stream whose writes tqdm puts above the progress bars drawn on ``stream``."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        tqdm.write(text, file=self.stream, end="")

    def flush(self) -> None:
        self.stream.flush()
