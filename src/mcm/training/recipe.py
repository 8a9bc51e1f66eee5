"""The distillation recipe: `mcm train` runs this, top to bottom.

torchtune-style: ``setup()`` builds everything from the config, ``_loss_step()`` is one
MCM step (the student's loss, then the discriminator's), and the loop, checkpoints and
signal handling are the shared :class:`~mcm.training.trainer.Trainer`'s.

Multi-process (accelerate/torchrun): the trainable parameters are the LoRA, the motion head
and the discriminator heads - a few MB - so instead of wrapping the UNet in DDP the loop
all-reduces their gradients once per optimiser step (with ``model.finetune=full``, every
weight of the network: the same code, more bytes). Every rank then takes the same step
and ends with identical weights. With an FSDP accelerate config the UNet's blocks are
sharded instead (:mod:`mcm.training.sharding`): FSDP averages their LoRA gradients and
the loop all-reduces only the rest; checkpoints and the export gather the full weights.

(About 550 lines, on purpose: the whole recipe - its six components, data, the two-loss
step, the discriminator's warm-up, validation, export and what a checkpoint holds - reads
top to bottom in one file; the loop it shares with the other recipes is in trainer.py.)
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate.utils import set_seed
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
from mcm.models.vae import frames_first
from mcm.motion import build_motion_representation
from mcm.training import checkpoint as ckpt
from mcm.training.config import TrainConfig, check_resume_config
from mcm.training.distiller import (
    DistillBatch,
    MCMDistiller,
    frame_discriminator,
    teacher_latent_backbone,
)
from mcm.training.ema import EMA
from mcm.training.one_step import OneStepRecipe
from mcm.training.optim import Optimization, make_optimizer, make_scheduler
from mcm.training.sharding import (
    check_fsdp_config,
    clip_grad_norm_,
    fsdp_plugin,
    full_optimizer_state,
    reshard,
    shard_optimizer_state,
    shard_unet,
)
from mcm.training.trainer import NonFiniteLossError, Trainer

log = logging.getLogger("mcm.train")

# method.motion_head: "reference": the reference's learnable heads (a SiLU on the input; the
# light head has two layers)
REFERENCE_MOTION_HEADS = {
    "learnable": {"num_layers": 2, "input_activation": True},
    "learnable_heavy": {"input_activation": True},
}


class DistillRecipe(Trainer):
    """Distil an MCM (or plain LCM) student from a teacher, as the config says."""

    name = "distil"

    def __init__(self, cfg: TrainConfig, resume: str | None = None):
        super().__init__(cfg.train, cfg.output_dir, resume, config=cfg)
        self.cfg = cfg

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        acc = self.make_accelerator()
        set_seed(cfg.train.seed)  # the same initial weights (heads, LoRA) on every rank
        # One generator draws everything random in a step; the same on every rank except for
        # the rank offset, so ranks see different noise but a resumed run replays exactly.
        self.generator = torch.Generator().manual_seed(
            cfg.train.seed * 1_000_003 + acc.process_index
        )

        # 1. The teacher, and the student: the teacher with LoRA (adapters off = teacher).
        device, m = acc.device, cfg.model
        self.bundle = load_teacher(
            m.teacher,
            device=device,
            dtype_policy=m.frozen_dtype,
            vae_chunk_size=m.vae_chunk_size,
            max_sequence_length=m.max_sequence_length,
        )
        student = self.bundle.denoiser
        self.teacher_model = None  # a separate frozen teacher, when there is one
        if m.finetune == "full":  # every weight trains (fp32) against a frozen copy
            self.teacher_model = copy.deepcopy(student).requires_grad_(False).eval()
            student.unet.float().requires_grad_(True)
        else:
            attach_lora(
                student,
                rank=m.lora_rank,
                alpha=m.lora_alpha,
                dropout=m.lora_dropout,
                target_modules=m.lora_target_modules,
            )
        self.fsdp = fsdp_plugin(acc)  # None unless the accelerate config asks for FSDP
        if self.fsdp is not None:
            check_fsdp_config(cfg)
        if m.gradient_checkpointing or getattr(self.fsdp, "activation_checkpointing", False):
            student.enable_gradient_checkpointing()
        if self.fsdp is not None:  # before anything keeps a reference to a parameter
            self.fsdp_units = shard_unet(student.unet, self.fsdp, device)
            n = len(self.fsdp_units)
            log.info("FSDP: %d UNet units sharded over %d ranks.", n, acc.num_processes)
        if m.separate_teacher and self.teacher_model is None:
            teacher = load_teacher(
                m.teacher, device, m.frozen_dtype, max_sequence_length=m.max_sequence_length
            )
            self.teacher_model = teacher.denoiser.requires_grad_(False).eval()
            if self.fsdp is not None:
                self.fsdp_units += shard_unet(self.teacher_model.unet, self.fsdp, device)

        # 2. The motion representation (its EMA on the target side) and the LoRA's EMA.
        channels = self.bundle.vae.latent_channels
        head = REFERENCE_MOTION_HEADS.get(cfg.method.motion, {})
        head = head if cfg.method.motion_head == "reference" else {}
        self.motion = build_motion_representation(cfg.method.motion, channels, **head).to(device)
        self.motion_ema = self.motion_target = None
        if any(p.requires_grad for p in self.motion.parameters()):
            self.motion_ema, self.motion_target = EMA.of_module(
                self.motion, cfg.method.motion_ema_decay
            )
        self.target_ema = None
        if "ema" in (cfg.method.target, cfg.method.one_step_target):
            self.target_ema = EMA(self._trainable(), cfg.method.target_ema_decay)
        emas = {"motion_head_ema": self.motion_ema, "lora_ema": self.target_ema}
        self.emas = {stem: ema for stem, ema in emas.items() if ema is not None}

        # 3. The discriminator and the step.
        self.discriminator = self._build_discriminator() if cfg.discriminator.enabled else None
        self.distiller = MCMDistiller(
            cfg.method,
            student,
            motion=self.motion,
            motion_target=self.motion_target,
            teacher_model=self.teacher_model,
            disable_adapters=disable_adapters,
            discriminator=self.discriminator,
            decode_frames=self._decode_frames,
            target_ema=self.target_ema,
            decode_clip=self._decode_clip,
            clip_frames=cfg.data.video.num_frames,
        )
        self._reshard()  # the discriminator's probe may have left blocks gathered

        # 4. Optimisers: the student (LoRA + motion head), the discriminator's heads.
        t = cfg.train
        lora = self._trainable()
        head = [p for p in self.motion.parameters() if p.requires_grad]
        groups = [{"params": lora}]
        if head:
            groups.append({"params": head, "lr": cfg.method.motion_head_lr or t.lr})
        # on the CPU torch's fused AdamW (the default there loops over tensor operations:
        # 8x slower for the discriminator heads' weights); torch's default elsewhere
        fused = True if device.type == "cpu" and self.fsdp is None else None
        optim = make_optimizer(
            groups, t.lr, t.betas, t.weight_decay, t.adam_eps, t.optimizer, fused=fused
        )
        self.optimizers["g"] = Optimization(
            acc.prepare_optimizer(optim),
            make_scheduler(optim, t.lr_schedule, t.warmup_steps, t.max_steps),
            lora + head,
            t.max_grad_norm,
        )
        if self.discriminator is not None:
            d = cfg.discriminator
            heads = list(self.discriminator.head_parameters())
            optim = make_optimizer(
                heads, d.lr, d.betas, d.weight_decay, kind=t.optimizer, fused=fused
            )
            # the D scheduler also steps in the D-only warm-up
            d_steps = d.warmup_steps + t.max_steps
            self.optimizers["d"] = Optimization(
                acc.prepare_optimizer(optim),
                make_scheduler(optim, d.lr_schedule, t.warmup_steps, d_steps),
                heads,
            )
            self.gp_weight = AdaptivePenaltyWeight(d.gp_weight)

        # 5. Data, then (everything built) the checkpoint to resume from.
        self._build_data()
        self._teacher_validated = (self.out / "validation" / "teacher").exists()
        self.warmup_step = 0  # D-only steps taken (discriminator.warmup_steps in all)
        set_seed(cfg.train.seed + acc.process_index)  # anything drawn later differs per rank
        super().setup()

    def _trainable(self) -> list[torch.nn.Parameter]:
        """The student's trainable weights: its LoRA, or every weight when fully fine-tuned."""
        if self.cfg.model.finetune == "full":
            return list(self.bundle.denoiser.unet.parameters())
        return lora_parameters(self.bundle.denoiser)

    def _build_discriminator(self) -> FrameDiscriminator:
        d, student = self.cfg.discriminator, self.bundle.denoiser
        if d.backbone == "latent":
            backbone = teacher_latent_backbone(
                student if self.cfg.model.finetune == "lora" else self.teacher_model,
                (d.latent_t_min, d.latent_t_max),
                self.bundle.text_encoder.empty(1).to(self.accelerator.device),
                min(self._clip_size()) // self.bundle.vae.downsample,
                d.latent_blocks,
            )
        else:
            backbone = DinoV2Backbone(d.dinov2, taps=tuple(d.taps))
        disc = frame_discriminator(d, backbone, self.bundle.text_encoder.embedding_dim)
        return disc.to(self.accelerator.device)

    def _clip_size(self) -> tuple[int, int]:
        """(height, width) of the training clips in pixels."""
        r = self.cfg.data.video.resolution
        return (r, r) if isinstance(r, int) else tuple(r)

    def _decode_frames(self, frames):
        """Latent frames [N, C, h, w] -> what the discriminator sees (decoded with gradient
        for a pixel-space backbone; for the latent backbone unchanged, or decoded and encoded
        again with ``discriminator.latent_round_trip``)."""
        d = self.cfg.discriminator
        if d.backbone == "latent":
            return self.bundle.vae.round_trip(frames) if d.latent_round_trip else frames
        return self.bundle.vae.decode(frames[:, :, None])[:, :, 0]

    def _decode_clip(self, video, index):
        """Videos [B, C, F', h, w] -> frames ``index`` [k] of their decoded clips as the
        discriminator sees them [B*k, ...] (pixels, or each frame encoded as an image for the
        latent backbone), with gradient (method.fake_frames "clip")."""
        vae = self.bundle.vae
        frames = frames_first(vae.decode(video)[:, :, index.to(video.device)])  # [B*k, 3, H, W]
        return vae.encode_frames(frames) if self.cfg.discriminator.backbone == "latent" else frames

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
            per_video = 1 if self.distiller.first_frame_only else cfg.method.frames_per_video
            self.image_loader = build_image_loader(
                cfg.data.images,
                batch_size=cfg.train.batch_size * per_video,
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
        elif self.distiller.first_frame_only:  # Wan: the first frame of each clip
            real, real_captions = latents[:, :, 0], captions
            if self.cfg.discriminator.backbone != "latent":
                real = raw["video"][:, :, 0].to(dev)
        else:  # one frame from each half of every clip
            clips = latents if self.cfg.discriminator.backbone == "latent" else raw["video"].to(dev)
            real = real_frames_from_clips(clips, self.generator)
            real_captions = [c for c in captions for _ in range(real.shape[0] // len(captions))]
        if self.cfg.discriminator.backbone == "latent":
            real = self._decode_frames(real)  # as the fakes are
        batch.real_frames, batch.real_pooled_text = real, pooled(real_captions)
        return batch

    def _data_state(self) -> dict:
        state = {"video": self.video_loader.state_dict()}
        if self.image_loader is not None:
            state["images"] = self.image_loader.state_dict()
        return state

    def _load_data_state(self, state: dict) -> None:
        self.video_loader.load_state_dict(state["video"])
        if self.image_loader is not None and "images" in state:
            self.image_loader.load_state_dict(state["images"])

    # ------------------------------------------------------------------ the step
    def train(self, on_step: Callable[[int], None] | None = None) -> dict:
        """The discriminator's warm-up, the loop, then the export (:meth:`finish`)."""
        logged = super().train(on_step)
        log.info("Training clips: %s", self.video_loader.bad_log.summary())
        if self.image_loader is not None:
            log.info("Images: %s", self.image_loader.bad_log.summary())
        return logged

    def finish(self) -> None:
        if self.cfg.train.export:
            self.export()

    def _loss_step(self, batch: DistillBatch) -> dict[str, float] | None:
        """One micro-batch: L_G back-propagated into the student, then L_D into D's heads."""
        draws = self.distiller.sample_draws(batch.latents, self.generator)
        if self.fsdp is not None:  # the student's own sample is one more (collective) call
            draws.use_real = self._from_rank0(draws.use_real)
        if self.discriminator is not None:
            self.discriminator.requires_grad_heads(False)  # L_G must not train D
        with self.accelerator.autocast():
            gen = self.distiller.generator_step(batch, draws)
        if not self.backward(gen.loss):
            return None
        terms = dict(gen.terms)
        if self.discriminator is not None:
            self.discriminator.requires_grad_heads(True)
            d_loss, d_terms = self._discriminator_loss(gen, batch, draws)
            if not self.backward(d_loss):
                return None
            terms.update(d_terms)
        return terms

    def _discriminator_loss(self, gen, batch, draws):
        """Hinge loss of D plus the adaptive feature-space gradient penalty."""
        d = self.cfg.discriminator
        use_gp = d.gp_weight > 0 and self.step % d.gp_every == 0
        weight = (lambda gp: self.gp_weight.update(gp, self.step)) if use_gp else None
        return self.distiller.discriminator_step(gen, batch, draws, penalty_weight=weight)

    def warm_up(self, on_step: Callable[[int], None] | None = None) -> bool:
        """discriminator.warmup_steps D-only steps: real images against frames of the
        training clips. The student starts as the teacher, whose samples look like those
        clips, so its adversarial loss carries the look from step 1 instead of after the
        heads have caught up (~150 steps on the world). A stop signal ends it at a step
        boundary; the checkpoint records how far it got and a resume continues there."""
        n = self.cfg.discriminator.warmup_steps if self.discriminator is not None else 0
        if self.warmup_step >= n:
            return False
        d = self.optimizers["d"]
        show = self.accelerator.is_main_process and self.loop.progress
        bar = tqdm(total=n, initial=self.warmup_step, desc="D warm-up", disable=not show)
        while self.warmup_step < n:
            if self._stopping():
                bar.close()
                return True
            batch = self.next_batch()
            draws = self.distiller.sample_draws(batch.latents, self.generator)
            gen = self.distiller.clips_as_fakes(batch, draws)
            with self.accelerator.autocast():
                loss, _ = self._discriminator_loss(gen, batch, draws)
            if self._finite(loss):
                self.accelerator.backward(loss)
                self._all_reduce_grads(d.params)
                d.optimizer.step()
                d.scheduler.step()
            d.optimizer.zero_grad(set_to_none=True)
            self.warmup_step += 1
            bar.update(1)
            if on_step is not None:
                on_step(self.warmup_step)
        bar.close()
        return False

    # FSDP: free every gathered block, so that the UNet's parameters are the shards (the
    # optimizer's, the checkpoint's) and no block runs on weights older than a step.
    def _reshard(self) -> None:
        if self.fsdp is not None:
            reshard(self.fsdp_units)

    def _all_reduce_grads(self, params: list | None = None) -> None:
        super()._all_reduce_grads(params)
        self._reshard()  # the next forward gathers the updated weights

    def _clip_grad_norm(self, params, max_norm: float) -> torch.Tensor:
        if self.fsdp is not None and max_norm > 0:  # a norm over sharded and replicated grads
            return clip_grad_norm_(params, max_norm)
        return super()._clip_grad_norm(params, max_norm)

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
        t = cfg.train
        sample = {"seed": t.validation_seed, "num_frames": t.validation_frames}
        if self.bundle.family == "wan":  # no default size in a transformer's config
            height, width = self._clip_size()
            frames = t.validation_frames or cfg.data.video.num_frames
            sample.update(num_frames=frames, height=height, width=width)
        for steps in t.validation_steps:
            videos = sample_student(
                self.bundle,
                t.validation_prompts,
                steps,
                timestep_scaling=cfg.method.timestep_scaling,
                original_inference_steps=cfg.method.num_ode_steps,
                **sample,
            )
            self._log_videos(f"student-{steps}step", videos, f"step-{self.step}")
        if not self._teacher_validated:
            teacher = self.bundle
            if self.cfg.model.finetune == "full":
                teacher = dataclasses.replace(self.bundle, denoiser=self.teacher_model)
            with disable_adapters(teacher.denoiser):
                steps, scale = t.validation_teacher_steps, t.validation_teacher_guidance
                videos = sample_teacher(teacher, t.validation_prompts, steps, scale, **sample)
            self._log_videos(f"teacher-{steps}step", videos, "teacher")
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
        """The LoRA, the merged pipeline and the sampling card in output_dir/export (written
        to a temporary folder and renamed into place: never half an export)."""
        self._reshard()
        full = self.cfg.model.finetune == "full"
        # every rank: FSDP gathers the shards
        lora = None if full else lora_state_dict(self.bundle.denoiser)
        if not self.accelerator.is_main_process:
            return None
        extra = {}
        if self.motion_target is not None:
            extra = {"motion_head": self.motion, "motion_head_ema": self.motion_target}
        sampling = {
            "timestep_scaling": self.cfg.method.timestep_scaling,
            "original_inference_steps": self.cfg.method.num_ode_steps,
            "recommended_steps": [1, 2, 4, 8],
            "guidance_scale": 1.0,
            "num_frames": self.cfg.data.video.num_frames,
        }
        if self.bundle.family == "wan":
            height, width = self._clip_size()
            sampling.update(
                height=height,
                width=width,
                max_sequence_length=self.cfg.model.max_sequence_length,
                flow_shift=self.bundle.denoiser.schedule.shift,
            )
        return ckpt.write_directory(
            self.out / "export",
            lambda tmp: export_student(
                self.bundle,
                tmp,
                sampling=sampling,
                extra_modules=extra,
                lora=lora,
                full=full,
                training_config=self.cfg,
            ),
        )

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """The LoRA (peft keys, and diffusers keys for stock loaders) or the fully fine-tuned
        network, the motion head and the discriminator's heads (the trainer adds the EMAs)."""
        self._reshard()
        if self.cfg.model.finetune == "full":
            weights = {"network": self.bundle.denoiser.unet.state_dict()}
        else:
            lora = lora_state_dict(self.bundle.denoiser)
            alpha = self.bundle.denoiser.lora_config["alpha"]
            weights = {"pytorch_lora_weights": diffusers_lora_state_dict(lora, alpha), "lora": lora}
        if self.motion_target is not None:
            weights["motion_head"] = self.motion.state_dict()
        if self.discriminator is not None:
            weights["discriminator_heads"] = self.discriminator.head_state_dict()
        return weights

    def _save_weights(self, tensors: dict[str, torch.Tensor], path: Path) -> None:
        if path.stem == "lora":  # with the LoRA's rank, alpha and family
            save_lora(self.bundle.denoiser, path, state_dict=tensors)
        else:
            super()._save_weights(tensors, path)

    def _load_weights(self, path: Path) -> None:
        if self.cfg.model.finetune == "full":
            network = ckpt.load_weights(path / "network.safetensors")
            self.bundle.denoiser.unet.load_state_dict(network)
        else:
            load_lora_state_dict(self.bundle.denoiser, read_lora(path / "lora.safetensors")[0])
        if self.motion_target is not None:
            self.motion.load_state_dict(ckpt.load_weights(path / "motion_head.safetensors"))
        if self.discriminator is not None:
            self.discriminator.load_head_state_dict(
                ckpt.load_weights(path / "discriminator_heads.safetensors")
            )

    def _optimizer_state(self, optimizer) -> dict:
        state = optimizer.state_dict()
        return full_optimizer_state(state) if self.fsdp is not None else state

    def _extra_state(self) -> dict:
        state = {"warmup_step": self.warmup_step}
        if self.discriminator is not None:
            state["gp_weight"] = self.gp_weight.state_dict()
        return state

    def _load_extra_state(self, state: dict) -> None:
        self.warmup_step = state["warmup_step"]
        if self.discriminator is not None:
            self.gp_weight.load_state_dict(state["gp_weight"])

    def load_checkpoint(self, path: Path) -> None:
        check_resume_config(self.cfg, path)  # ConfigError: the config changes what it holds
        super().load_checkpoint(path)
        if self.fsdp is not None:
            shard_optimizer_state(self.optimizers["g"].optimizer.optimizer)


def run_training(cfg: TrainConfig, resume: str | None = None) -> DistillRecipe:
    """setup, train, cleanup, then the one-step phase when ``cfg.one_step.steps`` > 0: what
    `mcm train` calls. The returned recipe's ``exit_status`` is 0, or 128 + the signal
    number when SIGINT/SIGTERM stopped either (after a checkpoint)."""
    recipe = DistillRecipe(cfg, resume=resume)
    recipe.setup()
    try:
        recipe.train()
    finally:
        recipe.cleanup()
    if cfg.one_step.steps and not recipe.exit_status:
        phase = OneStepRecipe(cfg, resume=resume is not None)
        phase.run()
        recipe.exit_status = phase.exit_status
    return recipe


__all__ = ["DistillRecipe", "NonFiniteLossError", "run_training"]
