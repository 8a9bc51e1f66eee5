"""Bad input never stops a run and never hides: it is skipped, counted per reason and named.

Workers do not log; they hand each skip back to the training process inside the batch
(see ``mcm.data.loader``), where one ``BadSampleLog`` names each bad file once (logger
``mcm.data``), keeps per-reason counts of distinct files and stops the run with
``BadDataError`` once the bad fraction passes the configured limit.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from mcm.errors import UserError

logger = logging.getLogger("mcm.data")

# Why a sample was skipped. Everything here except the filters counts as bad input.
BAD_REASONS = {
    "missing_file": "the file does not exist",
    "empty_file": "the file has zero bytes",
    "download_error": "the remote file could not be fetched",
    "undecodable": "not a media file PyAV can open (wrong format, corrupt header)",
    "no_video_stream": "no video stream (e.g. audio-only)",
    "decode_error": "decoding failed part-way (truncated or corrupt data)",
    "truncated": "the file is cut short (no index, or fewer frames than its header announces)",
    "too_short": "fewer frames than num_frames (x stride) needs",
    "too_small": "shorter side below min_side",
    "missing_caption": "no caption found for the file",
    "bad_caption": "the caption is unreadable (not UTF-8) or empty",
    "bad_shard": "a webdataset shard could not be read to the end",
    "bad_record": "a manifest row could not be parsed or has no path",
    "no_media": "a webdataset sample has no media member of the wanted kind",
}
FILTER_REASONS = {
    "filtered_aesthetic": "aesthetic score below min_aesthetic",
    "filtered_watermark": "watermark probability above max_watermark_prob",
}


class BadDataError(UserError, ValueError):
    """Too much of the data is bad: the run stops rather than silently train on less."""


class BadSample(Exception):
    """Raised by decoders for one sample; ``reason`` is a key of ``BAD_REASONS`` or
    ``FILTER_REASONS``."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in BAD_REASONS and reason not in FILTER_REASONS:
            raise ValueError(f"unknown bad-sample reason {reason!r}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SkipEvent:
    """One skipped sample as reported by a worker.

    Attributes:
        name: the file path, URL or ``shard:key`` that was skipped.
        reason: key of ``BAD_REASONS`` / ``FILTER_REASONS``.
        detail: the underlying error message.
        first_pass: True when this is the sample's first visit in this stream (the bad
            fraction counts distinct samples, so repeat visits in later epochs do not count).
    """

    name: str
    reason: str
    detail: str = ""
    first_pass: bool = True


class BadSampleLog:
    """Counts skipped samples per reason, logs each skipped file once, enforces the limit.

    Args:
        max_bad_fraction (float): stop once ``bad / seen`` exceeds this (distinct samples).
        min_samples (int): only enforce the fraction after this many distinct samples.
        log (bool): log each newly skipped file at WARNING on logger ``mcm.data``.

    Raises:
        BadDataError: from ``check()`` / ``update()`` when the limit is passed.
    """

    def __init__(self, max_bad_fraction: float = 0.05, min_samples: int = 100, log: bool = True):
        self.max_bad_fraction = max_bad_fraction
        self.min_samples = min_samples
        self.log = log
        self.seen = 0  # distinct samples attempted (first visits)
        self.bad = 0  # distinct samples found bad (first visits)
        self.filtered = 0  # distinct samples dropped by a filter (not bad)
        self.skipped: dict[str, tuple[str, str]] = {}  # name -> (reason, detail)

    @property
    def counts(self) -> Counter:
        """Distinct skipped files per reason."""
        return Counter(reason for reason, _ in self.skipped.values())

    @property
    def bad_counts(self) -> dict[str, int]:
        """Distinct bad (not filtered) files per reason, sorted by reason."""
        return {r: n for r, n in sorted(self.counts.items()) if r in BAD_REASONS}

    @property
    def bad_fraction(self) -> float:
        return self.bad / self.seen if self.seen else 0.0

    def update(self, events: list[SkipEvent], attempted_first_pass: int) -> None:
        """Merge a worker's report: ``attempted_first_pass`` first visits, of which ``events``
        (all visits) were skipped. Logs new names, then enforces the limit."""
        self.seen += attempted_first_pass
        for ev in events:
            is_bad = ev.reason in BAD_REASONS
            if ev.first_pass:
                if is_bad:
                    self.bad += 1
                else:
                    self.filtered += 1
            if ev.name not in self.skipped:
                self.skipped[ev.name] = (ev.reason, ev.detail)
                if self.log and is_bad:
                    detail = f": {ev.detail}" if ev.detail else ""
                    logger.warning("skipped %s (%s%s)", ev.name, ev.reason, detail)
        self.check()

    def check(self) -> None:
        """Raise ``BadDataError`` when more than ``max_bad_fraction`` of the distinct samples
        seen (at least ``min_samples``) were bad."""
        if self.seen >= self.min_samples and self.bad_fraction > self.max_bad_fraction:
            raise BadDataError(
                f"{self.bad} of {self.seen} samples ({self.bad_fraction:.1%}) were bad, above "
                f"max_bad_fraction={self.max_bad_fraction:g}. Per reason: {self.bad_counts}. "
                f"{_advice(self.bad_counts)}Run `mcm data check SOURCE` for the full list, fix "
                f"or remove those files, or raise max_bad_fraction if this is expected."
            )

    def summary(self) -> str:
        """One line: totals and per-reason counts (what `mcm train` prints at the end)."""
        reasons = ", ".join(f"{r}={n}" for r, n in sorted(self.counts.items())) or "none"
        return (
            f"data: {self.seen} distinct samples seen, {self.bad} bad "
            f"({self.bad_fraction:.1%}), {self.filtered} filtered; skipped per reason: {reasons}"
        )

    def state_dict(self) -> dict:
        return {
            "seen": self.seen,
            "bad": self.bad,
            "filtered": self.filtered,
            "skipped": {k: list(v) for k, v in self.skipped.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.seen = int(state["seen"])
        self.bad = int(state["bad"])
        self.filtered = int(state["filtered"])
        self.skipped = {k: (v[0], v[1]) for k, v in state["skipped"].items()}


def _advice(counts: dict[str, int]) -> str:
    if not counts:
        return ""
    top = max(counts, key=counts.get)
    if top == "too_short":
        return (
            "Most clips are too short: lower num_frames or frame_stride, or set "
            "short_clip_policy: lower_stride. "
        )
    if top in ("missing_caption", "bad_caption"):
        return "Most captions are missing or unreadable: check caption_column / captions_file. "
    if top == "missing_file":
        return "Most files are missing: check media_root / path_column. "
    return ""
