"""Argument types the commands share: each turns a bad value into argparse's one-line error
naming the flag (``argument --steps: must be an integer >= 1, got 0``), before any work.

No heavy imports: the parsers are built for ``mcm COMMAND --help`` too.
"""

from __future__ import annotations

import argparse
import re


def integer(minimum: int | None = None, maximum: int | None = None):
    """An ``int`` in ``[minimum, maximum]`` (either end may be open)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        _check_range(value, text, minimum, maximum, "an integer")
        return value

    return parse


def number(minimum: float | None = None, maximum: float | None = None, above: float | None = None):
    """A finite ``float`` in ``[minimum, maximum]``, or ``> above``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if above is not None and not value > above:
            raise argparse.ArgumentTypeError(f"must be a number > {above:g}, got {text}")
        _check_range(value, text, minimum, maximum, "a number")
        return value

    return parse


def _check_range(value, text, minimum, maximum, what):
    if minimum is not None and maximum is not None and not minimum <= value <= maximum:
        raise argparse.ArgumentTypeError(f"must be {what} in {minimum}..{maximum}, got {text}")
    if minimum is not None and value < minimum:
        raise argparse.ArgumentTypeError(f"must be {what} >= {minimum}, got {text}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be {what} <= {maximum}, got {text}")


count = integer(minimum=1)  # steps, frames, batch sizes, ...: >= 1
non_negative = integer(minimum=0)  # seeds, sizes where 0 means "none"

_DEVICE = re.compile(r"^(cpu|mps|(cuda|xpu)(:\d+)?)$")


def device(text: str) -> str:
    """A torch device name: cpu, cuda, cuda:N, mps, xpu[:N]."""
    if not _DEVICE.match(text):
        raise argparse.ArgumentTypeError(
            f"must be a device such as cpu, cuda or cuda:1, got {text!r}"
        )
    return text


__all__ = ["count", "device", "integer", "non_negative", "number"]
