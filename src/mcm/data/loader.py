"""A DataLoader over infinite epochs whose position can be saved and restored.

``make_dataloader`` wraps a ``MediaDataset`` in a ``ResumableLoader``: parallel decoding in
DataLoader workers (one deterministic stream per worker, batches taken round-robin), a
``BadSampleLog`` fed with what the workers skipped, and ``state_dict()`` /
``load_state_dict()`` so a resumed run reads exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader

from mcm.data.badlog import BadSampleLog, SkipEvent
from mcm.data.datasets import MediaDataset, StreamSpec, build_image_dataset, build_video_dataset
from mcm.errors import InputError

logger = logging.getLogger("mcm.data")


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # workers decode; intra-op threads would only oversubscribe


class ResumableLoader:
    """Iterate batches forever (or once over the source with ``one_pass``), resumably.

    Args:
        dataset (MediaDataset): the source.
        batch_size (int): samples per batch (per rank).
        num_workers (int): DataLoader workers; 0 decodes in this process. The sample order
            depends on ``(seed, rank, world_size, max(num_workers, 1))``.
        seed (int): data seed.
        rank (int), world_size (int): this process's share of the data.
        bad_log (BadSampleLog | None): where skips are counted; default one built from the
            dataset config's ``max_bad_fraction`` / ``min_samples_before_abort``.
        one_pass (bool): read each sample once and stop (``mcm data check``, caching);
            the last batch may be short.

    Raises:
        BadDataError: while iterating, when too much of the data is bad.
    """

    def __init__(
        self,
        dataset: MediaDataset,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        bad_log: BadSampleLog | None = None,
        one_pass: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not in [0, world_size={world_size}).")
        if num_workers < 0:
            raise ValueError(f"num_workers={num_workers}: must be >= 0.")
        self.dataset = dataset
        self.batch_size, self.num_workers = batch_size, num_workers
        self.seed, self.rank, self.world_size, self.one_pass = seed, rank, world_size, one_pass
        self.num_streams = max(1, num_workers)
        cfg = dataset.config
        self.bad_log = bad_log or BadSampleLog(cfg.max_bad_fraction, cfg.min_samples_before_abort)
        self.positions = [0] * self.num_streams
        self.batches = 0
        self.samples_consumed = 0

    def __iter__(self):
        self.dataset.spec = StreamSpec(
            seed=self.seed,
            rank=self.rank,
            world_size=self.world_size,
            batch_size=self.batch_size,
            num_streams=self.num_streams,
            positions=list(self.positions),
            first_stream=self.batches % self.num_streams,
            one_pass=self.one_pass,
        )
        kwargs = {}
        if self.num_workers > 0:
            kwargs = {"worker_init_fn": _worker_init, "prefetch_factor": 2}
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=self.num_workers,
            # DataLoader draws its base seed from this, not from the global RNG.
            generator=torch.Generator().manual_seed(self.seed),
            **kwargs,
        )
        for batch in loader:
            stream = batch.pop("_stream")
            self.positions[stream] = batch.pop("_position")
            events = [SkipEvent(*e) for e in batch.pop("_events")]
            self.bad_log.update(events, batch.pop("_seen"))
            if not batch["key"]:
                continue  # bookkeeping only: a stream ended its one pass on skipped samples
            self.batches += 1
            self.samples_consumed += len(batch["key"])
            yield batch

    def state_dict(self) -> dict:
        """The data position: ``samples_consumed`` plus what is needed to continue exactly."""
        return {
            "samples_consumed": self.samples_consumed,
            "batches": self.batches,
            "positions": list(self.positions),
            "num_streams": self.num_streams,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "bad_log": self.bad_log.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``; the next ``iter()`` yields the batch after the last one
        consumed when the state was taken.

        Raises:
            ValueError: the state was taken with another batch size, world size or number of
                workers (the position would mean other samples); the message names the fix.
        """
        for name, mine in (
            ("num_streams", self.num_streams),
            ("batch_size", self.batch_size),
            ("world_size", self.world_size),
            ("rank", self.rank),
        ):
            if state[name] != mine:
                hint = "num_workers" if name == "num_streams" else name
                raise InputError(
                    f"the saved data position was taken with {name}={state[name]}, this run has "
                    f"{mine}: resume with the same {hint} (and batch size, world size) to continue "
                    f"the data stream."
                )
        if state["seed"] != self.seed:
            logger.warning(
                "data seed changed on resume (%s -> %s): the sample order changes",
                state["seed"],
                self.seed,
            )
        self.positions = list(state["positions"])
        self.batches = int(state["batches"])
        self.samples_consumed = int(state["samples_consumed"])
        self.bad_log.load_state_dict(state["bad_log"])


def make_dataloader(
    dataset: MediaDataset,
    batch_size: int,
    num_workers: int | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> ResumableLoader:
    """An infinite, resumable, parallel loader of batches (see ``ResumableLoader``).

    ``num_workers=None`` takes the dataset config's ``num_workers``.
    """
    if num_workers is None:
        num_workers = dataset.config.num_workers
    return ResumableLoader(dataset, batch_size, num_workers, seed, rank, world_size)


def build_video_loader(
    config, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
) -> ResumableLoader:
    """``make_dataloader(build_video_dataset(config), ...)`` with ``config.num_workers``."""
    return make_dataloader(build_video_dataset(config), batch_size, None, seed, rank, world_size)


def build_image_loader(
    config, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
) -> ResumableLoader:
    """``make_dataloader(build_image_dataset(config), ...)`` with ``config.num_workers``."""
    return make_dataloader(build_image_dataset(config), batch_size, None, seed, rank, world_size)
