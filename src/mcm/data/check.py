"""``mcm data check`` and ``mcm data pack``: one pass over a source, before training.

``check_source`` decodes every sample exactly as training would (same config, same code)
and reports what would be skipped, per reason and by name. ``pack_source`` turns a folder
or manifest into webdataset shards holding the original media bytes plus ``.txt`` and
``.json``, leaving out what the check finds bad.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from mcm.data.badlog import BAD_REASONS, FILTER_REASONS
from mcm.data.datasets import ImageDataset, MediaDataset, VideoDataset, read_caption
from mcm.data.loader import ResumableLoader
from mcm.data.webdataset import ShardWriter, check_member_name
from mcm.errors import InputError


@dataclass
class CheckReport:
    """What one pass over a source found.

    Attributes:
        source, format, kind: what was checked.
        seen: samples visited; good: samples that decode into training samples.
        bad: per-reason counts of bad samples; filtered: per-reason counts of filtered ones.
        skipped: ``[name, reason, detail]`` for every skipped sample.
        max_bad_fraction, min_samples_before_abort: the configured limit (training enforces it
            after that many samples); ok: the bad fraction is within it.
    """

    source: str
    format: str
    kind: str
    seen: int
    good: int
    bad: dict[str, int]
    filtered: dict[str, int]
    skipped: list[list[str]] = field(default_factory=list)
    max_bad_fraction: float = 0.05
    min_samples_before_abort: int = 100
    good_keys: list[str] = field(default_factory=list, repr=False)

    @property
    def num_bad(self) -> int:
        return sum(self.bad.values())

    @property
    def bad_fraction(self) -> float:
        return self.num_bad / self.seen if self.seen else 0.0

    @property
    def ok(self) -> bool:
        return self.good > 0 and self.bad_fraction <= self.max_bad_fraction

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("good_keys")
        d.update(num_bad=self.num_bad, bad_fraction=self.bad_fraction, ok=self.ok)
        return d

    def format_text(self) -> str:
        lines = [
            f"source:   {self.source} ({self.format}, {self.kind})",
            f"samples:  {self.seen} seen, {self.good} good, {self.num_bad} bad "
            f"({self.bad_fraction:.1%}; limit max_bad_fraction={self.max_bad_fraction:g}), "
            f"{sum(self.filtered.values())} filtered",
        ]
        for reason, n in {**self.bad, **self.filtered}.items():
            what = BAD_REASONS.get(reason) or FILTER_REASONS.get(reason, "")
            lines.append(f"  {reason:<18} {n:>6}  {what}")
        if self.skipped:
            lines.append("skipped:")
            lines += [f"  {name}  [{reason}] {detail}" for name, reason, detail in self.skipped]
        if not self.ok and self.good and self.seen < self.min_samples_before_abort:
            lines.append(
                f"note:     training enforces max_bad_fraction only after "
                f"min_samples_before_abort={self.min_samples_before_abort} samples; this source "
                f"has {self.seen}, so training would skip these files and go on."
            )
        lines.append(
            "result:   "
            + ("OK" if self.ok else "TOO MUCH BAD DATA" if self.good else "NO USABLE DATA")
        )
        return "\n".join(lines)


def _dataset(config, kind: str) -> MediaDataset:
    cfg = dataclasses.replace(config, shuffle=False)
    return ImageDataset(cfg) if kind == "image" else VideoDataset(cfg)


def check_source(
    config, kind: str = "video", num_workers: int = 0, batch_size: int = 8, seed: int = 0
) -> CheckReport:
    """Decode every sample of ``config``'s source once, as training would; never raises on
    bad samples (they are reported)."""
    dataset = _dataset(config, kind)
    loader = ResumableLoader(dataset, batch_size, num_workers, seed, one_pass=True)
    loader.bad_log.max_bad_fraction = 1.0
    loader.bad_log.log = False
    good_keys: list[str] = []
    for batch in loader:
        good_keys += batch["key"]
    log = loader.bad_log
    counts = log.counts
    return CheckReport(
        source=config.source,
        format=dataset.format,
        kind=kind,
        seen=log.seen,
        good=len(good_keys),
        bad={r: n for r, n in sorted(counts.items()) if r in BAD_REASONS},
        filtered={r: n for r, n in sorted(counts.items()) if r in FILTER_REASONS},
        skipped=[[name, reason, detail] for name, (reason, detail) in sorted(log.skipped.items())],
        max_bad_fraction=config.max_bad_fraction,
        min_samples_before_abort=config.min_samples_before_abort,
        good_keys=good_keys,
    )


def _wds_key(key: str, taken: set[str]) -> str:
    head, _, base = key.rpartition("/")
    base = base.replace(".", "_") or "sample"
    out = f"{head}/{base}" if head else base
    n, candidate = 1, out
    while candidate in taken:
        candidate, n = f"{out}_{n}", n + 1
    taken.add(candidate)
    return candidate


def pack_source(
    config,
    out_dir: str | Path,
    kind: str = "video",
    shard_size: int = 1000,
    max_shard_bytes: int = 1 << 30,
    verify: bool = True,
    num_workers: int = 0,
    prefix: str = "shard",
) -> tuple[ShardWriter, CheckReport | None]:
    """Write a folder/CSV/JSONL source as webdataset shards in ``out_dir``.

    Each sample keeps its original media bytes (``.mp4``, ``.png``, ...), its caption as
    ``.txt`` and ``{"key", "caption", "source", ...manifest columns}`` as ``.json``. With
    ``verify`` the source is checked first (``check_source``) and bad samples are left out;
    without it only samples with a readable caption and a non-empty local file are packed.

    Returns:
        (the writer, whose ``pattern()`` names the shards; the check report or None)

    Raises:
        ValueError: the source is already webdataset shards, or URLs (download first); or a
            sample's key would be an unsafe tar member name (absolute, ``..``, backslash,
            drive letter), checked for every record before anything is written.
    """
    dataset = _dataset(config, kind)
    if dataset.records is None:
        raise InputError(f"{config.source} is already webdataset shards: nothing to pack.")
    for rec in dataset.records:
        check_member_name(
            rec.key,
            f"It comes from {rec.location} in {config.source}: give that row a relative key "
            "without '..' (the manifest's key/id column, e.g. 'clips/000123'), or keep the "
            "media under the manifest's folder (media_root) and use relative paths.",
        )
    report = check_source(config, kind, num_workers) if verify else None
    good = set(report.good_keys) if report is not None else None
    taken: set[str] = set()
    with ShardWriter(str(out_dir), prefix, shard_size, max_shard_bytes) as writer:
        for rec in dataset.records:
            if good is not None and rec.key not in good:
                continue
            if rec.error is not None or rec.location.startswith(("http://", "https://")):
                continue
            path = Path(rec.location)
            try:
                caption = rec.caption if rec.caption is not None else read_caption(rec.caption_path)
                data = path.read_bytes()
            except Exception:  # noqa: BLE001 - unreadable samples are left out, as in training
                continue
            if not data:
                continue
            meta = {"key": rec.key, "caption": caption, "source": str(path), **rec.meta}
            ext = path.suffix.lstrip(".").lower()
            writer.write(
                _wds_key(rec.key, taken),
                {
                    ext: data,
                    "txt": caption.encode("utf-8"),
                    "json": json.dumps(meta, ensure_ascii=False).encode("utf-8"),
                },
            )
    return writer, report
