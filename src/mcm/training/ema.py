"""The exponential moving average every trainer uses (torch's EMA update, one class).

shadow <- decay * shadow + (1 - decay) * weight after each optimiser step, with
:func:`torch.optim.swa_utils.get_ema_multi_avg_fn` doing the update. It serves the
target-side motion head (the shadow is a frozen copy of the head), the LoRA target of
``method.target=ema`` (swapped into the student for the target's forward) and the world
teacher's saved weights (copied into the model at the end, with the warm-up below).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


class EMA:
    """EMA of ``params``; the shadow starts as a copy of them.

    Args:
        params: the live (trained) parameters.
        decay: EMA decay in [0, 1].
        warmup: use ``min(decay, (1 + n) / (10 + n))`` at the n-th update (n from 0), so
            that early averages forget the random initialisation quickly (diffusers'
            ``EMAModel`` without ``use_ema_warmup``).
        shadow: tensors to hold the average (e.g. the parameters of a frozen copy of the
            module); default: fresh copies of ``params``.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        decay: float,
        warmup: bool = False,
        shadow: Iterable[Tensor] | None = None,
    ):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1]; got {decay}.")
        self.params = list(params)
        if not self.params:
            raise ValueError("EMA of no parameters: pass the parameters that are trained.")
        if shadow is None:
            self.shadow = [p.detach().clone() for p in self.params]
        else:
            self.shadow = [s.requires_grad_(False) for s in shadow]
            with torch.no_grad():
                for s, p in zip(self.shadow, self.params, strict=True):
                    s.copy_(p)
        self.decay, self.warmup, self.num_updates = decay, warmup, 0

    @classmethod
    def of_module(cls, module: nn.Module, decay: float) -> tuple[EMA, nn.Module]:
        """(the EMA, a frozen copy of ``module`` whose parameters are its shadow)."""
        average = copy.deepcopy(module).requires_grad_(False)
        return cls(module.parameters(), decay, shadow=average.parameters()), average

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
        return self.decay

    @torch.no_grad()
    def update(self) -> None:
        """One step of the average towards the live parameters."""
        update = get_ema_multi_avg_fn(self.current_decay())
        update(self.shadow, [p.detach().to(s.dtype) for p, s in zip(self.params, self.shadow)], 0)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, params: Iterable[Tensor] | None = None) -> None:
        """Write the average into ``params`` (default: the live parameters)."""
        for p, s in zip(self.params if params is None else params, self.shadow, strict=True):
            p.copy_(s)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The average in the live parameters for the block; the live values come back after.

        The swap writes through ``.data``, behind autograd's version counters: a graph
        recorded before the block (the student's forward with gradient) still backpropagates
        afterwards, through the live values it was recorded with.
        """
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.data.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(self.params, live):
                    p.data.copy_(w)

    def state_dict(self) -> dict[str, Tensor]:
        """Flat tensors (safetensors-ready): ``shadow.<i>`` and ``num_updates`` (0-d)."""
        state = {f"shadow.{i}": s.detach().clone() for i, s in enumerate(self.shadow)}
        state["num_updates"] = torch.tensor(self.num_updates, dtype=torch.int64)
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        shadow = [state[f"shadow.{i}"] for i in range(len(self.shadow)) if f"shadow.{i}" in state]
        if len(shadow) != len(self.shadow) or any(
            a.shape != b.shape for a, b in zip(shadow, self.shadow)
        ):
            raise ValueError(
                "The EMA state does not match these parameters (another model or LoRA rank?)."
            )
        for s, saved in zip(self.shadow, shadow):
            s.copy_(saved)
        self.num_updates = int(state.get("num_updates", 0))
