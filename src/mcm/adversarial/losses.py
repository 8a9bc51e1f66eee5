"""Adversarial losses: hinge losses and the feature-space gradient penalty.

Sign conventions: :func:`hinge_d_loss` is minimised by the discriminator (real logits
pushed above +1, fake below -1); :func:`hinge_g_loss` is minimised by the student
(fake logits pushed up). Logits may have any shape [N, ...]; means run over all
elements, so per-token logits act as a patch discriminator.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """mean(relu(1 - D(real))) + mean(relu(1 + D(fake))) -> scalar."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """-mean(D(fake)) -> scalar."""
    return -fake_logits.mean()


def gradient_penalty(
    critic: Callable[[list[Tensor], Tensor], Tensor],
    real_features: list[Tensor],
    fake_features: list[Tensor],
    real_cond: Tensor,
    fake_cond: Tensor,
    generator: torch.Generator,
    reduction: str = "mean",
) -> Tensor:
    """mean_n (||grad_f D(f_hat_n)|| - 1)^2 on real/fake interpolates in feature space.

    f_hat = u f_real + (1 - u) f_fake with u ~ U[0, 1) per sample (the conditioning is
    interpolated with the same u). D(f_hat_n) is sample n's mean logit, or with
    ``reduction="sum"`` (the reference's) the sum of its L logits, whose gradient is L
    times larger, so that the penalty's adaptive weight (x5 above 100) comes into play; the gradient norm
    runs over all tapped feature maps together. The result is differentiable in the
    critic's parameters (create_graph); features are detached first, so nothing flows
    into the backbone or the generator.

    It is :func:`interpolates` then :func:`penalty_of` on ``critic``'s logits of them.

    Args:
        critic: (features [[N, L_i, C_i]], cond [N, D]) -> logits [N, ...].
        real_features, fake_features: lists of [N, L_i, C_i] with matching shapes.
        real_cond, fake_cond: [N, D]. generator: source of u.
        reduction: "mean" or "sum" over each sample's logits.
    Returns:
        scalar penalty.
    """
    _check_reduction(reduction)
    mixed, cond = interpolates(real_features, fake_features, real_cond, fake_cond, generator)
    return penalty_of(critic(mixed, cond), mixed, reduction)


def interpolates(
    real_features: list[Tensor],
    fake_features: list[Tensor],
    real_cond: Tensor,
    fake_cond: Tensor,
    generator: torch.Generator,
) -> tuple[list[Tensor], Tensor]:
    """The gradient penalty's points: f_hat = u f_real + (1 - u) f_fake per tap, detached
    and requiring grad, and the conditioning mixed with the same u ~ U[0, 1) [N] (one draw
    from ``generator``). Features [[N, L_i, C_i]], cond [N, D] -> ([[N, L_i, C_i]], [N, D])."""
    if [f.shape for f in real_features] != [f.shape for f in fake_features]:
        raise ValueError(
            "Real and fake features differ in shape; give real and fake frames the same size "
            f"({[tuple(f.shape) for f in real_features]} vs {[tuple(f.shape) for f in fake_features]})."
        )
    N = real_features[0].shape[0]
    u = torch.rand(N, generator=generator, device=generator.device)
    u = u.to(device=real_features[0].device, dtype=real_features[0].dtype)
    mixed = [
        (u.view(N, 1, 1) * r.detach() + (1 - u.view(N, 1, 1)) * f.detach()).requires_grad_(True)
        for r, f in zip(real_features, fake_features)
    ]
    cond = u.view(N, 1) * real_cond.detach() + (1 - u.view(N, 1)) * fake_cond.detach()
    return mixed, cond


def penalty_of(logits: Tensor, mixed: list[Tensor], reduction: str = "mean") -> Tensor:
    """mean_n (||grad of D(f_hat_n) w.r.t. the ``mixed`` features|| - 1)^2, differentiable in
    the critic's parameters: ``logits`` [N, ...] are the critic's on ``mixed`` (from
    :func:`interpolates`); D(f_hat_n) is the mean of sample n's logits, or their sum with
    ``reduction="sum"``. A scalar."""
    _check_reduction(reduction)
    N = mixed[0].shape[0]
    logits = logits.reshape(N, -1)
    score = logits.sum(dim=1) if reduction == "sum" else logits.mean(dim=1)  # (N,)
    grads = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    norm = torch.sqrt(sum(g.reshape(N, -1).pow(2).sum(dim=1) for g in grads))  # (N,)
    return ((norm - 1.0) ** 2).mean()


def _check_reduction(reduction: str) -> None:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}.")


class AdaptivePenaltyWeight:
    """The gradient-penalty weight: 1e-5, multiplied by 5 when the penalty exceeds 100,
    at most once every 500 steps.

    Args:
        initial (float): starting weight. Default: 1e-5.
        factor (float): multiplier on an increase. Default: 5.
        threshold (float): penalty value above which the weight grows. Default: 100.
        interval (int): minimum number of steps between two increases. Default: 500.
    """

    def __init__(
        self,
        initial: float = 1e-5,
        factor: float = 5.0,
        threshold: float = 100.0,
        interval: int = 500,
    ):
        if initial < 0 or factor < 1 or interval < 1:
            raise ValueError(
                f"Need initial >= 0, factor >= 1, interval >= 1; got {initial}, {factor}, {interval}."
            )
        self.weight = initial
        self.factor, self.threshold, self.interval = factor, threshold, interval
        self.last_increase: int | None = None

    def update(self, penalty: float, step: int) -> float:
        """Record this step's penalty value; returns the weight to use now."""
        due = self.last_increase is None or step - self.last_increase >= self.interval
        if penalty > self.threshold and due:
            self.weight *= self.factor
            self.last_increase = step
        return self.weight

    def state_dict(self) -> dict:
        return {"weight": self.weight, "last_increase": self.last_increase}

    def load_state_dict(self, state: dict) -> None:
        self.weight = float(state["weight"])
        self.last_increase = state["last_increase"]
