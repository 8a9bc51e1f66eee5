"""Time and peak memory of one MCM training step: the library's structure vs the reference
implementation's (ModelScope-size UNets) or the naive structure (Wan2.1 1.3B).

    python benchmarks/train_step.py                      # world + full-size UNet, ~5 min on 2 CPU cores
    python benchmarks/train_step.py --world-only         # ~1 min
    python benchmarks/train_step.py --device cuda --full-frames 16 --full-latent 32   # on a GPU
    python benchmarks/train_step.py --models wan --max-memory-gb 22 \
        --out benchmarks/results/train_step_wan.json                    # 5 x 64x64 px, ~6 min
    python benchmarks/train_step.py --models wan --device cuda --dtype bf16 \
        --wan-frames 81 --wan-height 480 --wan-width 832 --out train_step_wan_gpu.json   # full size

Arms, at identical settings (the defaults of ``mcm.training.config``: LoRA rank 64, learnable
motion head, discriminator with gradient penalty, mixed trajectories; batch 1; the same
draws from the same seed):

* ``ours`` - the library's default: the teacher is the student with its LoRA disabled (one
  UNet in memory), the target is the online student (no copy) and the discriminator is the
  latent one (the frozen teacher's encoder blocks - a DiT's first blocks - on noised latent
  frames: no VAE decode, no extra backbone).
* ``reference`` - the reference implementation's structure: a separate frozen teacher copy
  of the UNet, a pixel discriminator (DINOv2 ViT-S/14, random weights) on frames that the
  VAE decodes *with gradient*, and the reference's calls (:func:`reference_call_pattern`:
  the teacher's conditional and unconditional rows in two calls, the discriminator step's
  second decode of the fakes, its backbone calls on fakes, reals and pixel interpolates).
* ``naive`` (the default second arm of ``wan``) - separate student, teacher and target
  copies of the network with the library's calls: a separate teacher, the pixel
  discriminator, and a frozen copy of the student (with its LoRA) as the target network
  (``MCMDistiller(target_model=...)``), whose LoRA follows the student's by EMA
  (``method.target_ema_decay``) after every optimiser step.
* ``ours_dinov2`` (opt-in with ``--arms``) - one UNet, pixel discriminator: separates the
  two effects.
* ``ours_no_d`` (opt-in) - one UNet and no discriminator (no adversarial term, no mixed
  trajectories): what every arm pays for the teacher, target and student, i.e. the lowest
  time any discriminator can add to.

Models:

* ``world`` - the shipped world teacher (``load_teacher("world")``): 8 frames of 4x8x8
  latents (32x32 px).
* ``full`` - a ModelScopeT2V-architecture ``UNet3DConditionModel`` (text-to-video-ms-1.7b
  config, ~1.41B parameters) and a Stable-Diffusion-architecture VAE, random weights, at
  a short clip (``--full-frames`` x ``--full-latent``^2 latents; default 2 x 16x16 =
  128x128 px). Text embeddings are random [1, 77, 1024] tensors (the text encoder is not
  part of a training step when embeddings come from the latent cache).
* ``wan`` - the Wan2.1-T2V-1.3B architecture with random weights: a
  ``WanTransformer3DModel`` (30 blocks of width 1536, 1,418,996,800 parameters) behind
  ``mcm.models.denoiser.WanDenoiser`` with Wan2.1's UniPC flow scheduler config, and the
  real ``AutoencoderKLWan`` (x8 spatial, x4 causal temporal) behind
  ``mcm.models.vae.WanVideoVAE``. A clip of ``--wan-frames`` (4k + 1) x ``--wan-height``
  x ``--wan-width`` pixels is latents
  [1, 16, 1 + (frames - 1) / 4, height / 8, width / 8] (default 5 x 64 x 64 -> 2 latent
  frames of 8x8; full size 81 x 480 x 832 -> [1, 16, 21, 60, 104]). UMT5 text embeddings
  are random [1, 512, 4096] tensors and the discriminator's caption vectors random [1, 4096]
  (in training they come from the latent cache: UMT5-XXL is not in memory). Gradient
  checkpointing is on in every arm (configs/wan2.1-t2v-1.3b.yaml); the discriminator sees
  the first latent frame of each clip (real: the first frame of the clip).

``--dtype bf16`` (full-size models) keeps the frozen network and VAE weights in bf16 and
runs both losses under ``torch.autocast`` in bf16, as ``model.frozen_dtype: auto`` with
``train.mixed_precision: bf16`` does on a GPU; LoRA weights stay fp32. It is meant for a
GPU: on CPU, bf16 convolutions under autocast (the VAE decode with gradient) are very slow.

Every (model, arm) runs in a fresh subprocess so that peak memory (``ru_maxrss`` on CPU,
``torch.cuda.max_memory_allocated`` on CUDA) is that configuration's alone. A
configuration that runs out of memory (a CUDA or CPU allocation error, or the kernel's OOM
killer) is recorded with ``"status": "oom"`` instead of stopping the run, and is tried
again at smaller clips (``wan``: half the frames down to 5, then half the height and width;
``full``: half the frames, then half the latent size) until one fits:
``"largest_fitting"`` holds that measurement, or None. ``--no-oom-retry`` skips the
retries. ``--max-memory-gb`` caps each CPU worker's address space (``RLIMIT_AS``), so that
an arm too big for a shared machine fails with an allocation error instead of waking the
OOM killer. Torch threads: ``--threads`` (default 1). Timings drift run to run on a shared
machine: compare the ratios, which are measured in one run. JSON to ``--out``; a markdown
table is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ARMS = {
    # name: (separate teacher copy, separate target copy, discriminator backbone)
    "ours": (False, False, "latent"),
    "reference": (True, False, "dinov2"),
    "naive": (True, True, "dinov2"),
    "ours_dinov2": (False, False, "dinov2"),
    "ours_no_d": (False, False, None),
}
# The method's options where the library's default differs from the reference
# implementation's: the reference arms keep the reference's (mcm.training.config documents
# each); ``--ours-set`` changes the ``ours`` arm's.
REFERENCE_SETTINGS = {"method": {"reuse_fake_features": False}}
MODELS = ("world", "full", "wan")
TARGET_TIME_RATIO = 0.7  # issue 25: ours / reference at most 0.7 at full size
DEFAULT_ARMS = {"world": "ours,reference", "full": "ours,reference", "wan": "ours,naive"}

from fullsize import MODELSCOPE_SCHEDULER, MODELSCOPE_UNET, SD_VAE  # noqa: E402

# DINOv2 ViT-S/14 (facebook/dinov2-small), random weights.
DINOV2_SMALL = dict(
    hidden_size=384,
    num_hidden_layers=12,
    num_attention_heads=6,
    mlp_ratio=4,
    patch_size=14,
    image_size=518,
    layerscale_value=1.0,
)
TEXT_LEN = 77

# Wan2.1-T2V-1.3B (Wan-AI/Wan2.1-T2V-1.3B-Diffusers): the transformer's config; its VAE is
# AutoencoderKLWan() with the defaults (base_dim 96, z_dim 16); UMT5-XXL states of width
# 4096 padded to 512 tokens (stock WanPipeline's max_sequence_length).
WAN_1_3B = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=12,
    attention_head_dim=128,
    in_channels=16,
    out_channels=16,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=8960,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    rope_max_seq_len=1024,
)
WAN_TEXT_LEN = 512
WAN_FLOW_SHIFT = 3.0  # the 480p scheduler's (configs/wan2.1-t2v-1.3b.yaml)


# ---------------------------------------------------------------------------- worker side
@dataclass
class Models:
    denoiser: object  # VideoDenoiser
    vae: object  # VideoVAE
    text_emb: object  # [B, L, D]
    uncond_emb: object  # [B, L, D]
    pooled: object  # [B, D']
    latent_shape: tuple  # [B, C, F, h, w]


@contextlib.contextmanager
def seeded(seed: int):
    """Weights drawn under a forked RNG: the same seed builds the same model, and the
    caller's global RNG is left untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_world(device) -> Models:
    from mcm.models import load_teacher

    bundle = load_teacher("world", device=device, dtype_policy="fp32")
    prompts = ["a red circle moving left"]
    text = bundle.text_encoder
    sample = bundle.denoiser.unet.config.sample_size
    return Models(
        denoiser=bundle.denoiser,
        vae=bundle.vae,
        text_emb=text(prompts),
        uncond_emb=text.empty(1),
        pooled=text.pooled(prompts),
        latent_shape=(1, bundle.vae.latent_channels, 8, sample, sample),
    )


def build_full(device, frames: int, latent: int, dtype=None) -> Models:
    import torch
    from diffusers import AutoencoderKL, UNet3DConditionModel

    from mcm.models import VideoVAE, make_denoiser

    with seeded(0):
        unet = UNet3DConditionModel(**MODELSCOPE_UNET)
        vae = AutoencoderKL(**SD_VAE)
    denoiser = make_denoiser("modelscope", unet.requires_grad_(False), MODELSCOPE_SCHEDULER)
    g = torch.Generator().manual_seed(1)
    dim = MODELSCOPE_UNET["cross_attention_dim"]
    return Models(
        denoiser=denoiser.to(device, dtype),
        vae=VideoVAE(vae, chunk_size=8).to(device, dtype),
        text_emb=torch.randn(1, TEXT_LEN, dim, generator=g).to(device),
        uncond_emb=torch.randn(1, TEXT_LEN, dim, generator=g).to(device),
        pooled=torch.randn(1, dim, generator=g).to(device),
        latent_shape=(1, 4, frames, latent, latent),
    )


def build_wan(device, frames: int, height: int, width: int, dtype=None) -> Models:
    """Wan2.1-T2V-1.3B with random weights; latents [1, 16, 1 + (frames - 1) / 4,
    height / 8, width / 8], text embeddings [1, 512, 4096], caption vectors [1, 4096]."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    from mcm.models import make_denoiser
    from mcm.models.tiny import wan_scheduler
    from mcm.models.vae import WanVideoVAE

    with seeded(0):
        transformer = WanTransformer3DModel(**WAN_1_3B)
        vae = AutoencoderKLWan()
    scheduler = wan_scheduler(WAN_FLOW_SHIFT)
    denoiser = make_denoiser("wan", transformer.requires_grad_(False), scheduler)
    video_vae = WanVideoVAE(vae, chunk_size=1)
    d = video_vae.downsample
    g = torch.Generator().manual_seed(1)
    dim = WAN_1_3B["text_dim"]
    return Models(
        denoiser=denoiser.to(device, dtype),
        vae=video_vae.to(device, dtype),
        text_emb=torch.randn(1, WAN_TEXT_LEN, dim, generator=g).to(device),
        uncond_emb=torch.randn(1, WAN_TEXT_LEN, dim, generator=g).to(device),
        pooled=torch.randn(1, dim, generator=g).to(device),
        latent_shape=(
            1,
            vae.config.z_dim,
            video_vae.latent_frames(frames),
            height // d,
            width // d,
        ),
    )


def check_wan_clip(frames: int, height: int, width: int) -> None:
    """Wan's VAE takes 4k + 1 frames; the transformer's 2x2 patches of x8 latents need
    height and width in multiples of 16."""
    if frames < 1 or (frames - 1) % 4:
        raise ValueError(f"--wan-frames must be 4k + 1 (5, 9, ..., 81); got {frames}.")
    if height % 16 or width % 16 or min(height, width) < 16:
        raise ValueError(f"--wan-height/--wan-width must be multiples of 16; got {height}x{width}.")


class UNetCalls:
    """Counts calls of one or more UNets (encoder-only calls included) and their rows."""

    def __init__(self, unets):
        self.calls = self.rows = 0
        self.handles = [u.register_forward_pre_hook(self._pre, with_kwargs=True) for u in unets]

    def _pre(self, module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        self.calls += 1
        self.rows += sample.shape[0]

    def reset(self):
        self.calls = self.rows = 0


class BackboneTimer:
    """Seconds spent in a discriminator backbone's forward calls (``encode``: every call of
    the network, batched or not), since the last :meth:`reset`."""

    def __init__(self, backbone, sync):
        self.seconds, self._sync = 0.0, sync
        if backbone is not None:
            self._encode, backbone.encode = backbone.encode, self._timed

    def _timed(self, *args, **kwargs):
        self._sync()
        t = time.perf_counter()
        try:
            return self._encode(*args, **kwargs)
        finally:
            self._sync()
            self.seconds += time.perf_counter() - t

    def reset(self):
        self.seconds = 0.0


def reference_call_pattern(MCMDistiller):
    """An :class:`MCMDistiller` that makes the network calls of one step of the reference
    implementation (its training loop, read for its structure), where they differ from the
    library's; the math is the same:

    * the teacher's conditional and unconditional predictions in two calls;
    * the discriminator step decodes the generator's fake latent frames again (no
      gradient) instead of reusing the decoded frames, and runs the backbone on the fake
      and the real frames in two calls;
    * the gradient penalty interpolates real and fake *frames* and runs the backbone on
      them (a third call; the library interpolates the backbone's features), its heads'
      logits summed per sample.
    """
    import torch

    from mcm.adversarial.losses import hinge_d_loss, penalty_of
    from mcm.diffusion import ddim_step, lcm_guidance

    class ReferenceCallPattern(MCMDistiller):
        latent_fakes = None

        @torch.no_grad()
        def teacher_ddim_step(self, x, t, t_prev, batch, w):
            with self._teacher() as teacher:
                x0_c, eps_c = teacher.predict_x0_eps(x, t, batch.text_emb)
                x0_u, eps_u = teacher.predict_x0_eps(x, t, batch.uncond_emb)
            x0, eps = lcm_guidance(x0_c, x0_u, w), lcm_guidance(eps_c, eps_u, w)
            return ddim_step(self.schedule, x0, eps, t_prev)

        def _frames(self, video, index, pooled_text):
            frames = video[:, :, index.to(video.device)].permute(0, 2, 1, 3, 4).flatten(0, 1)
            self.latent_fakes = frames.detach()
            return super()._frames(video, index, pooled_text)

        def discriminator_step(self, gen, batch, draws, penalty_weight=None):
            D, g = self.discriminator, self._d_generator(draws.seed + 1)
            with torch.no_grad():
                fake = self.decode_frames(self.latent_fakes)
                f_fake = D.features(fake, g)
                f_real = D.features(batch.real_frames, g)
            real_logits = D.logits(f_real, batch.real_pooled_text)
            fake_logits = D.logits(f_fake, gen.fake_pooled_text)
            loss = hinge_d_loss(real_logits, fake_logits)
            if penalty_weight is not None:
                n = fake.shape[0]
                u = torch.rand(n, 1, 1, 1, generator=g).to(fake)
                with torch.no_grad():
                    mixed = D.features(u * batch.real_frames + (1 - u) * fake, augment=False)
                mixed = [f.requires_grad_(True) for f in mixed]
                gp = penalty_of(D.logits(mixed, gen.fake_pooled_text), mixed, "sum")
                loss = loss + penalty_weight(float(gp.detach())) * gp
            return loss, {"loss_d": loss.detach()}

    return ReferenceCallPattern


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (VmHWM; Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _hwm_rss_gb() -> float:
    """VmHWM: the peak RSS since the last :func:`_reset_peak_rss` (or since start)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    return float("nan")


def run_arm(spec: dict) -> dict:
    """Build one (model, arm) and time ``spec['steps']`` training steps after warm-up."""
    import torch

    torch.set_num_threads(spec["threads"])
    rss_import = _rss_gb()
    from mcm.adversarial import AdaptivePenaltyWeight, DinoV2Backbone
    from mcm.models import attach_lora, copy_teacher, disable_adapters, lora_parameters
    from mcm.motion import build_motion_representation
    from mcm.training.config import DiscriminatorConfig, MethodConfig, ModelConfig
    from mcm.training.distiller import (
        DistillBatch,
        MCMDistiller,
        frame_discriminator,
        teacher_latent_backbone,
    )
    from mcm.training.ema import EMA
    from mcm.training.optim import make_optimizer

    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    separate_teacher, separate_target, backbone_kind = ARMS[base_arm(spec["arm"])]
    settings = spec.get("settings", {})
    m_cfg = ModelConfig()
    method = MethodConfig(**settings.get("method", {}))
    d_cfg = DiscriminatorConfig(**settings.get("discriminator", {}))
    bf16 = spec.get("dtype", "fp32") == "bf16" and spec["model"] != "world"
    dtype = torch.bfloat16 if bf16 else None  # of the frozen network and VAE weights
    # the recipe's mixed precision: both losses under autocast, backward outside
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
        if bf16
        else contextlib.nullcontext
    )
    checkpointing = spec["model"] == "wan"  # configs/wan2.1-t2v-1.3b.yaml

    t_build = time.perf_counter()
    if spec["model"] == "world":
        models = build_world(device)
    elif spec["model"] == "full":
        models = build_full(device, spec["full_frames"], spec["full_latent"], dtype)
    else:
        clip = (spec["wan_frames"], spec["wan_height"], spec["wan_width"])
        models = build_wan(device, *clip, dtype)
    student = models.denoiser
    if checkpointing:
        student.enable_gradient_checkpointing()
    teacher_model = copy_teacher(student) if separate_teacher else None
    attach_lora(student, rank=m_cfg.lora_rank, alpha=m_cfg.lora_alpha)
    # the naive structure's target network: a frozen copy of the student, LoRA included
    target_model = copy.deepcopy(student).requires_grad_(False) if separate_target else None
    C = models.latent_shape[1]
    with seeded(1):
        motion = build_motion_representation(method.motion, C).to(device)
    motion_ema, motion_target = EMA.of_module(motion, method.motion_ema_decay)

    disc = None
    with seeded(2):
        if backbone_kind is None:
            pass
        elif backbone_kind == "latent":
            backbone = teacher_latent_backbone(
                student,
                (d_cfg.latent_t_min, d_cfg.latent_t_max),
                models.uncond_emb[:1],
                min(models.latent_shape[-2:]),
                d_cfg.latent_blocks,
            )
        else:
            from transformers import Dinov2Config

            backbone = DinoV2Backbone(Dinov2Config(**DINOV2_SMALL), taps=tuple(d_cfg.taps))
        if backbone_kind is not None:
            disc = frame_discriminator(d_cfg, backbone, models.pooled.shape[-1]).to(device)

    vae = models.vae

    def decode_frames(frames):  # [N, C, h, w] -> what D sees
        if backbone_kind == "latent":
            return frames
        return vae.decode(frames[:, :, None])[:, :, 0]  # with gradient: the reference's cost

    distiller_class = MCMDistiller
    if spec["arm"] == "reference":
        distiller_class = reference_call_pattern(MCMDistiller)
    distiller = distiller_class(
        method,
        student,
        motion=motion,
        motion_target=motion_target,
        teacher_model=teacher_model,
        disable_adapters=disable_adapters,
        discriminator=disc,
        decode_frames=decode_frames,
        target_model=target_model,
    )
    student_params = lora_parameters(student) + [p for p in motion.parameters() if p.requires_grad]
    # the recipe's optimisers: AdamW, fused on the CPU (DistillRecipe.setup)
    fused = True if device.type == "cpu" else None
    opt_g = make_optimizer(student_params, 1e-6, fused=fused)
    heads = list(disc.head_parameters()) if disc is not None else []
    opt_d = make_optimizer(heads, d_cfg.lr, fused=fused) if heads else None
    gp_weight = AdaptivePenaltyWeight(d_cfg.gp_weight)

    target_lora = lora_parameters(target_model) if target_model is not None else []
    student_lora = lora_parameters(student)

    # A fixed synthetic batch: the step's cost does not depend on the values.
    g = torch.Generator().manual_seed(3)
    B, _, Fr, h, w = models.latent_shape
    # the recipe's real frames: one from each half of every clip (as many as the fakes);
    # Wan: each clip's first
    n_real = B if distiller.first_frame_only else B * min(method.frames_per_video, Fr)
    if backbone_kind != "dinov2":
        real = torch.randn(n_real, C, h, w, generator=g)
    else:
        d = vae.downsample
        real = torch.rand(n_real, 3, h * d, w * d, generator=g) * 2 - 1
    batch = DistillBatch(
        latents=torch.randn(models.latent_shape, generator=g).to(device),
        text_emb=models.text_emb,
        uncond_emb=models.uncond_emb,
        pooled_text=models.pooled,
        real_frames=real.to(device),
        real_pooled_text=models.pooled.repeat(n_real // B, 1),
    )
    unets = [m.unet for m in (student, teacher_model, target_model) if m is not None]
    counter = UNetCalls(unets)
    build_s = time.perf_counter() - t_build
    rss_setup = _rss_gb()
    n_params = sum(p.numel() for n, p in student.unet.named_parameters() if ".lora_" not in n)
    n_lora = sum(p.numel() for p in lora_parameters(student))
    n_heads = sum(p.numel() for p in heads)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    draws_gen = torch.Generator().manual_seed(4)
    backbone_s = BackboneTimer(disc.backbone if disc is not None else None, sync)

    def step(i: int) -> dict:
        draws = distiller.sample_draws(batch.latents, draws_gen)
        sync()
        backbone_s.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        if disc is not None:
            disc.requires_grad_heads(False)
        with autocast():
            gen = distiller.generator_step(batch, draws)
        sync()
        t1 = time.perf_counter()
        g_backbone = backbone_s.seconds
        gen.loss.backward()
        sync()
        t2 = time.perf_counter()
        if disc is not None:
            disc.requires_grad_heads(True)
            with autocast():
                d_loss, _ = distiller.discriminator_step(
                    gen, batch, draws, penalty_weight=lambda gp: gp_weight.update(gp, i)
                )
        sync()
        t2b = time.perf_counter()
        if disc is not None:
            d_loss.backward()
        sync()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(student_params, 10.0)
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        if opt_d is not None:
            opt_d.step()
            opt_d.zero_grad(set_to_none=True)
        motion_ema.update()
        if target_lora:  # the target network follows the student by EMA
            with torch.no_grad():
                for p_target, p in zip(target_lora, student_lora):
                    p_target.lerp_(p, 1 - method.target_ema_decay)
        sync()
        t4 = time.perf_counter()
        return {
            "step_s": t4 - t0,
            "cpu_s": time.process_time() - c0,
            "generator_forward_s": t1 - t0,
            "generator_backward_s": t2 - t1,
            "discriminator_s": t3 - t2,
            "optimizer_s": t4 - t3,
            # inside the phases above: the frozen backbone's forward calls of the generator's
            # adversarial term and of the discriminator step, the D step's forward
            # (backbone + heads + penalty) and its backward (heads only)
            "generator_backbone_s": g_backbone,
            "discriminator_backbone_s": backbone_s.seconds - g_backbone,
            "discriminator_forward_s": t2b - t2,
            "discriminator_backward_s": t3 - t2b,
            "use_real": bool(draws.use_real),
        }

    for i in range(spec["warmup"]):
        step(i)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    hwm_reset = _reset_peak_rss()
    counter.reset()
    timed = [step(spec["warmup"] + i) for i in range(spec["steps"])]

    def med(key):
        return round(statistics.median(t[key] for t in timed), 4)

    result = {
        "status": "ok",
        "model": spec["model"],
        "arm": spec["arm"],
        "separate_teacher": separate_teacher,
        "separate_target": separate_target,
        "discriminator": backbone_kind or "none",
        "gradient_checkpointing": checkpointing,
        "dtype": "bf16" if bf16 else "fp32",
        "device": str(device),
        "threads": spec["threads"],
        "size": size_of(spec),
        "latent_shape": list(models.latent_shape),
        "unet_parameters": n_params,
        "lora_parameters": n_lora,
        "discriminator_head_parameters": n_heads,
        "build_s": round(build_s, 2),
        "warmup_steps": spec["warmup"],
        "timed_steps": spec["steps"],
        "step_s": med("step_s"),
        "step_cpu_s": med("cpu_s"),
        "step_s_all": [round(t["step_s"], 4) for t in timed],
        "phases_s": {
            k: med(k)
            for k in (
                "generator_forward_s",
                "generator_backward_s",
                "discriminator_s",
                "optimizer_s",
                "generator_backbone_s",
                "discriminator_backbone_s",
                "discriminator_forward_s",
                "discriminator_backward_s",
            )
        },
        "settings": settings,
        "use_real": [t["use_real"] for t in timed],
        "unet_calls_per_step": counter.calls / spec["steps"],
        "unet_rows_per_step": counter.rows / spec["steps"],
        "rss_after_imports_gb": round(rss_import, 3),
        "rss_after_setup_gb": round(rss_setup, 3),
        "peak_rss_gb": round(_peak_rss_gb(), 3),
    }
    if hwm_reset:  # the timed steps' own peak, without the build's transients
        result["peak_rss_timed_steps_gb"] = round(_hwm_rss_gb(), 3)
    if cuda:
        result["peak_cuda_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    return result


# ---------------------------------------------------------------------------- parent side
def size_of(spec: dict) -> dict:
    """The clip size of a configuration: Wan pixels, full-size latents, the world's fixed."""
    if spec["model"] == "wan":
        return {
            "frames": spec["wan_frames"],
            "height": spec["wan_height"],
            "width": spec["wan_width"],
        }
    if spec["model"] == "full":
        return {"frames": spec["full_frames"], "latent": spec["full_latent"]}
    return {}


def size_label(size: dict) -> str:
    if "height" in size:
        return f"{size['frames']}x{size['height']}x{size['width']} px"
    if "latent" in size:
        return f"{size['frames']}x{size['latent']}x{size['latent']} latents"
    return "fixed"  # the world's 8 frames of 32x32 px


def with_size(spec: dict, size: dict) -> dict:
    if spec["model"] == "wan":
        keys = {"frames": "wan_frames", "height": "wan_height", "width": "wan_width"}
    else:
        keys = {"frames": "full_frames", "latent": "full_latent"}
    return {**spec, **{keys[k]: v for k, v in size.items()}}


def smaller_sizes(model: str, size: dict) -> list[dict]:
    """The clips tried, largest first, after an out-of-memory at ``size``: Wan halves the
    frames (4k + 1, down to 5), then the height and width (multiples of 16, down to 32);
    the full-size UNet halves the frames (down to 1), then the latent size (down to 8)."""
    out = []
    if model == "wan":
        f, h, w = size["frames"], size["height"], size["width"]
        while f > 5:
            f = max(5, 4 * ((f - 1) // 8) + 1)
            out.append({"frames": f, "height": h, "width": w})
        while min(h, w) // 2 // 16 * 16 >= 32:
            h, w = h // 2 // 16 * 16, w // 2 // 16 * 16
            out.append({"frames": f, "height": h, "width": w})
    elif model == "full":
        f, lat = size["frames"], size["latent"]
        while f > 1:
            f //= 2
            out.append({"frames": f, "latent": lat})
        while lat // 2 >= 8:
            lat //= 2
            out.append({"frames": f, "latent": lat})
    return out


def _failed(spec: dict, status: str, error: str) -> dict:
    return {
        "status": status,
        "model": spec["model"],
        "arm": spec["arm"],
        "size": size_of(spec),
        "error": error,
    }


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        s in msg for s in ("out of memory", "can't allocate memory", "cannot allocate memory")
    )


def run_worker(spec: dict) -> dict:
    """``run_arm`` in this process; an allocation failure becomes ``"status": "oom"``."""
    if spec.get("max_memory_gb") and "cuda" not in spec["device"]:
        limit = int(spec["max_memory_gb"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        return run_arm(spec)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        row = _failed(spec, "oom", f"{type(exc).__name__}: {str(exc)[:500]}")
        row["peak_rss_gb"] = round(_peak_rss_gb(), 3)
        import torch

        if "cuda" in spec["device"]:
            row["peak_cuda_allocated_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        return row


def run_in_subprocess(spec: dict, timeout: float) -> dict:
    """One configuration in a fresh interpreter (its own peak memory). Out of memory
    (reported by the worker, or the worker killed by SIGKILL, as the kernel's OOM killer
    does) and a timeout are results; any other failure raises."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return _failed(spec, "timeout", f"no result within {timeout:g} s (--timeout)")
    if proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return _failed(spec, "oom", "killed by SIGKILL (most likely the kernel's OOM killer)")
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['model']}/{spec['arm']} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(spec: dict, timeout: float, retry: bool) -> dict:
    """One (model, arm); after an out-of-memory, the same arm at :func:`smaller_sizes`
    until one fits (``largest_fitting``: that row, or None)."""
    row = run_in_subprocess(spec, timeout)
    if row["status"] != "oom" or not retry:
        return row
    row["tried_smaller"], row["largest_fitting"] = [], None
    for size in smaller_sizes(spec["model"], row["size"]):
        r = run_in_subprocess(with_size(spec, size), timeout)
        row["tried_smaller"].append({"size": size, "status": r["status"]})
        print(
            f"  {spec['model']}/{spec['arm']} at {size_label(size)}: {r['status']}", file=sys.stderr
        )
        if r["status"] == "ok":
            row["largest_fitting"] = r
            break
    return row


def _mem_key(row: dict) -> str:
    return "peak_cuda_allocated_gb" if "peak_cuda_allocated_gb" in row else "peak_rss_gb"


def base_arm(arm: str) -> str:
    """``ours[LABEL]`` (a ``--variant``) -> ``ours``."""
    return arm.split("[", 1)[0]


def ratios(rows: list[dict]) -> list[dict]:
    """arm / ours (and ours / arm) for each model, and each ``--variant`` over the
    reference; measured rows only."""
    out = []
    for model in MODELS:
        base = next(
            (r for r in rows if r["model"] == model and r["arm"] == "ours" and r["status"] == "ok"),
            None,
        )
        if base is None:
            continue
        for r in rows:
            if r["model"] != model or r["arm"] == "ours" or r["status"] != "ok":
                continue
            mem = _mem_key(r)
            q = {
                "model": model,
                "arm": r["arm"],
                "vs": "ours",
                "step_time_ratio": round(r["step_s"] / base["step_s"], 3),
                "step_cpu_time_ratio": round(r["step_cpu_s"] / base["step_cpu_s"], 3),
                "peak_memory_ratio": round(r[mem] / base[mem], 3),
                "peak_memory_extra_gb": round(r[mem] - base[mem], 3),
                "memory_measure": mem,
                "ours_over_arm_time": round(base["step_s"] / r["step_s"], 3),
                "ours_over_arm_memory": round(base[mem] / r[mem], 3),
            }
            if r["arm"] == "reference" and model == "full":
                q["ours_over_arm_time_rounds"] = per_round(base, r)
                q["target_ours_over_arm_time"] = TARGET_TIME_RATIO
                q["meets_target"] = q["ours_over_arm_time"] <= TARGET_TIME_RATIO
            key = "peak_rss_timed_steps_gb"
            if mem == "peak_rss_gb" and key in r and key in base:
                q["timed_steps_peak_rss_ratio"] = round(r[key] / base[key], 3)
            out.append(q)
        ref = next((r for r in rows if r["model"] == model and r["arm"] == "reference"), None)
        for r in rows:
            if r["model"] != model or "[" not in r["arm"] or r["status"] != "ok":
                continue
            if ref is None or ref["status"] != "ok":
                continue
            q = {
                "model": model,
                "arm": r["arm"],
                "vs": "reference",
                "ours_over_arm_time": round(r["step_s"] / ref["step_s"], 3),
                "ours_over_arm_memory": round(r[_mem_key(r)] / ref[_mem_key(ref)], 3),
            }
            if model == "full":
                q["ours_over_arm_time_rounds"] = per_round(r, ref)
                q["target_ours_over_arm_time"] = TARGET_TIME_RATIO
                q["meets_target"] = q["ours_over_arm_time"] <= TARGET_TIME_RATIO
            out.append(q)
    return out


def per_round(a: dict, b: dict) -> list[float] | None:
    """a's step time over b's in each round: arms of one round ran minutes apart, so on a
    host whose speed drifts these ratios are steadier than the medians' ratio."""
    ra, rb = a.get("step_s_rounds"), b.get("step_s_rounds")
    if not ra or not rb or len(ra) != len(rb):
        return None
    if not all(isinstance(x, float) for x in ra + rb):  # a round that ran out of memory
        return None
    return [round(x / y, 3) for x, y in zip(ra, rb)]


def table(rows: list[dict], rel: list[dict]) -> str:
    lines = [
        "| model | arm | clip (latents) | teacher | target | discriminator | step s (wall) "
        "| step s (CPU) | G fwd / G bwd / D s | net calls | peak mem GB | time ratio "
        "| mem ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in rows:
        size = size_label(r["size"])
        if r["status"] == "ok":  # and the latents [C, F, h, w]
            size = f"{size} ({'x'.join(map(str, r['latent_shape'][1:]))})"
        if r["status"] != "ok":
            fit = r.get("largest_fitting")
            lines.append(
                f"| {r['model']} | {r['arm']} | {size} | | | | {r['status'].upper()} | | | | | | |"
            )
            if fit is not None:
                notes.append(
                    f"{r['model']}/{r['arm']}: {r['status']} at {size}; largest clip that fitted: "
                    f"{size_label(fit['size'])}, {fit['step_s']:.3f} s/step, "
                    f"{fit[_mem_key(fit)]:.2f} GB peak"
                )
            elif "tried_smaller" in r:
                notes.append(f"{r['model']}/{r['arm']}: {r['status']} at every size tried")
            continue
        q = next((x for x in rel if x["model"] == r["model"] and x["arm"] == r["arm"]), None)
        p = r["phases_s"]
        lines.append(
            f"| {r['model']} | {r['arm']} | {size} "
            f"| {'copy' if r['separate_teacher'] else 'LoRA off'} "
            f"| {'copy' if r.get('separate_target') else 'online'} "
            f"| {r['discriminator']} | {r['step_s']:.3f} | {r['step_cpu_s']:.3f} "
            f"| {p['generator_forward_s']:.2f} / {p['generator_backward_s']:.2f} / "
            f"{p['discriminator_s']:.2f} | {r['unet_calls_per_step']:g} | {r[_mem_key(r)]:.2f} "
            f"| {q['step_time_ratio'] if q else 1.0:.2f}x "
            f"| {q['peak_memory_ratio'] if q else 1.0:.2f}x |"
        )
    for r in rows:
        p = r.get("phases_s", {})
        if r["status"] == "ok" and "discriminator_backbone_s" in p:
            notes.append(
                f"{r['model']}/{r['arm']}: backbone {p['generator_backbone_s']:.2f} s in the "
                f"generator's forward, {p['discriminator_backbone_s']:.2f} s in the "
                f"discriminator step; D step forward / backward "
                f"{p['discriminator_forward_s']:.2f} / {p['discriminator_backward_s']:.2f} s"
            )
    for q in rel:
        if "meets_target" in q:
            pair = f"ours / {q['arm']}" if q["vs"] == "ours" else f"{q['arm']} / {q['vs']}"
            rounds = q.get("ours_over_arm_time_rounds")
            notes.append(
                f"{q['model']}: {pair} time {q['ours_over_arm_time']:.3f} "
                + (f"(each round: {', '.join(f'{x:.3f}' for x in rounds)}) " if rounds else "")
                + f"(target <= {q['target_ours_over_arm_time']}: "
                f"{'met' if q['meets_target'] else 'not met'}), peak memory "
                f"{q['ours_over_arm_memory']:.3f}"
            )
    return "\n".join(lines + [""] + notes if notes else lines)


def median_round(runs: list[dict]) -> dict:
    """One arm's row from its rounds: the round with the median step time (the lower
    middle of an even count), with every round's step time in ``step_s_rounds``."""
    ok = sorted((r for r in runs if r["status"] == "ok"), key=lambda r: r["step_s"])
    if not ok:
        return runs[0]
    row = dict(ok[(len(ok) - 1) // 2])
    row["rounds"] = len(runs)
    row["step_s_rounds"] = [r["step_s"] if r["status"] == "ok" else r["status"] for r in runs]
    return row


def parse_settings(items: list[str]) -> dict:
    """["method.key=value", ...] -> {"method": {"key": value}}; values are YAML-like
    scalars (true/false, numbers, null), validated when the config is made."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("method", "discriminator"):
            raise ValueError(
                f"--ours-set takes method.KEY=VALUE or discriminator.KEY=VALUE; got {item!r}."
            )
        lowered = value.strip().lower()
        if lowered in ("true", "false", "null", "none"):
            parsed = {"true": True, "false": False}.get(lowered)
        else:
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                parsed = value
        out.setdefault(section, {})[name] = parsed
    return out


def settings_of(arm: str, ours: dict, variants: dict) -> dict:
    """The method and discriminator settings of an arm: the reference arms keep the
    reference implementation's; ``ours[LABEL]`` is ``ours`` updated by its variant's."""
    if not arm.startswith("ours"):
        return REFERENCE_SETTINGS
    if "[" not in arm:
        return ours
    extra = variants[arm[len("ours[") : -1]]
    return {k: {**ours.get(k, {}), **extra.get(k, {})} for k in {*ours, *extra}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Time and peak memory of one MCM step: the library's structure vs the "
        "reference's (world, full) or the naive one (wan).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--out", default="benchmarks/results/train_step.json")
    ap.add_argument("--world-only", action="store_true", help="skip the full-size models (~1 min)")
    ap.add_argument("--models", default="world,full", help="comma-separated among world, full, wan")
    ap.add_argument(
        "--arms",
        default=None,
        help=f"comma-separated arms among {', '.join(ARMS)}, for every model; 'ours' is the "
        "ratios' base. Default: ours,reference (world, full); ours,naive (wan)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch threads per configuration")
    ap.add_argument(
        "--device",
        default="cpu",
        help="device of the full-size runs, full and wan (cpu, cuda, ...)",
    )
    ap.add_argument("--world-device", default="cpu", help="device of the world runs")
    ap.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default="fp32",
        help="frozen weights of full and wan (bf16: and autocast, as the recipe on a GPU)",
    )
    ap.add_argument("--world-steps", type=int, default=5, help="timed steps (world)")
    ap.add_argument("--world-warmup", type=int, default=2)
    ap.add_argument("--full-steps", type=int, default=1, help="timed steps (full-size)")
    ap.add_argument("--full-warmup", type=int, default=1)
    ap.add_argument("--full-frames", type=int, default=2, help="frames of the full-size clip")
    ap.add_argument("--full-latent", type=int, default=16, help="latent height = width (x8 pixels)")
    ap.add_argument("--wan-steps", type=int, default=1, help="timed steps (wan)")
    ap.add_argument("--wan-warmup", type=int, default=1)
    ap.add_argument("--wan-frames", type=int, default=5, help="frames of the Wan clip (4k + 1)")
    ap.add_argument("--wan-height", type=int, default=64, help="Wan clip height in pixels (x16)")
    ap.add_argument("--wan-width", type=int, default=64, help="Wan clip width in pixels (x16)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    ap.add_argument(
        "--no-oom-retry",
        action="store_true",
        help="record an out-of-memory arm without trying it at smaller clips",
    )
    ap.add_argument(
        "--max-memory-gb",
        type=float,
        default=None,
        help="cap each CPU worker's address space (RLIMIT_AS), so that an arm too big fails "
        "with an allocation error (recorded as oom) instead of waking the OOM killer",
    )
    ap.add_argument(
        "--ours-set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a method or discriminator setting of the ours (and ours_dinov2) arm, e.g. "
        "method.reuse_fake_features=false (repeatable); the reference arms keep the "
        "reference implementation's settings",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=SECTION.KEY=VALUE[,...]",
        help="one more arm, ours[LABEL]: the ours arm with these settings on top of "
        "--ours-set, e.g. cheap=method.reuse_fake_features=true,discriminator.latent_blocks=1 "
        "(repeatable); its time over the reference's is in the ratios",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every arm this many times, the arms interleaved, and keep each arm's "
        "median round: on a shared host whose speed drifts, the ratios then compare arms "
        "measured over the same stretch of time",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return 0

    models = ["world"] if args.world_only else [m.strip() for m in args.models.split(",")]
    if not models or any(m not in MODELS for m in models):
        raise ValueError(f"--models must name models among {list(MODELS)}; got {args.models!r}.")
    variants = {}
    for item in args.variant:
        label, sep, settings = item.partition("=")
        if not sep or not label or "[" in label or "]" in label:
            raise ValueError(f"--variant takes LABEL=SECTION.KEY=VALUE[,...]; got {item!r}.")
        variants[label] = parse_settings(settings.split(","))
    arms_of = {}
    for model in models:
        arms = [a.strip() for a in (args.arms or DEFAULT_ARMS[model]).split(",") if a.strip()]
        unknown = [a for a in arms if a not in ARMS]
        if unknown or "ours" not in arms:
            raise ValueError(
                f"--arms must include 'ours' and name arms among {list(ARMS)}; got {arms}."
            )
        arms_of[model] = arms + [f"ours[{label}]" for label in variants]
    if "wan" in models:
        check_wan_clip(args.wan_frames, args.wan_height, args.wan_width)
    if "cuda" in args.device:
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked but CUDA is not available; use --device cpu.")
    ours_settings = parse_settings(args.ours_set)
    rows = []
    t0 = time.perf_counter()
    for model in models:
        per_arm: dict[str, list[dict]] = {arm: [] for arm in arms_of[model]}
        for round_ in range(args.rounds):  # the arms interleaved: the host's drift hits all
            for arm in arms_of[model]:
                world = model == "world"
                spec = {
                    "model": model,
                    "arm": arm,
                    "device": args.world_device if world else args.device,
                    "dtype": args.dtype,
                    "threads": args.threads,
                    "steps": {"world": args.world_steps, "full": args.full_steps}.get(
                        model, args.wan_steps
                    ),
                    "warmup": {"world": args.world_warmup, "full": args.full_warmup}.get(
                        model, args.wan_warmup
                    ),
                    "full_frames": args.full_frames,
                    "full_latent": args.full_latent,
                    "wan_frames": args.wan_frames,
                    "wan_height": args.wan_height,
                    "wan_width": args.wan_width,
                    "max_memory_gb": args.max_memory_gb,
                    "settings": settings_of(arm, ours_settings, variants),
                }
                t = time.perf_counter()
                r = measure(spec, args.timeout, not args.no_oom_retry)
                per_arm[arm].append(r)
                what = (
                    f"{r['step_s']:.3f} s/step, peak {r[_mem_key(r)]:.2f} GB"
                    if r["status"] == "ok"
                    else r["status"]
                )
                took = time.perf_counter() - t
                print(f"{model}/{arm} (round {round_ + 1}): {what} ({took:.0f} s)", file=sys.stderr)
        rows += [median_round(per_arm[arm]) for arm in arms_of[model]]
    rel = ratios(rows)
    import torch

    result = {
        "benchmark": "train_step",
        "command": "python " + " ".join(sys.argv),
        "what": "one MCM optimiser step (generator step + backward, discriminator step with "
        "gradient penalty + backward, both optimiser steps, motion-head EMA; naive: the "
        "target copy's LoRA EMA); batch 1",
        "composed": False,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "threads": args.threads,
            "cuda_device": torch.cuda.get_device_name() if "cuda" in args.device else None,
        },
        "configs": {
            "modelscope_unet": MODELSCOPE_UNET,
            "sd_vae": SD_VAE,
            "dinov2": DINOV2_SMALL,
            "wan_transformer": WAN_1_3B,
            "wan_vae": "AutoencoderKLWan() defaults (base_dim 96, z_dim 16)",
            "wan_text_emb": [1, WAN_TEXT_LEN, WAN_1_3B["text_dim"]],
            "wan_flow_shift": WAN_FLOW_SHIFT,
        },
        "results": rows,
        "ratios": rel,
        "total_s": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(table(rows, rel))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
