"""Deterministic sample streams: which sample each (rank, worker stream) reads, in what order.

The training data is an infinite sequence per rank, split into ``num_streams`` streams (one
per DataLoader worker). A stream's order is a pure function of the seed, rank, world size,
stream index and number of streams, and every stream knows its position (samples read), so a
resumed run continues exactly where it stopped.

* Indexable sources (folder, CSV, JSONL): epoch ``e`` is a permutation of the records drawn
  from ``(seed, e)``; the epochs are concatenated into one global sequence and global
  position ``j`` belongs to rank ``j % world`` and stream ``(j // world) % num_streams``.
  A sample's own random draws (start frame, crop) are seeded by ``(seed, j)``, so its
  content does not depend on the number of workers.
* Webdataset shards: each epoch the shard list is permuted from ``(seed, e)`` and dealt to
  the ``world * num_streams`` streams (or, with fewer shards than streams, every stream reads
  every shard and keeps every ``world * num_streams``-th sample). ``resampled`` instead draws
  shards with replacement from a per-stream generator. Samples then pass a seeded shuffle
  buffer that never mixes two epochs (see ``_shuffled``), so every first visit of a sample
  leaves the buffer within its epoch and the bad-sample log counts the samples seen.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mcm.data.webdataset import iter_tar_samples, open_stream

_MASK = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (a splitmix64 chain): stable across processes and runs."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h + (int(v) & _MASK) + 0x9E3779B97F4A7C15) & _MASK
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK
        h ^= h >> 31
    return h & ((1 << 63) - 1)


def generator_for(*values: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(mix_seed(*values))
    return g


@dataclass(frozen=True)
class StreamItem:
    """One step of a stream.

    Attributes:
        position: the stream's position of this item (0, 1, 2, ...).
        first_pass: first visit of this sample (global epoch 0), for the bad fraction.
        sample_seed: seed of this sample's own random draws.
        payload: a ``Record`` index (indexable) or ``(url, key, fields)`` (webdataset);
            ``(url, None, error)`` reports an unreadable shard.
    """

    position: int
    first_pass: bool
    sample_seed: int
    payload: object


def indexed_stream(
    num_records: int,
    seed: int,
    shuffle: bool,
    rank: int,
    world_size: int,
    stream: int,
    num_streams: int,
    start: int = 0,
    one_pass: bool = False,
) -> Iterator[StreamItem]:
    """Record indices of one stream, from position ``start`` (a direct jump, no replay)."""
    step = world_size * num_streams
    offset = stream * world_size + rank
    perm_epoch, perm = -1, None
    m = start
    while True:
        j = m * step + offset
        epoch, i = divmod(j, num_records)
        if one_pass and epoch > 0:
            return
        if shuffle and epoch != perm_epoch:
            perm = torch.randperm(num_records, generator=generator_for(seed, epoch)).tolist()
            perm_epoch = epoch
        index = perm[i] if shuffle else i
        yield StreamItem(m, epoch == 0, mix_seed(seed, j), index)
        m += 1


def shard_stream(
    urls: list[str],
    seed: int,
    shuffle: bool,
    resampled: bool,
    rank: int,
    world_size: int,
    stream: int,
    num_streams: int,
    one_pass: bool = False,
) -> Iterator[tuple[str, int, int, int]]:
    """``(url, keep_modulus, keep_residue, epoch)`` for each shard this stream reads: of the
    shard's samples it keeps those with ``index % keep_modulus == keep_residue``. Resampled
    shards have no epochs: every visit is epoch 0 (a first visit, so the bad fraction is one
    of visits)."""
    units = world_size * num_streams
    slot = stream * world_size + rank
    if resampled and not one_pass:
        g = random.Random(mix_seed(seed, rank, stream, num_streams, 1))
        while True:
            yield urls[g.randrange(len(urls))], 1, 0, 0
    epoch = 0
    while True:
        order = list(range(len(urls)))
        if shuffle:
            order = torch.randperm(len(urls), generator=generator_for(seed, epoch)).tolist()
        if len(urls) >= units:
            for s in order[slot::units]:
                yield urls[s], 1, 0, epoch
        else:
            for s in order:
                yield urls[s], units, slot, epoch
        if one_pass:
            return
        epoch += 1


def webdataset_stream(
    urls: list[str],
    seed: int,
    shuffle: bool,
    resampled: bool,
    shuffle_buffer: int,
    rank: int,
    world_size: int,
    stream: int,
    num_streams: int,
    start: int = 0,
    one_pass: bool = False,
    timeout: float = 30.0,
) -> Iterator[StreamItem]:
    """Samples ``(url, key, fields)`` of one stream through a seeded shuffle buffer; the
    first ``start`` are read but not returned (fast-forward without decoding)."""
    shards = shard_stream(
        urls, seed, shuffle, resampled, rank, world_size, stream, num_streams, one_pass
    )
    raw = _shard_samples(shards, timeout)
    if shuffle:
        g = random.Random(mix_seed(seed, rank, stream, num_streams, 2))
        raw = _shuffled(raw, shuffle_buffer, g)
    base = mix_seed(seed, rank, stream, num_streams, 3)
    for m, (epoch, payload) in enumerate(raw):
        if m >= start:
            yield StreamItem(m, epoch == 0, mix_seed(base, m), payload)


def _shard_samples(shards, timeout: float):
    """``(epoch, (url, key, fields))`` for each kept sample of the shards, in order."""
    for url, modulus, residue, epoch in shards:
        try:
            with open_stream(url, timeout) as fh:
                for n, (key, fields) in enumerate(iter_tar_samples(fh)):
                    if n % modulus == residue:
                        yield epoch, (url, key, fields)
        except (tarfile.TarError, EOFError, OSError) as e:
            yield epoch, (url, None, f"{type(e).__name__}: {e}")


def _shuffled(items, size: int, g: random.Random):
    """A seeded shuffle buffer of ``size`` over ``(epoch, payload)`` items that empties itself
    (shuffled) before the first item of the next epoch enters.

    Why epochs are not mixed: with a source smaller than the buffer, a buffer filled across
    epochs holds many copies of each sample, reads the shards size/N times before its first
    sample and returns a first visit only now and then, so the bad-sample log counted "0 seen"
    and ``max_bad_fraction`` never applied. Per epoch, a small source is a full permutation.
    """
    buf, epoch = [], None
    for item in items:
        if item[0] != epoch:
            g.shuffle(buf)
            yield from buf
            buf, epoch = [], item[0]
        if len(buf) < size:
            buf.append(item)
            continue
        i = g.randrange(size)
        buf[i], item = item, buf[i]
        yield item
    g.shuffle(buf)
    yield from buf
