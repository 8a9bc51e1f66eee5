"""The one trainer on a recipe of its own (a linear regression): accumulation, checkpoints,
resume (exact, and past a corrupt checkpoint), SIGTERM/SIGINT, max_seconds, non-finite
losses. The students' recipe has its own tests (test_training_recipe.py)."""

import os
import signal

import pytest
import torch

from mcm.training import checkpoint as ckpt
from mcm.training.config import TrainLoopConfig
from mcm.training.ema import EMA
from mcm.training.optim import Optimization, make_optimizer, make_scheduler
from mcm.training.signals import StopSignals
from mcm.training.trainer import NonFiniteLossError, Trainer


class LinearRecipe(Trainer):
    """y = x @ w_true + noise, fitted by a linear layer; every draw from ``self.generator``."""

    name = "linear"

    def __init__(self, out, resume=None, on_loss=None, **loop):
        defaults = dict(max_steps=6, lr=0.05, warmup_steps=0, lr_schedule="constant",
                        checkpoint_every=2, keep_checkpoints=5, log_every=1, tracker="none",
                        progress=False)  # fmt: skip
        super().__init__(TrainLoopConfig(**{**defaults, **loop}), out, resume)
        self.on_loss = on_loss  # a hook for the tests: sees each loss before its backward

    def setup(self):
        self.make_accelerator(cpu=True)
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.generator = torch.Generator().manual_seed(1)
        self.w_true = torch.tensor([[1.0], [-2.0], [0.5]])
        params = list(self.model.parameters())
        optim = make_optimizer(params, self.loop.lr)
        sched = make_scheduler(optim, "constant", self.loop.warmup_steps, self.loop.max_steps)
        self.optimizers["main"] = Optimization(optim, sched, params, max_grad_norm=1.0)
        self.emas["linear_ema"] = EMA(params, 0.9)
        super().setup()

    def next_batch(self):
        x = torch.randn(8, 3, generator=self.generator)
        return x, x @ self.w_true + 0.01 * torch.randn(8, 1, generator=self.generator)

    def _loss_step(self, batch):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.model(x), y)
        if self.on_loss is not None:
            loss = self.on_loss(self, loss)
        return {"loss": loss.detach()} if self.backward(loss) else None

    def _checkpoint_weights(self):
        return {"linear": self.model.state_dict()}

    def _load_weights(self, path):
        self.model.load_state_dict(ckpt.load_weights(path / "linear.safetensors"))


def run(out, **kw):
    recipe = LinearRecipe(out, **kw)
    recipe.setup()
    logged = recipe.train()
    return recipe, logged


def weights(recipe):
    return torch.cat([p.detach().flatten() for p in recipe.model.parameters()])


def test_loss_goes_down_and_checkpoints_are_written(tmp_path):
    losses = []
    recipe, logged = run(tmp_path, max_steps=40, checkpoint_every=20,
                         on_loss=lambda r, loss: losses.append(loss.item()) or loss)  # fmt: skip
    assert losses[-1] < 0.1 * losses[0] and logged["lr_main"] == pytest.approx(0.05)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-20", "checkpoint-40"]
    assert recipe.exit_status == 0 and recipe.stats["steps_run"] == 40
    saved = ckpt.load_weights(tmp_path / "checkpoint-40" / "linear_ema.safetensors")
    assert int(saved["num_updates"]) == 40


def test_resume_equals_the_uninterrupted_run_and_skips_a_corrupt_checkpoint(tmp_path):
    full, _ = run(tmp_path / "full")
    part, _ = run(tmp_path / "part", max_steps=4)
    (tmp_path / "part" / "checkpoint-4" / "state.pt").write_bytes(b"not a checkpoint")
    resumed, _ = run(tmp_path / "part", resume="latest")  # checkpoint-4 is skipped for 2
    torch.testing.assert_close(weights(resumed), weights(full), rtol=0, atol=0)
    (tmp_path / "part" / "checkpoint-4" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt.CheckpointError, match="checkpoint-4.*state.pt"):
        run(tmp_path / "part", resume=str(tmp_path / "part" / "checkpoint-4"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_the_exit_status(tmp_path, signum):
    def kill_at_step_3(recipe, loss):
        if recipe.step == 2:  # the third step's loss: the signal lands mid-step
            os.kill(os.getpid(), signum)
        return loss

    stopped, _ = run(tmp_path / "a", on_loss=kill_at_step_3)
    assert stopped.step == 3 and stopped.exit_status == 128 + signum
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "a")] == [
        "checkpoint-2",
        "checkpoint-3",
    ]
    assert signal.getsignal(signum) is not stopped.signals._handler  # handlers restored
    resumed, _ = run(tmp_path / "a", resume="latest")
    full, _ = run(tmp_path / "b")
    assert resumed.exit_status == 0
    torch.testing.assert_close(weights(resumed), weights(full), rtol=0, atol=0)


def test_max_seconds_stops_with_a_checkpoint(tmp_path):
    recipe, _ = run(tmp_path, max_steps=10_000, max_seconds=0.0, checkpoint_every=0)
    assert recipe.step == 0 and recipe.exit_status == 0
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-0"]


def test_non_finite_losses_are_skipped_then_stop_the_run(tmp_path):
    nan_at = {1, 2}

    def poison(recipe, loss):
        return loss * float("nan") if recipe.nonfinite_total + recipe.step in nan_at else loss

    recipe, _ = run(tmp_path / "skip", on_loss=poison, max_nonfinite=3)
    assert recipe.step == 6 and recipe.nonfinite_total == 2
    with pytest.raises(NonFiniteLossError, match="train.max_nonfinite=2"):
        run(tmp_path / "stop", on_loss=lambda r, loss: loss * float("nan"), max_nonfinite=2)


def test_nested_stop_signals_pass_a_signal_outwards_and_inherit_an_earlier_one():
    passed_on = []
    with StopSignals(on_signal=passed_on.append) as outer:
        with StopSignals() as inner:
            os.kill(os.getpid(), signal.SIGTERM)
        assert inner.received == outer.received == signal.SIGTERM
        assert passed_on == [signal.SIGTERM]
        with StopSignals() as later:  # began after the signal: it stops at once
            assert later.received == signal.SIGTERM


def test_fused_adamw_takes_the_default_step():
    # make_optimizer(fused=True), what the distillation recipe uses on the CPU: the same
    # AdamW update as torch's default implementation, up to rounding.
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 7)), torch.nn.Parameter(torch.randn(3))]
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fused = make_optimizer(params, 1e-2, weight_decay=0.1, fused=True)
    default = make_optimizer(copies, 1e-2, weight_decay=0.1)
    assert fused.defaults["fused"] and not default.defaults["fused"]
    for _ in range(3):
        for p, q in zip(params, copies):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        fused.step()
        default.step()
    for p, q in zip(params, copies):
        torch.testing.assert_close(p, q)
