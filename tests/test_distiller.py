"""The MCM step on a tiny real ModelScope pipeline: loss terms against a hand-written
computation, gradient flow, mixed trajectories, and a loss that goes down."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from mcm.adversarial import FrameDiscriminator, LatentUNetBackbone, hinge_d_loss
from mcm.adversarial.spectral import SpectralNormConv1d
from mcm.errors import ConfigError
from mcm.models import attach_lora, disable_adapters, load_teacher, lora_parameters
from mcm.models.tiny import save_tiny_pipeline
from mcm.motion import build_motion_representation
from mcm.training.distiller import (
    DistillBatch,
    MCMConfig,
    MCMDistiller,
    teacher_latent_backbone,
)
from mcm.training.ema import EMA

PROMPTS = ["a red circle moving left", "a blue square moving up"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_tiny_pipeline("modelscope", tmp_path_factory.mktemp("tiny-ms"))


def _setup(teacher_dir, motion="learnable", discriminator=True, **cfg_kw):
    bundle = load_teacher(str(teacher_dir), device="cpu")
    torch.manual_seed(0)
    attach_lora(bundle.denoiser, rank=4, alpha=4)
    with torch.no_grad():  # a perturbed LoRA, so the student differs from the teacher
        for p in lora_parameters(bundle.denoiser):
            p.add_(0.05 * torch.randn_like(p))
    head = build_motion_representation(motion, bundle.vae.latent_channels)
    head_target = EMA.of_module(head, 0.95)[1] if any(True for _ in head.parameters()) else None
    disc = None
    if discriminator:
        den = bundle.denoiser

        def features(x, t, emb):
            with disable_adapters(den):
                return den.encoder_features(x, t, emb)

        backbone = LatentUNetBackbone(
            features, den.schedule, (0, 500), null_text_emb=bundle.text_encoder.empty(1)
        )
        backbone.probe_channels(torch.zeros(1, 4, 16, 16))
        disc = FrameDiscriminator(backbone, text_dim=bundle.text_encoder.embedding_dim)
    cfg = MCMConfig(**cfg_kw)
    distiller = MCMDistiller(
        cfg,
        bundle.denoiser,
        motion=head,
        motion_target=head_target,
        disable_adapters=disable_adapters,
        discriminator=disc,
    )
    text = bundle.text_encoder
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 4, 16, 16, generator=gen)
    batch = DistillBatch(latents=latents, text_emb=text(PROMPTS), uncond_emb=text.empty(2))
    if discriminator:
        batch.pooled_text = text.pooled(PROMPTS)
        batch.real_frames = torch.randn(4, 4, 16, 16, generator=gen)
        batch.real_pooled_text = text.pooled(PROMPTS + PROMPTS)
    return bundle, distiller, batch


def _reference_mcd(bundle, distiller, batch, draws, z0):
    """The method page's steps 2-9 written out directly on the diffusers UNet."""
    cfg, unet = distiller.cfg, bundle.denoiser.unet
    acp = distiller.schedule.alphas_cumprod
    k = 1000 // cfg.num_ode_steps
    t = (draws.index + 1) * k - 1
    t_prev = (t - k).clamp(min=0)

    def bc(tt):
        st = tt.float() * cfg.timestep_scaling
        return (0.25 / (st**2 + 0.25)), st / (st**2 + 0.25).sqrt()

    def v(x):  # [B] -> [B,1,1,1,1]
        return x.view(-1, 1, 1, 1, 1)

    def eps_of(x, tt, emb):
        return unet(x, tt, encoder_hidden_states=emb).sample

    a, s = acp[t].sqrt(), (1 - acp[t]).sqrt()
    x_t = v(a) * z0 + v(s) * draws.noise
    x_t = torch.where(v(t == 999).bool(), draws.noise, x_t)
    eps = eps_of(x_t, t, batch.text_emb)
    cs, co = bc(t)
    f = v(cs) * x_t + v(co) * (x_t - v(s) * eps) / v(a)
    with torch.no_grad(), disable_adapters(bundle.denoiser):
        e_c, e_u = eps_of(x_t, t, batch.text_emb), eps_of(x_t, t, batch.uncond_emb)
    x0_c, x0_u = (x_t - v(s) * e_c) / v(a), (x_t - v(s) * e_u) / v(a)
    w = v(draws.w)
    x0_hat, e_hat = x0_c + w * (x0_c - x0_u), e_c + w * (e_c - e_u)
    ap, sp = acp[t_prev].sqrt(), (1 - acp[t_prev]).sqrt()
    x_prev = v(ap) * x0_hat + v(sp) * e_hat
    with torch.no_grad():
        e_y = eps_of(x_prev, t_prev, batch.text_emb)
        cs2, co2 = bc(t_prev)
        y = v(cs2) * x_prev + v(co2) * (x_prev - v(sp) * e_y) / v(ap)
    d = ((f - y) ** 2 + cfg.huber_c**2).sqrt() - cfg.huber_c
    return d.flatten(1).mean(1)


def test_lcm_loss_matches_hand_written_computation(teacher_dir):
    bundle, distiller, batch = _setup(
        teacher_dir, motion="raw", discriminator=False, mixed_trajectories=False
    )
    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(3))
    draws = dataclasses.replace(draws, index=torch.tensor([10, 49]))  # one mid-grid, one at the top
    out = distiller.generator_step(batch, draws)
    expected = _reference_mcd(bundle, distiller, batch, draws, batch.latents)
    torch.testing.assert_close(out.loss, expected.mean(), rtol=1e-4, atol=1e-6)
    assert set(out.terms) == {"loss_mcd", "use_real", "loss_g"}


def test_mixed_trajectory_uses_the_students_one_step_sample(teacher_dir):
    bundle, distiller, batch = _setup(
        teacher_dir, motion="raw", discriminator=True, lambda_real=0.5
    )
    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(4))
    draws = dataclasses.replace(draws, use_real=False, index=torch.tensor([5, 20]))
    out = distiller.generator_step(batch, draws)
    z0 = distiller.student_sample(draws.start_noise, batch.text_emb, None)
    expected = _reference_mcd(bundle, distiller, batch, draws, z0)
    torch.testing.assert_close(out.terms["loss_mcd"], expected.mean(), rtol=1e-4, atol=1e-6)
    assert out.terms["use_real"] == 0.0
    # and the draw probability is lambda_real
    g = torch.Generator().manual_seed(0)
    real = [distiller.sample_draws(batch.latents, g).use_real for _ in range(400)]
    assert abs(sum(real) / 400 - 0.5) < 0.08


def test_mcm_step_gradients_flow_where_intended(teacher_dir):
    bundle, distiller, batch = _setup(teacher_dir, motion="learnable", discriminator=True)
    den, D = bundle.denoiser, distiller.discriminator
    frozen = {
        **{
            f"unet.{n}": p.detach().clone()
            for n, p in den.unet.named_parameters()
            if "lora" not in n
        },
        **{f"vae.{n}": p.detach().clone() for n, p in bundle.vae.named_parameters()},
        **{f"text.{n}": p.detach().clone() for n, p in bundle.text_encoder.named_parameters()},
    }
    lora_before = [p.detach().clone() for p in lora_parameters(den)]
    head_before = [p.detach().clone() for p in distiller.motion.parameters()]
    d_before = [p.detach().clone() for p in D.head_parameters()]
    opt_g = torch.optim.AdamW(lora_parameters(den) + list(distiller.motion.parameters()), lr=1e-3)
    opt_d = torch.optim.AdamW(D.head_parameters(), lr=1e-3)

    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(5))
    D.requires_grad_heads(False)
    gen = distiller.generator_step(batch, draws)
    assert {"loss_mcd", "loss_adv_g", "loss_g"} <= set(gen.terms)
    assert all(torch.isfinite(v) for v in gen.terms.values())
    gen.loss.backward()
    assert all(p.grad is None for p in D.head_parameters()), "L_G must not reach D's heads"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(den))
    # the zero-initialised last layer of the head gets gradient through L_mcd
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in distiller.motion.parameters())
    opt_g.step()
    D.requires_grad_heads(True)
    lora_grads = [p.grad.clone() for p in lora_parameters(den)]
    d_loss, d_terms = distiller.discriminator_step(
        gen, batch, draws, penalty_weight=lambda gp: 1e-5
    )
    assert {"loss_d", "d_real", "d_fake", "gradient_penalty"} <= set(d_terms)
    d_loss.backward()
    for g0, p in zip(lora_grads, lora_parameters(den)):
        assert torch.equal(g0, p.grad), "L_D must not reach the student"
    opt_d.step()

    for name, p in [
        *((f"unet.{n}", p) for n, p in den.unet.named_parameters() if "lora" not in n),
        *((f"vae.{n}", p) for n, p in bundle.vae.named_parameters()),
        *((f"text.{n}", p) for n, p in bundle.text_encoder.named_parameters()),
    ]:
        assert torch.equal(p, frozen[name]), f"{name} changed"
    assert any(not torch.equal(a, b) for a, b in zip(lora_before, lora_parameters(den)))
    assert any(not torch.equal(a, b) for a, b in zip(head_before, distiller.motion.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, D.head_parameters()))


def test_discriminator_step_is_the_separate_calls_batched(teacher_dir):
    # One backbone call for the real and fake frames and one heads call for the real, fake
    # and interpolated features give the loss, penalty and head gradients of a backbone
    # call per frame batch and a heads call per feature batch, with the same draws. Heads
    # in eval mode: in training mode every heads call takes one power-method step.
    bundle, distiller, batch = _setup(teacher_dir)
    D = distiller.discriminator
    D.heads.eval()
    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(5))
    gen = distiller.generator_step(batch, draws)
    loss, terms = distiller.discriminator_step(gen, batch, draws, penalty_weight=lambda gp: 0.5)
    grads = torch.autograd.grad(loss, list(D.head_parameters()))

    g = torch.Generator().manual_seed(draws.seed + 1)  # the discriminator step's generator
    with torch.no_grad():
        f_real = D.features(batch.real_frames, g)
        f_fake = D.features(gen.fake_frames, g)
    real, fake = batch.real_pooled_text, gen.fake_pooled_text
    real_logits, fake_logits = D.logits(f_real, real), D.logits(f_fake, fake)
    gp = D.gradient_penalty(f_real, f_fake, real, fake, g)
    expected = hinge_d_loss(real_logits, fake_logits) + 0.5 * gp
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(terms["gradient_penalty"], gp.detach())
    torch.testing.assert_close(terms["d_real"], real_logits.mean().detach())
    torch.testing.assert_close(terms["d_fake"], fake_logits.mean().detach())
    for got, want in zip(grads, torch.autograd.grad(expected, list(D.head_parameters()))):
        torch.testing.assert_close(got, want)

    # training mode: a power-method step per heads call, two per discriminator step (the
    # real and fake features together, then the penalty's interpolates)
    D.heads.train()
    convs = [m for m in D.heads.modules() if isinstance(m, SpectralNormConv1d)]
    before = [c.v.clone() for c in convs]
    distiller.discriminator_step(gen, batch, draws, penalty_weight=lambda gp: 0.5)
    for conv, v in zip(convs, before):
        w = conv.weight.detach().flatten(1)
        for _ in range(2):
            u = torch.nn.functional.normalize(w @ v, dim=0)
            v = torch.nn.functional.normalize(w.T @ u, dim=0)
        torch.testing.assert_close(conv.u, u)
        torch.testing.assert_close(conv.v, v)


def test_reuse_fake_features_takes_the_generators_features(teacher_dir):
    # method.reuse_fake_features: the discriminator step's fakes are the features of the
    # generator's adversarial term (its draws), its reals keep the step's own draws.
    bundle, distiller, batch = _setup(teacher_dir, reuse_fake_features=True)
    D = distiller.discriminator
    D.heads.eval()
    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(6))
    gen = distiller.generator_step(batch, draws)
    with torch.no_grad():
        fake = D.features(gen.fake_frames, torch.Generator().manual_seed(draws.seed))
    for got, want in zip(gen.fake_features, fake):
        torch.testing.assert_close(got, want)
        assert not got.requires_grad
    loss, _ = distiller.discriminator_step(gen, batch, draws, penalty_weight=lambda gp: 0.5)
    g = torch.Generator().manual_seed(draws.seed + 1)
    with torch.no_grad():
        real = D.features(batch.real_frames, g)
    hinge, _, _, gp = D.loss(real, fake, batch.real_pooled_text, gen.fake_pooled_text, g)
    torch.testing.assert_close(loss, hinge + 0.5 * gp)
    # the default encodes the fakes again with the discriminator step's draws
    distiller.cfg = dataclasses.replace(distiller.cfg, reuse_fake_features=False)
    assert distiller.generator_step(batch, draws).fake_features is None


def test_latent_blocks_reads_the_first_encoder_blocks(teacher_dir):
    # discriminator.latent_blocks: the backbone stops after the first blocks; their
    # features are those of the whole encoder's pass.
    bundle = load_teacher(str(teacher_dir), device="cpu")
    attach_lora(bundle.denoiser, rank=4, alpha=4)
    den, null = bundle.denoiser, bundle.text_encoder.empty(1)
    every = teacher_latent_backbone(den, (0, 500), null, 16)
    first = teacher_latent_backbone(den, (0, 500), null, 16, num_blocks=1)
    assert len(every.channels) == len(den.encoder_blocks()) > 1
    assert first.channels == every.channels[:1]
    frames = torch.randn(2, 4, 16, 16)
    (got,) = first(frames, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got, every(frames, generator=torch.Generator().manual_seed(0))[0])
    with pytest.raises(ConfigError, match="latent_blocks"):
        teacher_latent_backbone(den, (0, 500), null, 16, num_blocks=len(den.encoder_blocks()) + 1)


def test_separate_target_model_is_the_target_network(teacher_dir):
    bundle, distiller, batch = _setup(
        teacher_dir, motion="raw", discriminator=False, mixed_trajectories=False
    )
    student = bundle.denoiser
    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(6))
    online = distiller.generator_step(batch, draws).terms["loss_mcd"]

    # A frozen copy of the student as the target network: the same loss as the online target.
    target = copy.deepcopy(student).requires_grad_(False)
    seen = []
    target.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    with_copy = MCMDistiller(
        distiller.cfg,
        student,
        motion=distiller.motion,
        disable_adapters=disable_adapters,
        target_model=target,
    )
    out = with_copy.generator_step(batch, draws)
    torch.testing.assert_close(out.terms["loss_mcd"], online, rtol=1e-5, atol=1e-7)
    # called once per step, at t_n, and it gets no gradient
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], with_copy.grid_prev[draws.index])
    out.loss.backward()
    assert all(p.grad is None for p in target.parameters())

    # the copy, not the student, makes y: moving the copy's LoRA moves the loss
    with torch.no_grad():
        for p in lora_parameters(target):
            p.add_(0.05)
    moved = with_copy.generator_step(batch, draws).terms["loss_mcd"]
    assert not torch.allclose(moved, online)
    with pytest.raises(ValueError, match="not both"):
        MCMDistiller(
            distiller.cfg,
            student,
            motion=distiller.motion,
            disable_adapters=disable_adapters,
            target_model=target,
            target_ema=EMA(lora_parameters(student), 0.9),
        )


@pytest.mark.slow
def test_distillation_loss_goes_down(teacher_dir):
    bundle, distiller, batch = _setup(
        teacher_dir, motion="raw", discriminator=False, mixed_trajectories=False
    )
    opt = torch.optim.AdamW(lora_parameters(bundle.denoiser), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    fixed = distiller.sample_draws(batch.latents, g)
    eval_draws = [dataclasses.replace(fixed, index=torch.tensor([i, i + 20])) for i in (5, 15, 25)]

    def eval_loss():
        with torch.no_grad():
            return sum(float(distiller.generator_step(batch, d).loss) for d in eval_draws)

    before = eval_loss()
    # 20 steps on fresh draws bring the loss on the fixed draws to 0.77-0.85 of its start
    # over the draw seeds 0-4 (it falls at every 5th step on each; 60 steps: below 0.8).
    for _ in range(20):
        loss = distiller.generator_step(batch, distiller.sample_draws(batch.latents, g)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.9 * before


def test_two_step_top_target_goes_through_the_midpoint(teacher_dir):
    # top_target_steps 2: at the top draws y = f(x_mid, T/2 - 1), x_mid the DDIM step of
    # (f(x_{t_n}, t_n), its eps) to the 2-step grid's midpoint; elsewhere the usual target
    bundle, distiller, batch = _setup(teacher_dir, discriminator=False, top_target_steps=2)
    assert int(distiller.midpoint) == 499
    net, emb, acp = bundle.denoiser, batch.text_emb, distiller.schedule.alphas_cumprod
    t = torch.tensor([999, 519])
    t_prev = torch.tensor([979, 499])
    x_prev = torch.randn(2, 4, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = distiller.consistency_target(net, x_prev, t, t_prev, emb, None)
        one = distiller._consistency(net, x_prev, t_prev, emb, None)
        a, s = acp[979].sqrt(), (1 - acp[979]).sqrt()
        eps = (x_prev[:1] - a * one[:1]) / s
        x_mid = acp[499].sqrt() * one[:1] + (1 - acp[499]).sqrt() * eps
        mid = distiller._consistency(net, x_mid, torch.tensor([499]), emb[:1], None)
    torch.testing.assert_close(y[:1], mid)
    torch.testing.assert_close(y[1:], one[1:])  # not a top draw: the one-step target
    with pytest.raises(ValueError, match="even num_ode_steps"):
        MCMConfig(top_target_steps=2, num_ode_steps=25)


@pytest.mark.parametrize("use_real", [True, False])
def test_one_step_adversarial_sample_judges_the_one_step_video(teacher_dir, use_real):
    bundle, distiller, batch = _setup(
        teacher_dir, motion="raw", discriminator=True, adversarial_sample="one_step"
    )
    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(6))
    draws = dataclasses.replace(draws, use_real=use_real, index=torch.tensor([5, 20]))
    out = distiller.generator_step(batch, draws)
    one = distiller.student_sample(draws.start_noise, batch.text_emb, None)
    expected, _ = distiller._frames(one, draws.frame_index, batch.pooled_text)
    torch.testing.assert_close(out.fake_frames, expected, rtol=1e-5, atol=1e-6)
    # the mixed trajectory's data is that same sample: the consistency loss is unchanged
    z0 = batch.latents if use_real else one
    reference = _reference_mcd(bundle, distiller, batch, draws, z0)
    torch.testing.assert_close(out.terms["loss_mcd"], reference.mean(), rtol=1e-4, atol=1e-6)
    # the adversarial term's gradient flows back through the one-step sample (the only
    # path from the start noise to the loss: the mixed trajectory's data is detached)
    distiller.discriminator.requires_grad_heads(False)
    noise = draws.start_noise.clone().requires_grad_()
    out = distiller.generator_step(batch, dataclasses.replace(draws, start_noise=noise))
    (grad,) = torch.autograd.grad(out.loss, noise)
    assert grad.abs().sum() > 0


def test_both_adversarial_samples_judge_half_the_frames_from_each(teacher_dir):
    _, distiller, batch = _setup(
        teacher_dir, motion="raw", discriminator=True, adversarial_sample="both"
    )
    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(6))
    draws = dataclasses.replace(draws, use_real=True, index=torch.tensor([5, 20]))
    out = distiller.generator_step(batch, draws)
    d_loss, _ = distiller.discriminator_step(out, batch, draws, penalty_weight=lambda gp: 1e-5)
    assert torch.isfinite(d_loss)
    distiller.cfg = dataclasses.replace(distiller.cfg, adversarial_sample="consistency")
    first = distiller.generator_step(batch, draws).fake_frames  # [B*k, C, h, w]
    one = distiller.student_sample(draws.start_noise, batch.text_emb, None)
    second, _ = distiller._frames(one, draws.frame_index, batch.pooled_text)
    k = len(draws.frame_index)
    from_one_step = (torch.arange(out.fake_frames.shape[0]) % k) >= k // 2
    expected = torch.where(from_one_step.view(-1, 1, 1, 1), second, first)
    torch.testing.assert_close(out.fake_frames, expected, rtol=1e-5, atol=1e-6)
    assert out.fake_frames.shape == first.shape  # as many fakes as reals


def test_one_step_target_is_the_multistep_students_sample(teacher_dir):
    # one_step_target_steps N: the one-step sample f(x_T, T) regresses to the target
    # network's deterministic N-step sample from the same x_T, at the N-step sampler's
    # timesteps; an EMA target swaps in after the one-step forward and backward still works
    from diffusers import LCMScheduler

    bundle, distiller, batch = _setup(
        teacher_dir, motion="raw", discriminator=False, one_step_target_steps=2, lambda_one_step=3.0
    )
    lcm = LCMScheduler(num_train_timesteps=1000, original_inference_steps=50)
    for n in (1, 2, 4):
        lcm.set_timesteps(n)
        assert distiller.sampling_timesteps(n).tolist() == lcm.timesteps.tolist()
    with pytest.raises(ValueError, match="steps must be in 1..50"):
        distiller.sampling_timesteps(51)

    net, emb, acp = bundle.denoiser, batch.text_emb, distiller.schedule.alphas_cumprod
    noise = torch.randn(2, 4, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y1 = distiller._consistency(net, noise, torch.tensor([999, 999]), emb, None)
        eps = (noise - acp[999].sqrt() * y1) / (1 - acp[999]).sqrt()
        x = acp[499].sqrt() * y1 + (1 - acp[499]).sqrt() * eps
        y2 = distiller._consistency(net, x, torch.tensor([499, 499]), emb, None)
    torch.testing.assert_close(distiller.multistep_sample(noise, emb, None, 2), y2)
    # the step passes its one-step sample as the first y (the online target's equals it)
    torch.testing.assert_close(distiller.multistep_sample(noise, emb, None, 2, first=y1), y2)
    assert not torch.allclose(distiller.multistep_sample(noise, emb, None, 2, first=y1 + 1), y2)

    draws = distiller.sample_draws(batch.latents, torch.Generator().manual_seed(6))
    draws = dataclasses.replace(draws, start_noise=noise, index=torch.tensor([5, 20]))
    out = distiller.generator_step(batch, draws)
    one = distiller.student_sample(noise, emb, None)
    d = (((one - y2) ** 2 + distiller.cfg.huber_c**2).sqrt() - distiller.cfg.huber_c).mean()
    torch.testing.assert_close(out.terms["loss_one_step"], d, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(out.loss, out.terms["loss_mcd"] + 3.0 * d, rtol=1e-4, atol=1e-7)

    lora = lora_parameters(net)
    distiller.target_ema = EMA(lora, 0.9)
    distiller.cfg = dataclasses.replace(distiller.cfg, target="ema")
    with torch.no_grad():
        for s in distiller.target_ema.shadow:
            s.mul_(0.5)
    live = [p.detach().clone() for p in lora]
    out = distiller.generator_step(batch, draws)
    out.loss.backward()  # the swap did not invalidate the one-step forward's saved tensors
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert all(torch.equal(p, q) for p, q in zip(lora, live))
    assert not torch.allclose(out.terms["loss_one_step"], d)  # the EMA weights made y_N

    # one_step_target "ema": the EMA takes the N steps, the consistency target stays online
    with pytest.raises(ValueError, match="one_step_target == 'ema' needs target_ema"):
        MCMDistiller(
            dataclasses.replace(distiller.cfg, target="online", one_step_target="ema"),
            net,
            motion=distiller.motion,
            disable_adapters=disable_adapters,
        )
    distiller.cfg = dataclasses.replace(distiller.cfg, target="online")
    online = distiller.generator_step(batch, draws)
    distiller.cfg = dataclasses.replace(distiller.cfg, one_step_target="ema")
    net.zero_grad()
    out = distiller.generator_step(batch, draws)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    assert all(torch.equal(p, q) for p, q in zip(lora, live))
    torch.testing.assert_close(out.terms["loss_mcd"], online.terms["loss_mcd"])
    y_ema = distiller.multistep_sample(noise, emb, None, 2)  # swaps the EMA in itself
    assert not torch.allclose(y_ema, y2)
    d_ema = (((one - y_ema) ** 2 + distiller.cfg.huber_c**2).sqrt() - distiller.cfg.huber_c).mean()
    torch.testing.assert_close(out.terms["loss_one_step"], d_ema, rtol=1e-4, atol=1e-7)
