"""Webdataset shards read and written with ``tarfile`` (no webdataset package).

A shard is a tar file whose members are grouped into samples by key: the member name up to
the first dot of its base name (``clips/000123.mp4`` and ``clips/000123.txt`` are sample
``clips/000123`` with fields ``mp4`` and ``txt``). Members of one sample are consecutive.
Shards are local paths, ``http(s)://`` URLs (streamed, never fully downloaded first) or
``pipe:COMMAND``: the stdout of COMMAND run by the shell, as in webdataset (e.g.
``pipe:aws s3 cp s3://bucket/shard-000.tar -``). Since a source string then runs any
command, ``pipe:`` is refused unless the environment sets ``MCM_ALLOW_PIPE=1``.
"""

from __future__ import annotations

import glob
import io
import os
import re
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mcm.errors import InputError

_BRACE = re.compile(r"\{([^{}]*)\}")

# Why an environment variable and not a data-config field: the command comes from the config
# (or a --set), so a config that names a command could just as well switch the opt-in on.
# The environment belongs to whoever runs mcm, and it reaches DataLoader workers and every
# accelerate rank without further plumbing.
PIPE_ENV = "MCM_ALLOW_PIPE"


def pipe_allowed() -> bool:
    """True when the environment opts in to ``pipe:`` shard URLs (``MCM_ALLOW_PIPE=1``)."""
    return os.environ.get(PIPE_ENV, "") == "1"


def check_pipe_allowed(url: str) -> None:
    """Raise ``ValueError`` for a ``pipe:`` URL unless ``MCM_ALLOW_PIPE=1`` is set."""
    if url.startswith("pipe:") and not pipe_allowed():
        raise InputError(
            f"shard URL {url!r} would run the shell command {url[5:]!r}. mcm runs pipe: "
            f"commands only when you opt in: set the environment variable {PIPE_ENV}=1 "
            f"(e.g. `{PIPE_ENV}=1 mcm train ...`) if you trust this source."
        )


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{000..099}`` numeric ranges (zero padding kept) and ``{a,b}`` alternatives.

    >>> expand_braces("s-{00..02}.tar")
    ['s-00.tar', 's-01.tar', 's-02.tar']
    """
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[: m.start()], pattern[m.end() :]
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.groups()
        width = len(lo) if lo.startswith("0") or len(lo) == len(hi) else 0
        options = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
        if not options:
            raise InputError(f"empty range {{{body}}} in {pattern!r}: the lower end is larger.")
    else:
        options = body.split(",")
    return [x for opt in options for x in expand_braces(head + opt + tail)]


def expand_urls(source: str) -> list[str]:
    """Shard URLs of a source: ``::``-joined patterns, each brace-expanded; a local folder
    gives its ``.tar`` files; a local glob pattern is globbed. Order is kept (sorted within a
    folder or glob).

    Raises:
        ValueError: a ``pipe:`` URL without ``MCM_ALLOW_PIPE=1`` (nothing is run).
        ValueError: no shards found.
    """
    urls: list[str] = []
    for part in source.split("::"):
        part = part.strip()
        if not part:
            continue
        for url in expand_braces(part):
            if url.startswith("pipe:"):
                check_pipe_allowed(url)
                urls.append(url)
            elif url.startswith(("http://", "https://")):
                urls.append(url)
            elif os.path.isdir(url):
                urls.extend(sorted(str(p) for p in Path(url).glob("*.tar")))
            elif any(c in url for c in "*?["):
                urls.extend(sorted(glob.glob(url)))
            else:
                urls.append(url)
    if not urls:
        raise InputError(f"no shards found for {source!r}: check the path or brace pattern.")
    return urls


@contextmanager
def open_stream(url: str, timeout: float = 30.0):
    """A readable binary stream of a shard: local file, http(s) URL or ``pipe:COMMAND``
    (only with ``MCM_ALLOW_PIPE=1``, see ``check_pipe_allowed``)."""
    if url.startswith("pipe:"):
        check_pipe_allowed(url)
        proc = subprocess.Popen(url[5:], shell=True, stdout=subprocess.PIPE)
        try:
            yield proc.stdout
        finally:
            proc.stdout.close()
            proc.wait()
    elif url.startswith(("http://", "https://")):
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            yield resp
    else:
        if not os.path.exists(url):
            raise FileNotFoundError(f"shard {url!r} does not exist.")
        with open(url, "rb") as fh:
            yield fh


_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(key: str, fix: str = "") -> None:
    """Raise ``ValueError`` unless ``key`` is a safe relative tar member name: not absolute,
    no ``..`` component, no backslash, no drive letter. Any of these would write outside the
    folder a shard is extracted into (``tar -x``); ``fix`` replaces the default advice."""
    problem = None
    if "\\" in key:
        problem = "contains a backslash"
    elif key.startswith("/"):
        problem = "is an absolute path"
    elif _DRIVE.match(key):
        problem = "starts with a drive letter"
    elif ".." in key.split("/"):
        problem = "contains a '..' component"
    if problem is not None:
        raise InputError(
            f"webdataset key {key!r} {problem}: as a tar member name it would be written "
            f"outside the shard's folder on extraction. "
            + (fix or "Use a relative key made of plain names, e.g. 'clips/000123'.")
        )


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/000123.seg.mp4`` -> (``dir/000123``, ``seg.mp4``)."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext.lower()


def iter_tar_samples(fileobj) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {ext: bytes})`` for each sample of a tar stream, in order.

    Raises:
        tarfile.TarError, EOFError, OSError: the stream is corrupt or truncated; samples
            before the damage have been yielded.
    """
    key, fields = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            k, ext = split_member_name(member.name)
            if os.path.basename(k).startswith((".", "__")) or not ext:
                continue
            data = tar.extractfile(member).read()
            if k != key:
                if key is not None:
                    yield key, fields
                key, fields = k, {}
            fields[ext] = data
    if key is not None:
        yield key, fields


class ShardWriter:
    """Write samples into numbered tar shards ``{prefix}-{000000}.tar``.

    Args:
        out_dir (str): folder for the shards (created).
        prefix (str): shard file name prefix. Default ``"shard"``.
        max_count (int): samples per shard. Default 1000.
        max_bytes (int): start a new shard before this many bytes. Default 1 GiB.

    Members get mtime 0 and no owner, so packing the same data twice gives identical shards.
    """

    def __init__(
        self, out_dir: str, prefix: str = "shard", max_count: int = 1000, max_bytes: int = 1 << 30
    ):
        if max_count < 1 or max_bytes < 1:
            raise ValueError("max_count and max_bytes must be >= 1.")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_count, self.max_bytes = prefix, max_count, max_bytes
        self.paths: list[str] = []
        self._tar = None
        self._count = self._bytes = 0

    def _next_shard(self) -> None:
        self.close()
        path = self.out_dir / f"{self.prefix}-{len(self.paths):06d}.tar"
        self._tar = tarfile.open(path, "w")  # noqa: SIM115 - closed by close()
        self.paths.append(str(path))
        self._count = self._bytes = 0

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        """Add one sample. ``key`` must be a safe relative name (``check_member_name``) with
        no dot in its base name."""
        check_member_name(key)
        if "." in key.rpartition("/")[2]:
            raise InputError(f"webdataset key {key!r} has a dot in its base name.")
        size = sum(len(v) for v in fields.values())
        if (
            self._tar is None
            or self._count >= self.max_count
            or (self._count > 0 and self._bytes + size > self.max_bytes)
        ):
            self._next_shard()
        for ext, data in fields.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self._count += 1
        self._bytes += size

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None

    def pattern(self) -> str:
        """A brace pattern naming all written shards (for ``source:``)."""
        if not self.paths:
            return ""
        if len(self.paths) == 1:
            return self.paths[0]
        last = len(self.paths) - 1
        return str(self.out_dir / f"{self.prefix}-{{{0:06d}..{last:06d}}}.tar")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
