"""The distillation recipe: `mcm train` runs this, top to bottom.

torchtune-style: ``setup()`` builds everything from the config, ``train()`` is the loop,
``save_checkpoint()`` / ``load_checkpoint()`` make a run resumable bit for bit.

Multi-process (accelerate/torchrun): the trainable parameters are the LoRA, the motion head
and the discriminator heads - a few MB - so instead of wrapping the UNet in DDP the loop
all-reduces their gradients once per optimiser step. Every rank then takes the same step
and ends with identical weights. With an FSDP accelerate config the UNet's blocks are
sharded instead (:mod:`mcm.training.sharding`): FSDP averages their LoRA gradients and
the loop all-reduces only the rest; checkpoints and the export gather the full weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, gather_object, set_seed
from tqdm.auto import tqdm

from mcm.adversarial import (
    AdaptivePenaltyWeight,
    DinoV2Backbone,
    FrameDiscriminator,
    real_frames_from_clips,
)
from mcm.data import build_image_loader, build_video_loader
from mcm.media import write_video
from mcm.models import (
    LoRAEMA,
    attach_lora,
    disable_adapters,
    export_student,
    load_lora_state_dict,
    load_teacher,
    lora_parameters,
    lora_state_dict,
    read_lora,
    save_lora,
)
from mcm.models.export import diffusers_lora_state_dict
from mcm.models.sampling import sample_student, sample_teacher
from mcm.motion import EMAModule, build_motion_representation
from mcm.training import checkpoint as ckpt
from mcm.training.config import TrainConfig
from mcm.training.config_io import save_config, to_dict
from mcm.training.distiller import DistillBatch, MCMDistiller, teacher_latent_backbone
from mcm.training.schedules import lr_scheduler
from mcm.training.sharding import (
    clip_grad_norm_,
    fsdp_plugin,
    full_optimizer_state,
    is_sharded,
    reshard,
    shard_optimizer_state,
    shard_unet,
)

log = logging.getLogger("mcm.train")


class NonFiniteLossError(RuntimeError):
    pass


class DistillRecipe:
    """Distil an MCM (or plain LCM) student from a teacher, as the config says."""

    def __init__(self, cfg: TrainConfig, resume: str | None = None):
        self.cfg = cfg
        self.resume = resume
        self.out = Path(cfg.output_dir)
        self.step = 0
        self.nonfinite_in_row = 0
        self.nonfinite_total = 0
        self._stop_signal: int | None = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        self.accelerator = acc = Accelerator(
            mixed_precision=cfg.train.mixed_precision,
            log_with=None if cfg.train.tracker == "none" else cfg.train.tracker,
            project_dir=str(self.out),
        )
        set_seed(cfg.train.seed)  # the same initial weights (heads, LoRA) on every rank
        # One generator draws everything random in a step; the same on every rank except for
        # the rank offset, so ranks see different noise but a resumed run replays exactly.
        self.generator = torch.Generator().manual_seed(
            cfg.train.seed * 1_000_003 + acc.process_index
        )
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            if cfg.train.tracker != "none":
                acc.init_trackers("mcm", config=_flat(to_dict(cfg)))

        device = acc.device
        m = cfg.model
        self.bundle = load_teacher(
            m.teacher, device=device, dtype_policy=m.frozen_dtype, vae_chunk_size=m.vae_chunk_size
        )
        student = self.bundle.denoiser
        attach_lora(
            student,
            rank=cfg.model.lora_rank,
            alpha=cfg.model.lora_alpha,
            dropout=cfg.model.lora_dropout,
            target_modules=cfg.model.lora_target_modules,
        )
        self.fsdp = fsdp_plugin(acc)  # None unless the accelerate config asks for FSDP
        if self.fsdp is not None:
            self._check_fsdp_config()
        fsdp_checkpointing = getattr(self.fsdp, "activation_checkpointing", False)
        if cfg.model.gradient_checkpointing or fsdp_checkpointing:
            student.enable_gradient_checkpointing()
        if self.fsdp is not None:  # before anything keeps a reference to a parameter
            self.fsdp_units = shard_unet(student.unet, self.fsdp, device)
            n = len(self.fsdp_units)
            log.info("FSDP: %d UNet units sharded over %d ranks.", n, acc.num_processes)
        teacher_model = None
        if cfg.model.separate_teacher:
            teacher_model = load_teacher(
                m.teacher, device=device, dtype_policy=m.frozen_dtype
            ).denoiser
            teacher_model.requires_grad_(False).eval()
            if self.fsdp is not None:
                self.fsdp_units += shard_unet(teacher_model.unet, self.fsdp, device)

        channels = self.bundle.vae.latent_channels
        self.motion = build_motion_representation(cfg.method.motion, channels).to(device)
        learnable = any(p.requires_grad for p in self.motion.parameters())
        self.motion_target = (
            EMAModule(self.motion, cfg.method.motion_ema_decay) if learnable else None
        )
        self.target_ema = (
            LoRAEMA(student, cfg.method.target_ema_decay) if cfg.method.target == "ema" else None
        )

        self.discriminator = self._build_discriminator() if cfg.discriminator.enabled else None
        self.distiller = MCMDistiller(
            cfg.method,
            student,
            motion=self.motion,
            motion_target=self.motion_target.module if self.motion_target else None,
            teacher_model=teacher_model,
            disable_adapters=disable_adapters,
            discriminator=self.discriminator,
            decode_frames=self._decode_frames,
            target_ema=self.target_ema,
        )

        self._reshard()  # the discriminator's probe may have left blocks gathered
        lora = lora_parameters(student)
        head = [p for p in self.motion.parameters() if p.requires_grad]
        self.student_params = lora + head
        groups = [{"params": lora}]
        if head:
            groups.append({"params": head, "lr": cfg.method.motion_head_lr or cfg.train.lr})
        self.optim_g = self._optimizer(
            groups, cfg.train.lr, cfg.train.betas, cfg.train.weight_decay
        )
        self.sched_g = lr_scheduler(
            self.optim_g, cfg.train.warmup_steps, cfg.train.max_steps, cfg.train.lr_schedule
        )
        if self.discriminator is not None:
            d = cfg.discriminator
            self.optim_d = self._optimizer(
                list(self.discriminator.head_parameters()), d.lr, d.betas, d.weight_decay
            )
            self.sched_d = lr_scheduler(
                self.optim_d, cfg.train.warmup_steps, cfg.train.max_steps, "constant"
            )

            self.gp_weight = AdaptivePenaltyWeight(d.gp_weight)
        self.optim_g = acc.prepare_optimizer(self.optim_g)
        if self.discriminator is not None:
            self.optim_d = acc.prepare_optimizer(self.optim_d)

        self._build_data()
        self._teacher_validated = (self.out / "validation" / "teacher").exists()
        set_seed(cfg.train.seed + acc.process_index)  # anything drawn later differs per rank
        if self.resume:
            self.load_checkpoint(ckpt.resolve_checkpoint(self.out, self.resume))

    def _reshard(self) -> None:
        """FSDP: free every gathered block, so that the UNet's parameters are the shards (the
        optimizer's, the checkpoint's) and no block runs on weights older than a step."""
        if self.fsdp is not None:
            reshard(self.fsdp_units)

    def _check_fsdp_config(self) -> None:
        """Settings the sharded path does not support, with the fix."""
        cfg = self.cfg
        if cfg.train.mixed_precision == "fp16":
            raise ValueError(
                "train.mixed_precision=fp16 with FSDP: the loss scaler would check only each "
                "rank's shard of the gradients for inf; use train.mixed_precision=bf16."
            )
        if cfg.method.target == "ema":
            raise ValueError(
                "method.target=ema is not supported with FSDP (the EMA swap would miss "
                "gathered blocks); use method.target=online or a DDP accelerate config."
            )
        if cfg.train.optimizer != "adamw":
            raise ValueError(
                f"train.optimizer={cfg.train.optimizer} with FSDP: use train.optimizer=adamw "
                "(the sharded LoRA weights are DTensors)."
            )

    def _optimizer(self, params, lr, betas, weight_decay):
        if self.cfg.train.optimizer == "adamw8bit":
            try:
                import bitsandbytes as bnb
            except ImportError as e:
                raise ImportError(
                    "train.optimizer=adamw8bit needs bitsandbytes: `pip install bitsandbytes`, "
                    "or set train.optimizer=adamw."
                ) from e
            return bnb.optim.AdamW8bit(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
        return torch.optim.AdamW(
            params,
            lr=lr,
            betas=tuple(betas),
            weight_decay=weight_decay,
            eps=self.cfg.train.adam_eps,
        )

    def _build_discriminator(self):
        d, student = self.cfg.discriminator, self.bundle.denoiser
        if d.backbone == "latent":
            backbone = teacher_latent_backbone(
                student,
                (d.latent_t_min, d.latent_t_max),
                self.bundle.text_encoder.empty(1).to(self.accelerator.device),
                student.unet.config.sample_size,
            )
        else:
            backbone = DinoV2Backbone(d.dinov2, taps=tuple(d.taps))
        text_dim = self.bundle.text_encoder.embedding_dim
        disc = FrameDiscriminator(
            backbone,
            text_dim=text_dim,
            cmap_dim=d.head_channels,
            augment_policy=d.augment,
            conditional=d.conditional,
        )
        return disc.to(self.accelerator.device)

    def _decode_frames(self, frames):
        """Latent frames [N, C, h, w] -> what the discriminator sees (decoded with gradient
        for a pixel-space backbone; unchanged for the latent backbone)."""
        if self.cfg.discriminator.backbone == "latent":
            return frames
        return self.bundle.vae.decode(frames[:, :, None])[:, :, 0]

    # ------------------------------------------------------------------ data
    def _build_data(self) -> None:
        acc, cfg = self.accelerator, self.cfg
        self.video_loader = build_video_loader(
            cfg.data.video,
            batch_size=cfg.train.batch_size,
            seed=cfg.train.seed,
            rank=acc.process_index,
            world_size=acc.num_processes,
        )
        self.image_loader = None
        if cfg.data.images is not None and self.discriminator is not None:
            self.image_loader = build_image_loader(
                cfg.data.images,
                batch_size=cfg.train.batch_size * cfg.method.frames_per_video,
                seed=cfg.train.seed,
                rank=acc.process_index,
                world_size=acc.num_processes,
            )
        self._video_iter = self._image_iter = None

    def _next(self, loader, attr):
        if getattr(self, attr) is None:
            setattr(self, attr, iter(loader))
        return next(getattr(self, attr))

    @torch.no_grad()
    def next_batch(self) -> DistillBatch:
        """Encode the next clips (unless cached) and captions into a DistillBatch."""
        dev, vae, text = self.accelerator.device, self.bundle.vae, self.bundle.text_encoder
        raw = self._next(self.video_loader, "_video_iter")
        captions = list(raw["caption"])
        if "latents" in raw:
            latents = raw["latents"].to(dev)
        else:
            # The posterior mean, as `mcm data cache-latents` stores: cached and uncached runs agree.
            latents = vae.encode(raw["video"].to(dev))
        text_emb = raw["text_emb"].to(dev) if "text_emb" in raw else text(captions)
        batch = DistillBatch(
            latents=latents, text_emb=text_emb, uncond_emb=text.empty(len(captions))
        )
        if self.discriminator is None:
            return batch
        drop = self.cfg.discriminator.caption_drop

        def pooled(texts: list[str]):  # D's conditioning, in the image captions' form
            return text.pooled([re.sub(drop, "", c) for c in texts] if drop else texts)

        batch.pooled_text = pooled(captions)
        if self.image_loader is not None:
            images = self._next(self.image_loader, "_image_iter")
            real, real_captions = images["image"].to(dev), list(images["caption"])
            if self.cfg.discriminator.backbone == "latent":
                real = vae.encode(real[:, :, None])[:, :, 0]
        else:  # one frame from each half of every clip
            clips = latents if self.cfg.discriminator.backbone == "latent" else raw["video"].to(dev)
            real = real_frames_from_clips(clips, self.generator)
            real_captions = [c for c in captions for _ in range(real.shape[0] // len(captions))]
        batch.real_frames, batch.real_pooled_text = real, pooled(real_captions)
        return batch

    # ------------------------------------------------------------------ loop
    def train(self, on_step: Callable[[int], None] | None = None) -> dict:
        """Run to train.max_steps; ``on_step(step)`` is called after every optimiser step.
        Returns the last logged loss terms."""
        cfg, acc = self.cfg, self.accelerator
        self._install_signal_handlers()
        if self.step == 0 and self.discriminator is not None and cfg.discriminator.warmup_steps:
            self.warm_up_discriminator()
        bar = tqdm(
            total=cfg.train.max_steps,
            initial=self.step,
            disable=not acc.is_main_process,
            desc="distil",
            unit="step",
        )
        t_last, logged = time.perf_counter(), {}
        stop = False
        while self.step < cfg.train.max_steps and not (stop := self._stopping()):
            terms = self.train_step()
            if terms is None:  # non-finite loss: nothing was updated
                continue
            self.step += 1
            if on_step is not None:
                on_step(self.step)
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items() if k.startswith("loss")})
            if self.step % cfg.train.log_every == 0 or self.step == cfg.train.max_steps:
                now = time.perf_counter()
                terms["steps_per_s"] = cfg.train.log_every / max(now - t_last, 1e-9)
                terms["nonfinite_total"] = self.nonfinite_total
                if torch.cuda.is_available():
                    terms["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
                t_last, logged = now, terms
                if cfg.train.tracker != "none":
                    acc.log(terms, step=self.step)
            if cfg.train.validate_every and self.step % cfg.train.validate_every == 0:
                self.validate()
            if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0:
                self.save_checkpoint()
        bar.close()
        log.info("Training clips: %s", self.video_loader.bad_log.summary())
        if self.image_loader is not None:
            log.info("Images: %s", self.image_loader.bad_log.summary())
        if stop:
            log.warning(
                "Received signal %s: saving a checkpoint at step %d and stopping.",
                self._stop_signal or "(on another rank)",
                self.step,
            )
        self.save_checkpoint()
        if not stop and cfg.train.export:
            self.export()
        return logged

    def warm_up_discriminator(self) -> None:
        """discriminator.warmup_steps D-only steps: real images against frames of the
        training clips. The student starts as the teacher, whose samples look like those
        clips, so its adversarial loss carries the look from step 1 instead of after the
        heads have caught up (~150 steps on the world)."""
        n = self.cfg.discriminator.warmup_steps
        for _ in tqdm(range(n), desc="D warm-up", disable=not self.accelerator.is_main_process):
            batch = self.next_batch()
            draws = self.distiller.sample_draws(batch.latents, self.generator)
            gen = self.distiller.clips_as_fakes(batch, draws)
            with self.accelerator.autocast():
                loss, _ = self._discriminator_loss(gen, batch, draws)
            if self._finite(loss):
                self.accelerator.backward(loss)
                self._all_reduce_grads(list(self.discriminator.head_parameters()))
                self._step_discriminator()
            else:
                self.optim_d.zero_grad(set_to_none=True)

    def _step_discriminator(self) -> float:
        """One update of the discriminator's heads from their gradients; returns the norm."""
        norm = _grad_norm(list(self.discriminator.head_parameters()))
        self.optim_d.step()
        self.sched_d.step()
        self.optim_d.zero_grad(set_to_none=True)
        return norm

    def train_step(self) -> dict[str, float] | None:
        """One optimiser step: grad_accum micro-batches of the MCM step, then the updates.

        Returns the averaged loss terms, or None when a loss was non-finite (no update).
        """
        cfg = self.cfg
        sums: dict[str, float] = {}
        skip = False
        for _ in range(cfg.train.grad_accum):
            batch = self.next_batch()
            draws = self.distiller.sample_draws(batch.latents, self.generator)
            if self.fsdp is not None:  # the student's own sample is one more (collective) call
                draws.use_real = self._from_rank0(draws.use_real)
            if self.discriminator is not None:
                self.discriminator.requires_grad_heads(False)  # L_G must not train D
            with self.accelerator.autocast():
                gen = self.distiller.generator_step(batch, draws)
            if not self._finite(gen.loss):
                skip = True
                break
            self.accelerator.backward(gen.loss / cfg.train.grad_accum)
            terms = dict(gen.terms)
            if self.discriminator is not None:
                self.discriminator.requires_grad_heads(True)
                d_loss, d_terms = self._discriminator_loss(gen, batch, draws)
                if not self._finite(d_loss):
                    skip = True
                    break
                self.accelerator.backward(d_loss / cfg.train.grad_accum)
                terms.update(d_terms)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) / cfg.train.grad_accum
        if skip:
            return self._skip_nonfinite()
        self.nonfinite_in_row = 0

        self._all_reduce_grads()
        self._reshard()  # the next forward gathers the updated weights
        max_norm = cfg.train.max_grad_norm
        if max_norm > 0:
            if self.fsdp is None:
                norm = self.accelerator.clip_grad_norm_(self.student_params, max_norm)
            else:  # a norm over sharded (DTensor) and replicated gradients
                norm = clip_grad_norm_(self.student_params, max_norm)
            sums["grad_norm_g"] = float(norm)
        self.optim_g.step()
        self.sched_g.step()
        self.optim_g.zero_grad(set_to_none=True)
        sums["lr_g"] = self.sched_g.get_last_lr()[0]
        if self.discriminator is not None:
            sums["grad_norm_d"] = self._step_discriminator()
        if self.motion_target is not None:
            self.motion_target.update(self.motion)
        if self.target_ema is not None:
            self.target_ema.update()
        return sums

    # Under FSDP every forward and backward through the UNet is a collective, so all ranks
    # must make the same random choices. With several processes (DDP or FSDP) every step
    # ends in a gradient all-reduce, so skipping a step or stopping is agreed by all ranks.
    def _from_rank0(self, flag: bool) -> bool:
        """Rank 0's value of a random choice."""
        t = torch.tensor([float(flag)], device=self.accelerator.device)
        return bool(broadcast(t, from_process=0).item())

    def _stopping(self) -> bool:
        """Whether a SIGINT/SIGTERM arrived (on any rank, so that all ranks stop after the
        same step)."""
        stop = self._stop_signal is not None
        if self.accelerator.num_processes == 1:
            return stop
        t = torch.tensor([float(stop)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(t, reduction="sum").item() > 0)

    def _finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite (on every rank)."""
        finite = bool(torch.isfinite(loss))
        if self.accelerator.num_processes == 1:
            return finite
        t = torch.tensor([float(finite)], device=self.accelerator.device)
        return bool(
            self.accelerator.reduce(t, reduction="sum").item() == self.accelerator.num_processes
        )

    def _discriminator_loss(self, gen, batch, draws):
        """Hinge loss of D plus the adaptive feature-space gradient penalty."""
        d = self.cfg.discriminator
        use_gp = d.gp_weight > 0 and self.step % d.gp_every == 0
        weight = (lambda gp: self.gp_weight.update(gp, self.step)) if use_gp else None
        return self.distiller.discriminator_step(gen, batch, draws, penalty_weight=weight)

    def _skip_nonfinite(self) -> None:
        self.optim_g.zero_grad(set_to_none=True)
        if self.discriminator is not None:
            self.optim_d.zero_grad(set_to_none=True)
        self.nonfinite_in_row += 1
        self.nonfinite_total += 1
        log.warning(
            "Non-finite loss at step %d: step skipped (%d in a row).",
            self.step,
            self.nonfinite_in_row,
        )
        if self.nonfinite_in_row >= self.cfg.train.max_nonfinite:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_row} non-finite losses in a row (train.max_nonfinite="
                f"{self.cfg.train.max_nonfinite}); lower train.lr, check the data, or use "
                "train.mixed_precision=no/bf16 instead of fp16."
            )
        return None

    def _all_reduce_grads(self, params: list | None = None) -> None:
        """Average the gradients of ``params`` (default: the student's and D's heads')."""
        if self.accelerator.num_processes == 1:
            return
        if params is None:
            params = list(self.student_params)
            if self.discriminator is not None:
                params += list(self.discriminator.head_parameters())
        for p in params:
            if is_sharded(p):  # FSDP already averaged it over the ranks in the backward
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad = self.accelerator.reduce(p.grad, reduction="mean")

    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self._stop_signal = signum

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not in the main thread
                signal.signal(sig, handler)

    # ------------------------------------------------------------------ validation / export
    @torch.no_grad()
    def validate(self) -> None:
        """Student videos at each validation step count (and the teacher's once), written as
        mp4 under output_dir/validation and logged to the tracker.

        With FSDP every rank samples (each forward gathers the shards); rank 0 writes.
        """
        cfg, acc = self.cfg, self.accelerator
        if not cfg.train.validation_prompts:
            return
        if not acc.is_main_process and self.fsdp is None:
            return
        prompts, frames, seed = (
            cfg.train.validation_prompts,
            cfg.train.validation_frames,
            cfg.train.validation_seed,
        )
        for steps in cfg.train.validation_steps:
            videos = sample_student(
                self.bundle,
                prompts,
                steps,
                seed=seed,
                num_frames=frames,
                timestep_scaling=cfg.method.timestep_scaling,
                original_inference_steps=cfg.method.num_ode_steps,
            )
            self._log_videos(f"student-{steps}step", videos, f"step-{self.step}")
        if not self._teacher_validated:
            with disable_adapters(self.bundle.denoiser):
                videos = sample_teacher(self.bundle, prompts, 50, 7.5, seed=seed, num_frames=frames)
            self._log_videos("teacher-50step", videos, "teacher")
            self._teacher_validated = True

    def _log_videos(self, name: str, videos, folder: str) -> None:
        if not self.accelerator.is_main_process:
            return
        out = self.out / "validation" / folder
        paths = [write_video(out / f"{name}-{i}.mp4", v) for i, v in enumerate(videos)]
        tracker = self.cfg.train.tracker
        if tracker == "tensorboard":
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
            for i, v in enumerate(videos):  # frames as an image strip: no moviepy needed
                writer.add_images(
                    f"validation/{name}/{i}", (v.permute(1, 0, 2, 3) + 1) / 2, self.step
                )
        elif tracker == "wandb":
            import wandb

            self.accelerator.log(
                {f"validation/{name}": [wandb.Video(str(p)) for p in paths]}, step=self.step
            )

    def export(self) -> Path | None:
        self._reshard()
        lora = lora_state_dict(self.bundle.denoiser)  # every rank: FSDP gathers the shards
        if not self.accelerator.is_main_process:
            return None
        extra = {"motion_head": self.motion} if self.motion_target is not None else {}
        if self.motion_target is not None:
            extra["motion_head_ema"] = self.motion_target.module
        sampling = {
            "timestep_scaling": self.cfg.method.timestep_scaling,
            "original_inference_steps": self.cfg.method.num_ode_steps,
            "recommended_steps": [1, 2, 4, 8],
            "guidance_scale": 1.0,
            "num_frames": self.cfg.data.video.num_frames,
        }
        return export_student(
            self.bundle, self.out / "export", sampling=sampling, extra_modules=extra, lora=lora
        )

    # ------------------------------------------------------------------ checkpoints
    def _trainable_state(self) -> dict[str, dict[str, torch.Tensor]]:
        state = {}
        if self.motion_target is not None:
            state["motion_head"] = self.motion.state_dict()
            state["motion_head_ema"] = self.motion_target.state_dict()
        if self.discriminator is not None:
            state["discriminator_heads"] = self.discriminator.head_state_dict()
        if self.target_ema is not None:
            state["lora_ema"] = self.target_ema.state_dict()
        return state

    def save_checkpoint(self) -> Path | None:
        acc, den = self.accelerator, self.bundle.denoiser
        acc.wait_for_everyone()
        self._reshard()
        # Full weights and optimiser state on every rank (FSDP: gathered), written by rank 0,
        # so that any number of ranks can resume from the files.
        lora = lora_state_dict(den)
        optim_g = self.optim_g.state_dict()
        if self.fsdp is not None:
            optim_g = full_optimizer_state(optim_g)
        ranks = gather_object([self._rank_state()])  # every rank's draws and data position
        if not acc.is_main_process:
            return None

        def write(tmp: Path) -> None:
            # peft keys + rank/alpha/family metadata
            save_lora(den, tmp / "lora.safetensors", state_dict=lora)
            diffusers_lora = diffusers_lora_state_dict(lora, den.lora_config["alpha"])
            ckpt.save_weights(diffusers_lora, tmp / "pytorch_lora_weights.safetensors")
            for name, tensors in self._trainable_state().items():
                ckpt.save_weights(tensors, tmp / f"{name}.safetensors")
            state = {
                "step": self.step,
                "optim_g": optim_g,
                "sched_g": self.sched_g.state_dict(),
                **ranks[0],  # generator, torch_rng, data (and images): rank 0's, as before
                "ranks": ranks,
                "nonfinite_total": self.nonfinite_total,
            }
            if self.discriminator is not None:
                state.update(
                    optim_d=self.optim_d.state_dict(),
                    sched_d=self.sched_d.state_dict(),
                    gp_weight=self.gp_weight.state_dict(),
                )
            ckpt.save_state(state, tmp / "state.pt")
            save_config(self.cfg, tmp / "config.yaml")
            (tmp / "meta.json").write_text(
                json.dumps({"step": self.step, "seed": self.cfg.train.seed})
            )

        path = ckpt.write_checkpoint(self.out, self.step, write, self.cfg.train.keep_checkpoints)
        log.info("Saved %s", path)
        return path

    def _rank_state(self) -> dict:
        """What differs between ranks: the random draws and the data position."""
        state = {
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "data": self.video_loader.state_dict(),
        }
        if self.image_loader is not None:
            state["images"] = self.image_loader.state_dict()
        return state

    def _load_rank_state(self, state: dict) -> None:
        """This rank's draws and data position, when the checkpoint was taken on as many
        ranks; otherwise fresh data streams and draws (seeded by seed, rank and step)."""
        acc = self.accelerator
        ranks = state.get("ranks", [state])  # older checkpoints hold rank 0's only
        if len(ranks) != acc.num_processes or ranks[0]["data"]["world_size"] != len(ranks):
            log.warning(
                "Resuming on %d process(es) from a checkpoint of %d: weights, optimisers, "
                "schedulers and step are restored; data streams and random draws start afresh.",
                acc.num_processes,
                ranks[0]["data"]["world_size"],
            )
            seed = self.cfg.train.seed * 1_000_003 + acc.process_index + 7_919 * self.step
            self.generator.manual_seed(seed)
            return
        own = ranks[acc.process_index]
        self.generator.set_state(own["generator"])
        torch.set_rng_state(own["torch_rng"])
        self.video_loader.load_state_dict(own["data"])
        if self.image_loader is not None and "images" in own:
            self.image_loader.load_state_dict(own["images"])

    def load_checkpoint(self, path: Path) -> None:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("seed") != self.cfg.train.seed:
            log.warning(
                "Resuming a run seeded %s with train.seed=%s.",
                meta.get("seed"),
                self.cfg.train.seed,
            )
        load_lora_state_dict(self.bundle.denoiser, read_lora(path / "lora.safetensors")[0])
        if self.motion_target is not None:
            self.motion.load_state_dict(ckpt.load_weights(path / "motion_head.safetensors"))
            self.motion_target.load_state_dict(
                ckpt.load_weights(path / "motion_head_ema.safetensors")
            )
        if self.discriminator is not None:
            self.discriminator.load_head_state_dict(
                ckpt.load_weights(path / "discriminator_heads.safetensors")
            )
        if self.target_ema is not None:
            self.target_ema.load_state_dict(ckpt.load_weights(path / "lora_ema.safetensors"))
        state = ckpt.load_state(path / "state.pt")
        self.step = state["step"]
        self.optim_g.load_state_dict(state["optim_g"])
        if self.fsdp is not None:
            shard_optimizer_state(self.optim_g.optimizer)
        self.sched_g.load_state_dict(state["sched_g"])
        self._load_rank_state(state)
        self.nonfinite_total = state["nonfinite_total"]
        if self.discriminator is not None:
            self.optim_d.load_state_dict(state["optim_d"])
            self.sched_d.load_state_dict(state["sched_d"])
            self.gp_weight.load_state_dict(state["gp_weight"])
        log.info("Resumed from %s at step %d", path, self.step)

    def cleanup(self) -> None:
        if self.cfg.train.tracker != "none":
            self.accelerator.end_training()


def _grad_norm(params) -> float:
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "/"))
        else:
            out[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


def run_training(cfg: TrainConfig, resume: str | None = None) -> dict:
    """setup, train, cleanup: what `mcm train` calls."""
    recipe = DistillRecipe(cfg, resume=resume)
    recipe.setup()
    try:
        return recipe.train()
    finally:
        recipe.cleanup()


__all__ = ["DistillRecipe", "NonFiniteLossError", "run_training"]
