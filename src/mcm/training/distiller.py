"""One MCM distillation step, readable next to the method page.

The step is split in two calls because the student and the discriminator have separate
optimisers:

* :meth:`MCMDistiller.generator_step` - L_G = L_mcd + lambda_adv * L_adv_G, minimised by
  the student (LoRA) and the learnable motion head;
* :meth:`MCMDistiller.discriminator_step` - L_D = hinge(real, fake) + gp_weight * GP,
  minimised by the discriminator heads only.

Plain LCM is this step with motion="raw", no discriminator and no mixed trajectories.
All randomness of a step is drawn up front by :meth:`MCMDistiller.sample_draws` from one
generator, so a test can pass hand-written draws.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
import torch.nn as nn
from pydantic import Field, model_validator
from torch import Tensor

from mcm.adversarial import FrameDiscriminator, LatentUNetBackbone, hinge_g_loss
from mcm.diffusion import (
    add_noise,
    consistency_function,
    ddim_step,
    flow_grid,
    guidance_scale_embedding,
    lcm_guidance,
    sample_consistency_ode,
    skipping_step_grid,
    training_timesteps,
    x0_to_eps,
)
from mcm.errors import ConfigError
from mcm.models import disable_adapters
from mcm.motion import DISTANCES
from mcm.schema import (
    Fraction,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    config_dataclass,
)


@config_dataclass
class MCMConfig:
    """Hyperparameters of the method (defaults: the reference recipe's). Validated when made
    (mcm.schema): each annotation is the field's range or choices."""

    # N: skipping-step DDIM grid over the teacher's T timesteps; on a flow-matching teacher
    # the N-step shifted sigma grid, which holds the n-step sampling grids for n dividing N
    num_ode_steps: PositiveInt = 50
    # The timestep proposal: a fraction of each batch drawn at the top of the grid (the
    # one-step point, where the student maps pure noise to a video), the rest uniformly
    # over the grid (the reference: uniform, i.e. 0). P(top) = top_fraction + (1 -
    # top_fraction) / N.
    top_fraction: Fraction = 0.0
    # The target at the top of the grid: 1 (the reference) y = f_target(x_{t_n}, t_n); 2: the
    # target network's deterministic 2-step sample from x_{t_n}, through the 2-step grid's
    # midpoint (T/2): the student's 2-step samples are sharp where its 1-step map is still
    # an average, so the one-step map learns from them. Needs an even num_ode_steps.
    top_target_steps: Annotated[int, Field(ge=1, le=2)] = 1
    w_min: NonNegativeFloat = 5.0  # guidance scale w ~ U[w_min, w_max], LCM form
    w_max: NonNegativeFloat = 15.0
    w_embedding_dim: NonNegativeInt = (
        0  # >0: give w to the student as timestep_cond (full-model recipe: 256)
    )
    sigma_data: PositiveFloat = 0.5  # consistency boundary scalings
    timestep_scaling: PositiveFloat = 4.0  # s in c_skip/c_out (reference MCM 4; diffusers LCM 10)
    pure_noise_at_top: bool = True  # x_{t_{n+k}} = eps when t_{n+k} = T - 1 (reference behaviour)
    distance: Literal["huber", "l2"] = "huber"  # "huber" (pseudo-Huber, c = huber_c) or "l2"
    huber_c: PositiveFloat = 0.001
    lambda_adv: NonNegativeFloat = (
        1.0  # weight of the generator's adversarial loss (0 or no D: off)
    )
    lambda_real: Fraction = (
        0.5  # P(real-data trajectory); 1 - lambda_real: the student's own sample
    )
    mixed_trajectories: bool = True  # only meaningful with a discriminator
    frames_per_video: PositiveInt = 2  # fake frames per generated video for the discriminator
    # What the adversarial term (and the discriminator's fakes) judge: "consistency" (the
    # reference) the student's output f_theta(x_{t_{n+k}}, t_{n+k}) at the drawn timestep;
    # "one_step" its one-step sample f_theta(x_T, T) from the step's start noise, with
    # gradient: the video a one-step user sees (one more student forward and backward on
    # the steps whose trajectory is real; the mixed trajectory's data is that sample);
    # "both": half the judged frames from each (as many fakes as reals)
    adversarial_sample: Literal["consistency", "one_step", "both"] = "consistency"
    # The one-step sample learns from the multi-step student (0: off, the reference): with
    # N > 0 the step adds lambda_one_step * d(f_theta(x_T, T), y_N), y_N the target
    # network's deterministic N-step sample (no grad) from the same start noise x_T, at the
    # N-step sampler's timesteps (d: the consistency distance, on latents)
    one_step_target_steps: NonNegativeInt = 0
    lambda_one_step: NonNegativeFloat = 1.0
    # the network that takes those N steps: "target" (the consistency loss's target
    # network) or "ema" (an EMA of the student's LoRA, decay target_ema_decay, used only
    # here: a target that lags the student, so the pull cannot move it along)
    one_step_target: Literal["target", "ema"] = "target"
    # which frames the discriminator sees: "random" latent frames, or only the "first" (Wan:
    # the frame its causal VAE encodes alone, as it encodes an image); "auto": first for
    # a causal video VAE, else random; "clip": frames_per_video random frames of the decoded
    # clip, each judged as an image (a latent discriminator sees each one encoded again as a
    # one-frame clip): with Wan, every frame is judged, not only the first
    fake_frames: Literal["auto", "random", "first", "clip"] = "auto"
    # The discriminator step's fakes: false (the reference's) runs the frozen backbone on
    # them again, with the step's own augmentation and noise draws; true reuses the features
    # of the generator's adversarial term (the same frames, with that term's draws): one
    # backbone call fewer per step (the latent backbone's is a teacher-encoder pass)
    reuse_fake_features: bool = False
    target: Literal["online", "ema"] = (
        "online"  # "online" (student under no_grad) or "ema" (EMA of the LoRA)
    )

    @model_validator(mode="after")
    def _top_target_midpoint(self) -> MCMConfig:
        if self.top_target_steps == 2 and self.num_ode_steps % 2:
            raise ValueError(
                f"top_target_steps 2 needs an even num_ode_steps (the 2-step midpoint is a grid "
                f"point); got {self.num_ode_steps}: use {self.num_ode_steps + 1}."
            )
        return self

    @model_validator(mode="after")
    def _guidance_range(self) -> MCMConfig:
        if self.w_min > self.w_max:
            raise ValueError(
                f"w_min ({self.w_min}) must be <= w_max ({self.w_max}): w is drawn from "
                "[w_min, w_max]."
            )
        return self


@dataclass
class Draws:
    """Every random quantity of one step. Shapes for a latent batch [B, C, F, h, w]."""

    index: Tensor  # [B] long: grid index i, t_{n+k} = tau_i
    noise: Tensor  # [B, C, F, h, w]: eps for x_{t_{n+k}}
    w: Tensor  # [B]: guidance scales
    use_real: bool  # mixed trajectory: True -> data z0, False -> the student's own sample
    start_noise: Tensor  # [B, C, F, h, w]: x_T for the student's one-step sample
    frame_index: Tensor  # [k] long: frames of each video shown to the discriminator
    seed: int  # seeds the discriminator's own draws (augmentation, noise level)


@dataclass
class DistillBatch:
    """What a step consumes. Text embeddings come from the frozen text encoder."""

    latents: Tensor  # z0 [B, C, F, h, w], VAE latents times the scaling factor
    text_emb: Tensor  # [B, L, D] caption embeddings
    uncond_emb: Tensor  # [B, L, D] empty-prompt embeddings
    pooled_text: Tensor | None = None  # [B, D'] discriminator conditioning for the fakes
    real_frames: Tensor | None = None  # [N, C, h, w] (latent D) or [N, 3, H, W] (pixel D)
    real_pooled_text: Tensor | None = None  # [N, D'] their captions


@dataclass
class GeneratorOutput:
    loss: Tensor  # scalar L_G, minimised by the student and the motion head
    terms: dict[str, Tensor] = field(default_factory=dict)  # detached scalars for logging
    fake_frames: Tensor | None = None  # [B*k, ...] detached, for the discriminator step
    fake_pooled_text: Tensor | None = None
    # per tap [B*k, L_i, C_i], detached: the fakes' backbone features (reuse_fake_features)
    fake_features: list[Tensor] | None = None


class MCMDistiller:
    """The MCM step over a student, its teacher, a target and optional discriminator.

    Args:
        cfg: MCMConfig.
        student: a ``VideoDenoiser`` carrying the trainable LoRA.
        teacher: a callable context manager factory giving the teacher: by default the
            student with its adapters disabled (one UNet in memory); pass a separate frozen
            denoiser via ``teacher_model`` instead.
        motion: m for the student side; motion_target: m for the target side (the EMA
            copy of a learnable head, or ``motion`` itself for fixed representations).
        discriminator: an ``mcm.adversarial.FrameDiscriminator`` or None.
        decode_frames: maps latent frames [N, C, h, w] to what the discriminator sees
            (identity for a latent discriminator; VAE decode, with gradient, for a pixel one).
        decode_clip: with ``cfg.fake_frames == "clip"``, maps videos [B, C, F', h, w] and
            frame indices [k] of their decoded clips (of ``clip_frames`` frames) to what
            the discriminator sees of those frames [B*k, ...], video-major, with gradient.
        target_ema: an :class:`~mcm.training.ema.EMA` of the LoRA when cfg.target or
            cfg.one_step_target is "ema".
        target_model: a separate frozen denoiser used as the target network in place of
            the student (e.g. a copy of the student that the caller keeps as an EMA, as
            implementations with a separate target network do); it overrides cfg.target
            and costs a second copy of the UNet. Default None: the student itself.
    """

    def __init__(
        self,
        cfg: MCMConfig,
        student: nn.Module,
        motion: nn.Module,
        motion_target: nn.Module | None = None,
        teacher_model: nn.Module | None = None,
        disable_adapters: Callable[[nn.Module], contextlib.AbstractContextManager] | None = None,
        discriminator: nn.Module | None = None,
        decode_frames: Callable[[Tensor], Tensor] | None = None,
        target_ema=None,
        target_model: nn.Module | None = None,
        decode_clip: Callable[[Tensor, Tensor], Tensor] | None = None,
        clip_frames: int | None = None,
    ):
        if teacher_model is None and disable_adapters is None:
            raise ValueError(
                "Give either teacher_model or disable_adapters (teacher = student without LoRA)."
            )
        if target_model is not None and target_ema is not None:
            raise ValueError("Give target_model or target_ema, not both: one target network.")
        if cfg.target == "ema" and target_ema is None and target_model is None:
            raise ValueError("cfg.target == 'ema' needs target_ema (an EMA of the student's LoRA).")
        if cfg.fake_frames == "clip" and (decode_clip is None or not clip_frames):
            raise ValueError("fake_frames 'clip' needs decode_clip and clip_frames.")
        if cfg.fake_frames == "clip" and cfg.adversarial_sample == "both":
            raise ValueError("fake_frames 'clip' judges decoded frames: use adversarial_sample "
                             "'consistency' or 'one_step', not 'both'.")  # fmt: skip
        if cfg.one_step_target == "ema" and target_ema is None:
            raise ValueError(
                "cfg.one_step_target == 'ema' needs target_ema (an EMA of the student's LoRA)."
            )
        self.cfg = cfg
        self.student = student
        self.teacher_model = teacher_model
        self.disable_adapters = disable_adapters
        self.motion = motion
        self.motion_target = motion_target if motion_target is not None else motion
        self.discriminator = discriminator
        self.decode_frames = decode_frames or (lambda z: z)
        self.decode_clip, self.clip_frames = decode_clip, clip_frames
        self.target_ema = target_ema
        self.target_model = target_model
        self.schedule = student.schedule
        T = self.schedule.num_train_timesteps
        if self.schedule.kind == "flow":
            self.grid, self.grid_prev = flow_grid(cfg.num_ode_steps, self.schedule.shift, T)
            self.top = float(self.grid[-1])  # the student samples from pure noise here
        else:
            self.grid, self.grid_prev = skipping_step_grid(T, cfg.num_ode_steps)
            self.top = T - 1
        self.midpoint = self.grid[cfg.num_ode_steps // 2 - 1]  # the 2-step grid's second point
        self.first_frame_only = cfg.fake_frames == "first" or (
            cfg.fake_frames == "auto" and getattr(student, "family", "") == "wan"
        )

    # -- randomness ---------------------------------------------------------------------
    def sample_draws(self, latents: Tensor, generator: torch.Generator) -> Draws:
        """Draw everything random for one step from ``generator`` (on the CPU)."""
        B, C, Fr = latents.shape[:3]
        cfg = self.cfg
        if cfg.fake_frames == "clip":
            Fr = self.clip_frames  # frames of the decoded clip
        k = 1 if self.first_frame_only else min(cfg.frames_per_video, Fr)
        return Draws(
            index=training_timesteps(B, cfg.num_ode_steps, generator, "cpu", cfg.top_fraction),
            noise=torch.randn(latents.shape, generator=generator),
            w=cfg.w_min + (cfg.w_max - cfg.w_min) * torch.rand(B, generator=generator),
            use_real=bool(torch.rand((), generator=generator) < cfg.lambda_real),
            start_noise=torch.randn(latents.shape, generator=generator),
            frame_index=torch.randperm(1 if self.first_frame_only else Fr, generator=generator)[:k]
            .sort()
            .values,
            seed=int(torch.randint(0, 2**31 - 1, (), generator=generator)),
        )

    # -- networks -----------------------------------------------------------------------
    def _teacher(self):
        if self.teacher_model is not None:
            return contextlib.nullcontext(self.teacher_model)
        return _yielding(self.disable_adapters(self.student), self.student)

    def _target(self):
        if self.target_model is not None:
            return contextlib.nullcontext(self.target_model)
        return (
            self._lora_ema() if self.cfg.target == "ema" else contextlib.nullcontext(self.student)
        )

    def _one_step_target(self):
        """The network of the one-step regression's N-step sample."""
        return self._lora_ema() if self.cfg.one_step_target == "ema" else self._target()

    def _lora_ema(self):
        """The student with the EMA of its LoRA swapped in."""
        return _yielding(self.target_ema.swapped_in(), self.student)

    def _consistency(self, net, x: Tensor, t: Tensor, emb: Tensor, tcond: Tensor | None) -> Tensor:
        """f(x, t) = c_skip(t) x + c_out(t) x0(x, t) for one network (flow: x0(x, t)).
        [B, C, F, h, w]."""
        x0, _ = net.predict_x0_eps(x, t, emb, timestep_cond=tcond)
        cfg = self.cfg
        return consistency_function(x, x0, t, self.schedule, cfg.sigma_data, cfg.timestep_scaling)

    def consistency_target(
        self, net, x_prev: Tensor, t: Tensor, t_prev: Tensor, emb: Tensor, tcond: Tensor | None
    ) -> Tensor:
        """y = f(x_{t_n}, t_n) [B, C, F, h, w]; with ``top_target_steps`` 2, at the draws
        whose t_{n+k} is the top, f(x_mid, mid) after the DDIM step of (y, eps(y)) from
        t_n to the 2-step midpoint."""
        y = self._consistency(net, x_prev, t_prev, emb, tcond)
        top = t == self.top
        if self.cfg.top_target_steps == 1 or not bool(top.any()):
            return y
        y_top, x_top, t_top = y[top], x_prev[top], t_prev[top]
        alpha, sigma = self.schedule.alpha(t_top), self.schedule.sigma(t_top)
        eps = x0_to_eps(y_top, x_top, alpha.to(y.device, y.dtype), sigma.to(y.device, y.dtype))
        t_mid = torch.full_like(t_top, float(self.midpoint))
        x_mid = ddim_step(self.schedule, y_top, eps, t_mid)
        tc = tcond[top] if tcond is not None else None
        y = y.clone()
        y[top] = self._consistency(net, x_mid, t_mid, emb[top], tc)
        return y

    def one_step(self, start_noise: Tensor, text_emb: Tensor, tcond: Tensor | None) -> Tensor:
        """The student's one-step sample f(x_T, T-1) (flow: at the grid's top; no CFG), with
        gradient when enabled: [B, C, F, h, w]."""
        t = torch.full((start_noise.shape[0],), self.top, dtype=self.grid.dtype)
        t = t.to(start_noise.device)
        return self._consistency(self.student, start_noise, t, text_emb, tcond)

    def sampling_timesteps(self, steps: int) -> Tensor:
        """The N-step sampler's timesteps on the training grid, from the top down (those of
        diffusers' LCMScheduler: floor(linspace(0, N_grid, steps)) of the descending grid):
        [steps] of the grid's dtype."""
        if not 1 <= steps <= len(self.grid):
            raise ValueError(f"steps must be in 1..{len(self.grid)} (the grid); got {steps}.")
        picks = torch.linspace(0, len(self.grid), steps + 1)[:-1].floor().long()
        return self.grid.flip(0)[picks]

    @torch.no_grad()
    def multistep_sample(
        self,
        start_noise: Tensor,
        text_emb: Tensor,
        tcond: Tensor | None,
        steps: int,
        first: Tensor | None = None,
    ) -> Tensor:
        """The deterministic ``steps``-step sample from x_T [B, C, F, h, w] of the one-step
        regression's network (``cfg.one_step_target``): y = f(x, t) at each of
        :meth:`sampling_timesteps`, then the DDIM step of (y, eps(x, y)) to the next one
        (the sampler draws fresh noise there instead). ``first``: that network's f(x_T, T)
        when the step already has it (the online student's is the one-step sample), saving
        that call."""
        times = self.sampling_timesteps(steps).to(start_noise.device)
        with self._one_step_target() as net:
            return sample_consistency_ode(
                lambda x, t: self._consistency(net, x, t, text_emb, tcond),
                start_noise,
                self.schedule,
                times,
                first,
            )

    @torch.no_grad()
    def student_sample(self, start_noise: Tensor, text_emb: Tensor, tcond: Tensor | None) -> Tensor:
        """:meth:`one_step` without gradient."""
        return self.one_step(start_noise, text_emb, tcond)

    @torch.no_grad()
    def teacher_ddim_step(
        self, x: Tensor, t: Tensor, t_prev: Tensor, batch: DistillBatch, w: Tensor
    ) -> Tensor:
        """One guided DDIM step of the teacher from t_{n+k} to t_n (LCM-form CFG on x0 and eps;
        on a flow schedule the Euler step with v_u + (1 + w)(v_c - v_u): the guidance is
        baked into the target, and the student samples with guidance 1).

        Conditional and unconditional predictions come from one batched call.
        """
        with self._teacher() as teacher:
            x0, eps = teacher.predict_x0_eps(
                torch.cat([x, x]), torch.cat([t, t]), torch.cat([batch.text_emb, batch.uncond_emb])
            )
        x0_c, x0_u = x0.chunk(2)
        eps_c, eps_u = eps.chunk(2)
        x0_hat = lcm_guidance(x0_c, x0_u, w)
        eps_hat = lcm_guidance(eps_c, eps_u, w)
        return ddim_step(self.schedule, x0_hat, eps_hat, t_prev)

    # -- the two losses -----------------------------------------------------------------
    def generator_step(self, batch: DistillBatch, draws: Draws) -> GeneratorOutput:
        """L_G = L_mcd + lambda_adv * L_adv_G (method page, steps 2-11)."""
        cfg, dev = self.cfg, batch.latents.device
        z0 = batch.latents
        w = draws.w.to(dev)
        tcond = (
            guidance_scale_embedding(w, cfg.w_embedding_dim).to(dev)
            if cfg.w_embedding_dim
            else None
        )

        # 2. a point of the skipping-step grid: t_{n+k} = tau_i, t_n = max(tau_i - k, 0)
        t = self.grid[draws.index].to(dev)
        t_prev = self.grid_prev[draws.index].to(dev)

        # 4. mixed trajectory: with prob. 1 - lambda_real, the student's own one-step sample is the data
        use_real = draws.use_real or not self._mixing_on()
        one_step = None
        judges_one_step = cfg.adversarial_sample != "consistency" and self.discriminator is not None
        if judges_one_step or cfg.one_step_target_steps:
            one_step = self.one_step(draws.start_noise.to(dev), batch.text_emb, tcond)
            if not use_real:
                z0 = one_step.detach()
        elif not use_real:
            z0 = self.student_sample(draws.start_noise.to(dev), batch.text_emb, tcond)

        # 5. noise to t_{n+k}; pure noise at the top of the grid (reference behaviour)
        noise = draws.noise.to(dev, z0.dtype)
        x_t = add_noise(self.schedule, z0, noise, t)
        if cfg.pure_noise_at_top:
            top = (t == self.top).view(-1, *[1] * (z0.ndim - 1))
            x_t = torch.where(top, noise, x_t)

        # 7. teacher DDIM step to t_n;  8. target y = f_target(x_{t_n}, t_n) (no grad). Before
        # the student's forward: an EMA target swaps its weights into the LoRA in place,
        # which would invalidate the tensors that forward saved for backward.
        x_prev = self.teacher_ddim_step(x_t, t, t_prev, batch, w)
        with torch.no_grad(), self._target() as target:
            y = self.consistency_target(target, x_prev, t, t_prev, batch.text_emb, tcond)
            m_target = self.motion_target(y)

        # 6. student consistency output f_theta(x_{t_{n+k}}, t_{n+k}) (with gradient)
        f_student = self._consistency(self.student, x_t, t, batch.text_emb, tcond)

        # 9. disentangled motion loss d(m(f_theta), m_target(y)), per sample
        m_student = self.motion(f_student)
        extra = {"c": cfg.huber_c} if cfg.distance == "huber" else {}
        mcd = DISTANCES[cfg.distance](m_student.float(), m_target.float(), **extra)
        loss = mcd.mean()
        terms = {"loss_mcd": mcd.mean().detach(), "use_real": torch.tensor(float(use_real))}

        # the one-step sample regressed to the multi-step student's from the same noise
        if cfg.one_step_target_steps:
            online = self.target_model is None and "ema" not in (cfg.target, cfg.one_step_target)
            y_n = self.multistep_sample(
                draws.start_noise.to(dev),
                batch.text_emb,
                tcond,
                cfg.one_step_target_steps,
                first=one_step.detach() if online else None,
            )
            d = DISTANCES[cfg.distance](one_step.float(), y_n.float(), **extra).mean()
            loss = loss + cfg.lambda_one_step * d
            terms["loss_one_step"] = d.detach()

        # 10. generator adversarial loss on k frames of f_theta: -mean(D(fake)), minimised
        out = GeneratorOutput(loss=loss, terms=terms)
        if self.discriminator is not None:
            D = self.discriminator
            judged = {"consistency": f_student, "one_step": one_step}.get(cfg.adversarial_sample)
            if judged is None:  # both
                judged = self._split_frames(f_student, one_step, draws)
            fake, pooled = self._frames(judged, draws.frame_index, batch.pooled_text)
            features = D.features(fake, self._d_generator(draws.seed))
            adv = hinge_g_loss(D.logits(features, pooled))
            out.loss = loss + cfg.lambda_adv * adv
            terms["loss_adv_g"] = adv.detach()
            out.fake_frames, out.fake_pooled_text = fake.detach(), pooled
            if cfg.reuse_fake_features:
                out.fake_features = [f.detach() for f in features]
        terms["loss_g"] = out.loss.detach()
        return out

    def discriminator_step(
        self,
        gen: GeneratorOutput,
        batch: DistillBatch,
        draws: Draws,
        penalty_weight: Callable[[float], float] | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """L_D = mean(relu(1 - D(real))) + mean(relu(1 + D(fake))) + lambda_gp * GP.

        GP = mean((||grad of D's heads w.r.t. real/fake feature interpolates|| - 1)^2);
        ``penalty_weight(gp) -> lambda_gp`` (the adaptive weight) or None to skip it.
        The frozen backbone runs under no_grad and the fakes are detached, so L_D trains
        the discriminator heads only. Returns (loss, terms).
        """
        D = self.discriminator
        if D is None or gen.fake_frames is None:
            raise ValueError(
                "discriminator_step needs a discriminator and a generator_step output."
            )
        if batch.real_frames is None:
            raise ValueError(
                "The batch has no real frames: give an image set or frames of the clips."
            )
        g = self._d_generator(draws.seed + 1)
        # real and fake frames through the frozen backbone in one call, the heads on the real
        # and fake features in one call (and on the penalty's interpolates in another)
        with torch.no_grad():
            if gen.fake_features is not None:  # reuse_fake_features
                f_real, f_fake = D.features(batch.real_frames, g), gen.fake_features
            else:
                f_real, f_fake = D.features_of([batch.real_frames, gen.fake_frames], g)
        loss, real_logits, fake_logits, gp = D.loss(
            f_real,
            f_fake,
            batch.real_pooled_text,
            gen.fake_pooled_text,
            g if penalty_weight is not None else None,
        )
        terms = {
            "loss_d": loss.detach(),
            "d_real": real_logits.mean().detach(),
            "d_fake": fake_logits.mean().detach(),
        }
        if penalty_weight is not None:
            weight = penalty_weight(float(gp.detach()))
            loss = loss + weight * gp
            terms.update(gradient_penalty=gp.detach(), gp_weight=torch.tensor(weight))
        return loss, terms

    @torch.no_grad()
    def clips_as_fakes(self, batch: DistillBatch, draws: Draws) -> GeneratorOutput:
        """Frames of the training clips in place of the student's (the discriminator's
        warm-up): fake_frames [B*k, ...] from ``batch.latents`` at ``draws.frame_index``."""
        fake, pooled = self._frames(batch.latents, draws.frame_index, batch.pooled_text)
        return GeneratorOutput(loss=fake.new_zeros(()), fake_frames=fake, fake_pooled_text=pooled)

    # -- helpers ------------------------------------------------------------------------
    def _mixing_on(self) -> bool:
        return self.cfg.mixed_trajectories and self.discriminator is not None

    @staticmethod
    def _split_frames(consistency: Tensor, one_step: Tensor, draws: Draws) -> Tensor:
        """``adversarial_sample="both"``: videos [B, C, F, h, w] whose judged frames come half
        from each (the later half of ``draws.frame_index`` from ``one_step``; with one judged
        frame per video, every other video, alternating from step to step), so that the
        discriminator sees as many fakes as reals."""
        index, B = draws.frame_index, consistency.shape[0]
        if len(index) > 1:
            mask = torch.zeros(consistency.shape[2], dtype=torch.bool)
            mask[index[len(index) // 2 :]] = True
            mask = mask.view(1, 1, -1, 1, 1)
        else:
            mask = ((torch.arange(B) + draws.seed) % 2 == 1).view(B, 1, 1, 1, 1)
        return torch.where(mask.to(consistency.device), one_step, consistency)

    def _frames(self, video: Tensor, index: Tensor, pooled_text: Tensor) -> tuple[Tensor, Tensor]:
        """k frames of each video [B, C, F, h, w] (of its decoded clip with fake_frames
        "clip") -> what the discriminator sees of them [B*k, ...] and each frame's pooled
        caption [B*k, D] (from ``pooled_text`` [B, D])."""
        pooled = pooled_text.repeat_interleave(len(index), dim=0)
        if self.cfg.fake_frames == "clip":
            return self.decode_clip(video, index), pooled
        frames = video[:, :, index.to(video.device)]  # [B, C, k, h, w]
        frames = frames.permute(0, 2, 1, 3, 4).flatten(0, 1)  # [B*k, C, h, w]
        return self.decode_frames(frames), pooled

    def _d_generator(self, seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)


def frame_discriminator(d, backbone, text_dim: int) -> FrameDiscriminator:
    """The frame discriminator a ``DiscriminatorConfig`` ``d`` describes, on ``backbone``
    (its heads conditioned on pooled text embeddings [N, text_dim])."""
    return FrameDiscriminator(
        backbone,
        text_dim=text_dim,
        hidden=d.head_width,
        cmap_dim=d.head_channels,
        augment_policy=d.augment,
        conditional=d.conditional,
        head_style=d.head_style,
        gp_reduction=d.gp_reduction,
    )


def teacher_latent_backbone(
    student: nn.Module,
    t_range: tuple[int, int],
    null_text_emb: Tensor,
    latent_size: int,
    num_blocks: int | None = None,
):
    """The latent discriminator's backbone for a LoRA student: the frozen teacher (the
    student with its adapters disabled) UNet encoder on noised latent frames, its feature
    channels probed once on a zero latent [1, C, latent_size, latent_size].

    Unconditional UNet features (``null_text_emb`` [1, L, D]): the caption enters through
    the discriminator heads. ``num_blocks``: the first encoder blocks read
    (``discriminator.latent_blocks``; None: the denoiser's default).

    Raises:
        ConfigError: ``num_blocks`` exceeds the teacher's encoder blocks.
    """
    available = len(student.encoder_blocks())
    if num_blocks is not None and num_blocks > available:
        raise ConfigError(
            f"discriminator.latent_blocks: the teacher's encoder has {available} blocks, got "
            f"{num_blocks}; set it to at most {available}, or null for the default."
        )

    def teacher_features(x, t, emb):
        with disable_adapters(student):
            return student.encoder_features(x, t, emb, num_blocks)

    backbone = LatentUNetBackbone(
        teacher_features, student.schedule, t_range=t_range, null_text_emb=null_text_emb
    )
    C = student.unet.config.in_channels
    device = null_text_emb.device
    backbone.probe_channels(torch.zeros(1, C, latent_size, latent_size, device=device))
    return backbone


@contextlib.contextmanager
def _yielding(ctx, value):
    with ctx:
        yield value
