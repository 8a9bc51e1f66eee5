"""The training loop of every mcm model: the students (:mod:`mcm.training.recipe`), the world
teacher (:mod:`mcm.world.teacher_training`) and the world probes (:mod:`mcm.world.probe_training`).

A recipe subclasses :class:`Trainer` and writes what is its own:

* ``setup()``: the accelerator (:meth:`make_accelerator`), the models,
  ``self.optimizers`` (name -> :class:`Optimization`), ``self.emas`` (file stem ->
  :class:`~mcm.training.ema.EMA`) and the data; last, :meth:`Trainer.setup` (resume);
* ``next_batch()``; ``_loss_step(batch)``: the losses, each passed to :meth:`backward` (in
  the order that frees memory best), and the terms to log, or None when a loss was not
  finite (nothing is updated then);
* ``_checkpoint_weights()`` / ``_load_weights(path)``: what a checkpoint holds beyond the
  optimisers, schedules, EMAs, step, random state and data position.

The loop (:meth:`train`) is the same for all: ``grad_accum`` micro-batches per optimiser
step, gradients averaged over processes (the trainable parameters are small: no DDP
wrapper), clipping, the optimisers and LR schedules, the EMAs, logging, validation and
checkpoints, a stop on SIGINT/SIGTERM (checkpoint first) or ``train.max_seconds``, and
repeated non-finite losses stopping the run with a message.
"""

from __future__ import annotations

import json
import logging
import signal
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, gather_object
from tqdm.auto import tqdm

from mcm.training import checkpoint as ckpt
from mcm.training.config import TrainLoopConfig
from mcm.training.config_io import flatten, save_config, to_dict
from mcm.training.ema import EMA
from mcm.training.log_file import TrainLog, console_above
from mcm.training.optim import Optimization
from mcm.training.sharding import is_sharded
from mcm.training.signals import StopSignals

log = logging.getLogger("mcm.train")

TRAIN_LOG = "train.log"  # in the output folder: the run's log lines, appended on a resume


class NonFiniteLossError(RuntimeError):
    pass


class Trainer:
    """The loop; subclasses provide setup, next_batch and _loss_step (module docstring).

    The main process writes the ``mcm`` log lines of the run (the start, a line of loss terms
    every ``log_every`` steps, warnings, checkpoints, the stop) to ``output_dir/train.log``
    from :meth:`setup` to :meth:`cleanup`, appending to the file of an earlier run.

    Args:
        loop: the loop's settings (steps, accumulation, checkpoints, logging, ...).
        output_dir: where checkpoints, ``train.log`` (and the subclass's outputs) go.
        resume: ``"latest"`` or a checkpoint path to continue from; None starts afresh.
        config: what ``config.yaml`` records (an object with ``save_config`` support);
            None writes none.
    """

    name = "train"  # progress bar label

    def __init__(
        self, loop: TrainLoopConfig, output_dir: str | Path, resume: str | None = None, config=None
    ):
        self.loop = loop
        self.out = Path(output_dir)
        self.resume = resume
        self.config = config
        self.step = 0
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        self.optimizers: dict[str, Optimization] = {}
        self.emas: dict[str, EMA] = {}  # file stem -> EMA, updated after every step
        self.generator: torch.Generator | None = None
        self.stats: dict = {}
        self.signals = StopSignals()
        self.exit_status = 0  # 128 + the signal number after a stop by SIGINT/SIGTERM
        self.phase = "setup"  # "warm-up", "train", "finish": what an interruption cut short
        self._saved_step = -1
        self.train_log: TrainLog | None = None

    # ------------------------------------------------------------------ what a recipe writes
    def next_batch(self):
        raise NotImplementedError(f"{type(self).__name__} must define next_batch()")

    def _loss_step(self, batch) -> dict[str, float] | None:
        raise NotImplementedError(f"{type(self).__name__} must define _loss_step(batch)")

    def _checkpoint_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """file stem -> tensors, saved as ``<stem>.safetensors`` in every checkpoint."""
        return {}

    def _save_weights(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        ckpt.save_weights(tensors, path)

    def _load_weights(self, path: Path) -> None:
        """Read back what :meth:`_checkpoint_weights` saved."""

    def _extra_state(self) -> dict:
        """Small extra state for ``state.pt`` (tensors and plain values only)."""
        return {}

    def _load_extra_state(self, state: dict) -> None:
        pass

    def _data_state(self) -> dict:
        """This rank's data position (restored by :meth:`_load_data_state`)."""
        return {}

    def _load_data_state(self, state: dict) -> None:
        pass

    def validate(self) -> None:
        """Called every ``validate_every`` steps; nothing by default."""

    def warm_up(self, on_step: Callable[[int], None] | None = None) -> bool:
        """Steps before the loop (nothing by default); True when a stop signal cut it short."""
        return False

    def finish(self) -> None:
        """After the last step of a run that was not stopped (e.g. the export)."""

    # ------------------------------------------------------------------ setup
    def make_accelerator(self, **kwargs) -> Accelerator:
        """The accelerator (mixed precision, tracker)."""
        loop = self.loop
        self.accelerator = Accelerator(
            mixed_precision=loop.mixed_precision,
            log_with=None if loop.tracker == "none" else loop.tracker,
            project_dir=str(self.out),
            **kwargs,
        )
        return self.accelerator

    def setup(self) -> None:
        """Called last by a recipe's setup, once everything it builds from the config (models,
        data) has been built: the output folder (nothing is written before), the tracker,
        then the checkpoint to continue from if asked. With ``resume="latest"`` a checkpoint
        that does not load is skipped (with a warning that names it and why)."""
        acc = self.accelerator
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            self.train_log = TrainLog(self.out / TRAIN_LOG)
            weakref.finalize(self, self.train_log.close)  # a caller that never calls cleanup
            ckpt.remove_stale_temporaries(self.out)
            if self.config is not None:
                save_config(self.config, self.out / "config.yaml")
            if self.loop.tracker != "none":
                acc.init_trackers(
                    "mcm", config=flatten(to_dict(self.config)) if self.config else {}
                )
        if self.resume:
            try:
                ckpt.resume(self.out, self.resume, self.load_checkpoint)
            except BaseException:
                self._close_log()
                raise

    # ------------------------------------------------------------------ the loop
    def train(self, on_step: Callable[[int], None] | None = None) -> dict:
        """Run to ``loop.max_steps``; ``on_step(step)`` is called after every optimiser step.

        Returns the last logged loss terms; :attr:`stats` holds the run's throughput."""
        loop, acc = self.loop, self.accelerator
        main = acc.is_main_process
        if main:  # before the bar is drawn: its line would take this one
            log.info(
                "Training %s from step %d to %d in %s",
                self.name,
                self.step,
                loop.max_steps,
                self.out,
            )
        bar = tqdm(
            total=loop.max_steps,
            initial=self.step,
            disable=None if main and loop.progress else True,  # None: on a terminal only
            desc=self.name,
            unit="step",
            dynamic_ncols=True,
        )
        t_start = t_last = time.perf_counter()
        first_step, logged = self.step, {}
        with self.signals, console_above(bar):
            self.phase = "warm-up"
            stop = self.warm_up(on_step)
            self.phase = "train"
            while not stop and self.step < loop.max_steps:
                if (stop := self._stopping()) or self._out_of_time(t_start):
                    break
                terms = self.train_step()
                if terms is None:  # non-finite loss: nothing was updated
                    continue
                self.step += 1
                if on_step is not None:
                    on_step(self.step)
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items() if k.startswith("loss")})
                if self.step % loop.log_every == 0 or self.step == loop.max_steps:
                    now = time.perf_counter()
                    terms["steps_per_s"] = loop.log_every / max(now - t_last, 1e-9)
                    terms["nonfinite_total"] = self.nonfinite_total
                    if torch.cuda.is_available():
                        terms["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
                    t_last, logged = now, terms
                    if main:
                        log.info("step %d/%d: %s", self.step, loop.max_steps, _terms_text(terms))
                    if loop.tracker != "none":
                        acc.log(terms, step=self.step)
                if loop.validate_every and self.step % loop.validate_every == 0:
                    self.validate()
                if loop.checkpoint_every and self.step % loop.checkpoint_every == 0:
                    self.save_checkpoint()
            bar.close()
            wall = time.perf_counter() - t_start
            steps_run = self.step - first_step
            self.stats = {
                "steps": self.step,
                "steps_run": steps_run,
                "wall_s": round(wall, 2),
                "steps_per_s": round(steps_run / wall, 3) if wall > 0 else 0.0,
                "stopped_by_signal": stop,
            }
            if stop:
                log.warning(
                    "Received signal %s during the %s: saving a checkpoint at step %d and "
                    "stopping; continue with --resume latest.",
                    self.signals.received or "(on another rank)",
                    self.phase,
                    self.step,
                )
            if stop or self._saved_step != self.step:
                self.save_checkpoint()
            if main and not stop:
                log.info(
                    "Trained %s to step %d: %d steps in %.1f s (%.3g steps/s)",
                    self.name,
                    self.step,
                    steps_run,
                    wall,
                    self.stats["steps_per_s"],
                )
            if not stop:
                self.phase = "finish"
                self.finish()  # a signal now is honoured when it is done
        received = self.signals.received or (signal.SIGTERM if stop else None)
        self.exit_status = 128 + received if received else 0
        return logged

    def train_step(self) -> dict[str, float] | None:
        """One optimiser step: ``grad_accum`` micro-batches, then the updates.

        Returns the loss terms averaged over the micro-batches, or None when a loss was
        non-finite (no update)."""
        accum = self.loop.grad_accum
        sums: dict[str, float] = {}
        for _ in range(accum):
            terms = self._loss_step(self.next_batch())
            if terms is None:
                return self._skip_nonfinite()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) / accum
        self.nonfinite_in_row = 0
        self._all_reduce_grads()
        sums.update(self._update())
        return sums

    def backward(self, loss: torch.Tensor) -> bool:
        """Back-propagate ``loss`` (scaled for accumulation) if it is finite on every rank."""
        if not self._finite(loss):
            return False
        self.accelerator.backward(loss / self.loop.grad_accum)
        return True

    def _update(self) -> dict[str, float]:
        """Clip, step every optimiser and its schedule, then the EMAs; the logged terms."""
        terms = {}
        for name, o in self.optimizers.items():
            terms[f"grad_norm_{name}"] = float(self._clip_grad_norm(o.params, o.max_grad_norm))
            o.optimizer.step()
            o.scheduler.step()
            o.optimizer.zero_grad(set_to_none=True)
            terms[f"lr_{name}"] = o.scheduler.get_last_lr()[0]
        for ema in self.emas.values():
            ema.update()
        return terms

    def _clip_grad_norm(self, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Clip to ``max_norm`` (0: no clipping); returns the norm before clipping."""
        if max_norm > 0:
            return self.accelerator.clip_grad_norm_(params, max_norm)
        norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        return torch.stack(norms).norm() if norms else torch.zeros(())

    def _skip_nonfinite(self) -> None:
        for o in self.optimizers.values():
            o.optimizer.zero_grad(set_to_none=True)
        self.nonfinite_in_row += 1
        self.nonfinite_total += 1
        log.warning(
            "Non-finite loss at step %d: step skipped (%d in a row).",
            self.step,
            self.nonfinite_in_row,
        )
        if self.nonfinite_in_row >= self.loop.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} non-finite losses in a row (train.max_nonfinite="
                f"{self.loop.max_nonfinite}); lower train.lr, check the data, or use "
                "train.mixed_precision=no/bf16 instead of fp16."
            )
        return None

    def _out_of_time(self, t_start: float) -> bool:
        limit = self.loop.max_seconds  # on any rank: all stop after the same step
        return limit is not None and self._any_rank(time.perf_counter() - t_start > limit)

    # ------------------------------------------------------------------ several processes
    # Every step ends in a gradient all-reduce, so skipping a step or stopping is agreed by
    # all ranks; under FSDP every forward is a collective, so random choices come from rank 0.
    def _all_reduce_grads(self, params: list | None = None) -> None:
        """Average the gradients of ``params`` (default: every optimiser's) over the ranks."""
        if self.accelerator.num_processes == 1:
            return
        if params is None:
            params = [p for o in self.optimizers.values() for p in o.params]
        for p in params:
            if is_sharded(p):  # FSDP already averaged it over the ranks in the backward
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad = self.accelerator.reduce(p.grad, reduction="mean")

    def _any_rank(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    def _stopping(self) -> bool:
        """Whether a SIGINT/SIGTERM arrived (on any rank: all stop after the same step)."""
        return self._any_rank(self.signals.received is not None)

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every rank."""
        return not self._any_rank(not bool(torch.isfinite(loss)))

    def _from_rank0(self, flag: bool) -> bool:
        """Rank 0's value of a random choice."""
        t = torch.tensor([float(flag)], device=self.accelerator.device)
        return bool(broadcast(t, from_process=0).item())

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoint-<step>`` atomically (rank 0) with the full weights and
        optimiser states, so that any number of ranks can resume from it."""
        acc = self.accelerator
        acc.wait_for_everyone()
        weights = self._checkpoint_weights()  # every rank: FSDP gathers the shards
        weights.update({stem: ema.state_dict() for stem, ema in self.emas.items()})
        optimizers = {n: self._optimizer_state(o.optimizer) for n, o in self.optimizers.items()}
        ranks = gather_object([self._rank_state()])  # every rank's draws and data position
        self._saved_step = self.step
        if not acc.is_main_process:
            return None

        def write(tmp: Path) -> None:
            for stem, tensors in weights.items():
                self._save_weights(tensors, tmp / f"{stem}.safetensors")
            state = {
                "step": self.step,
                "optimizers": optimizers,
                "schedulers": {n: o.scheduler.state_dict() for n, o in self.optimizers.items()},
                "ranks": ranks,
                "nonfinite_total": self.nonfinite_total,
                "extra": self._extra_state(),
            }
            ckpt.save_state(state, tmp / "state.pt")
            if self.config is not None:
                save_config(self.config, tmp / "config.yaml")
            seed = self.loop.seed
            (tmp / "meta.json").write_text(json.dumps({"step": self.step, "seed": seed}))

        path = ckpt.write_checkpoint(self.out, self.step, write, self.loop.keep_checkpoints)
        log.info("Saved %s", path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("seed") != self.loop.seed:
            log.warning(
                "Resuming a run seeded %s with train.seed=%s.", meta.get("seed"), self.loop.seed
            )
        self._load_weights(path)
        state = ckpt.load_state(path / "state.pt")
        self.step = self._saved_step = state["step"]
        for name, o in self.optimizers.items():
            o.optimizer.load_state_dict(state["optimizers"][name])
            o.scheduler.load_state_dict(state["schedulers"][name])
        for stem, ema in self.emas.items():
            ema.load_state_dict(ckpt.load_weights(path / f"{stem}.safetensors"))
        self.nonfinite_total = state["nonfinite_total"]
        self._load_extra_state(state["extra"])
        self._load_rank_state(state["ranks"])
        log.info("Resumed from %s at step %d", path, self.step)

    def _optimizer_state(self, optimizer) -> dict:
        return optimizer.state_dict()

    def _rank_state(self) -> dict:
        """What differs between ranks: the random draws and the data position."""
        state = {"torch_rng": torch.get_rng_state(), "data": self._data_state()}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def _load_rank_state(self, ranks: list[dict]) -> None:
        """This rank's draws and data position when the checkpoint was taken on as many
        ranks; otherwise fresh draws (seeded by seed, rank and step) and data streams."""
        acc = self.accelerator
        if len(ranks) != acc.num_processes:
            log.warning(
                "Resuming on %d process(es) from a checkpoint of %d: weights, optimisers, "
                "schedulers and step are restored; data streams and random draws start afresh.",
                acc.num_processes,
                len(ranks),
            )
            if self.generator is not None:
                seed = self.loop.seed * 1_000_003 + acc.process_index + 7_919 * self.step
                self.generator.manual_seed(seed)
            return
        own = ranks[acc.process_index]
        torch.set_rng_state(own["torch_rng"])
        if self.generator is not None:
            self.generator.set_state(own["generator"].cpu())
        self._load_data_state(own["data"])

    def run(self) -> dict:
        """setup, train, cleanup; the loop's stats (:attr:`stats`)."""
        self.setup()
        try:
            self.train()
        finally:
            self.cleanup()
        return self.stats

    def cleanup(self) -> None:
        """End the tracker's run and close ``train.log``."""
        if self.loop.tracker != "none":
            self.accelerator.end_training()
        self._close_log()

    def _close_log(self) -> None:
        if self.train_log is not None:
            self.train_log.close()
            self.train_log = None


def _terms_text(terms: dict[str, float]) -> str:
    """``loss 0.0123, lr_main 0.05, ...``: the logged terms, 4 significant digits."""
    return ", ".join(f"{k} {v:.4g}" for k, v in terms.items())
