"""The one-step student: a phase after the multi-step distillation (``one_step`` in a train
config), as a recipe of the one trainer.

A fresh LoRA on the exported multi-step student learns to give in one step what that
student gives in ``target_steps``: each step draws noise x_T for a batch of training
captions, takes the frozen student's deterministic N-step sample y_N from it
(:func:`~mcm.diffusion.sample_consistency_ode`; the student is the same network with the
LoRA disabled) and regresses the one-step output f(x_T, T) to it with the method's
distance. The target is frozen, so it cannot follow the student (the collapse of a strong
regression to the online student's own sample, docs/RESULTS.md "One step"), and the
multi-step student stays as it was. No clip is encoded: the step needs only captions and
noise.

The result is a second export, ``output_dir/one_step/export``: the LoRA (on the merged
multi-step student), the merged one-step pipeline and its sampling card. Launched on
several processes, every rank takes the same steps (the phase is small) and the main one
exports.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from mcm.data import build_video_loader
from mcm.diffusion import (
    consistency_function,
    consistency_timesteps,
    flow_sigmas,
    sample_consistency_ode,
)
from mcm.models import (
    attach_lora,
    disable_adapters,
    export_student,
    latent_shape,
    load_lora_state_dict,
    load_teacher,
    lora_parameters,
    lora_state_dict,
)
from mcm.motion.distances import DISTANCES
from mcm.training import checkpoint as ckpt
from mcm.training.config import TrainConfig, TrainLoopConfig
from mcm.training.optim import Optimization, make_optimizer, make_scheduler
from mcm.training.trainer import Trainer

ONE_STEP_DIR = "one_step"
CARD = "mcm_student.json"


def one_step_dir(cfg: TrainConfig) -> Path:
    """Where :class:`OneStepRecipe` writes for ``cfg``: output_dir/one_step."""
    return Path(cfg.output_dir) / ONE_STEP_DIR


class OneStepRecipe(Trainer):
    """Distils the one-step student of the multi-step student exported in
    ``cfg.output_dir/export`` (see the module docstring).

    Args:
        cfg: the run's train config; its ``one_step`` section sets the steps, batch, lr and
            target, ``model`` the LoRA's rank, ``method`` the distance, ``data.video`` the
            captions.
        resume: continue from the latest checkpoint in output_dir/one_step.
    """

    name = "one_step"

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        o, t = cfg.one_step, cfg.train
        loop = TrainLoopConfig(
            seed=t.seed,
            max_steps=o.steps,
            batch_size=o.batch_size,
            lr=o.lr,
            warmup_steps=0,
            lr_schedule="constant",
            max_grad_norm=t.max_grad_norm,
            checkpoint_every=t.checkpoint_every,
            keep_checkpoints=1,
            log_every=t.log_every,
            tracker="none",
            progress=t.progress,
        )
        out = one_step_dir(cfg)
        resume_from = "latest" if resume and ckpt.list_checkpoints(out) else None
        super().__init__(loop, out, resume_from, config=None)
        self.cfg = cfg
        self.student_dir = Path(cfg.output_dir) / "export"

    def setup(self) -> None:
        cfg, o = self.cfg, self.cfg.one_step
        merged = self.student_dir / "merged"
        if not (merged / "model_index.json").is_file():
            raise FileNotFoundError(
                f"No multi-step student in {self.student_dir}: the one-step phase starts from "
                "the export of the distillation (train.export=true); run it first."
            )
        self.card = json.loads((self.student_dir / CARD).read_text())["sampling"]
        acc = self.make_accelerator()
        self.generator = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + 1)
        m = cfg.model
        self.bundle = load_teacher(
            str(merged),
            device=acc.device,
            dtype_policy=m.frozen_dtype,
            vae_chunk_size=m.vae_chunk_size,
            max_sequence_length=m.max_sequence_length,
        )
        self.denoiser = self.bundle.denoiser
        attach_lora(self.denoiser, rank=m.lora_rank, alpha=m.lora_alpha)
        params = lora_parameters(self.denoiser)
        optim = make_optimizer(params, o.lr, weight_decay=0.0)
        schedule = make_scheduler(optim, "constant", 0, o.steps)
        self.optimizers["g"] = Optimization(optim, schedule, params, cfg.train.max_grad_norm)
        self.video_loader = build_video_loader(
            cfg.data.video, batch_size=o.batch_size, seed=cfg.train.seed + 1
        )
        self._video_iter = None
        method = cfg.method
        self.distance = DISTANCES[method.distance]
        self.distance_kwargs = {"c": method.huber_c} if method.distance == "huber" else {}
        super().setup()

    def timesteps(self, steps: int) -> Tensor:
        """The exported student's ``steps``-step sampling timesteps, descending [steps]: the
        consistency grid (as diffusers' LCMScheduler), or the flow sigma grid (as the
        exported UniPC scheduler) without its clean end."""
        schedule = self.denoiser.schedule
        T = schedule.num_train_timesteps
        if schedule.kind == "flow":
            return flow_sigmas(steps, schedule.shift, T)[:-1]
        return consistency_timesteps(steps, T, self.card["original_inference_steps"])

    def consistency(self, x: Tensor, t: Tensor, text_emb: Tensor) -> Tensor:
        """f(x_t, t) [B, C, F, h, w] of the denoiser as it is now (LoRA on or off)."""
        x0, _ = self.denoiser.predict_x0_eps(x, t, text_emb)
        return consistency_function(
            x,
            x0,
            t,
            self.denoiser.schedule,
            sigma_data=self.cfg.method.sigma_data,
            timestep_scaling=self.card["timestep_scaling"],
        )

    @torch.no_grad()
    def next_batch(self) -> tuple[Tensor, Tensor]:
        """(x_T [B, C, F', h, w], text embeddings [B, L, D]) for the next training captions."""
        if self._video_iter is None:
            self._video_iter = iter(self.video_loader)
        raw = next(self._video_iter)
        dev = self.accelerator.device
        text_emb = (
            raw["text_emb"].to(dev)
            if "text_emb" in raw
            else self.bundle.text_encoder(list(raw["caption"]))
        )
        card = self.card
        shape = latent_shape(
            self.bundle, len(text_emb), card["num_frames"], card.get("height"), card.get("width")
        )
        return torch.randn(shape, generator=self.generator).to(dev), text_emb

    def _loss_step(self, batch: tuple[Tensor, Tensor]) -> dict | None:
        noise, text_emb = batch
        with torch.no_grad(), disable_adapters(self.denoiser):
            target = sample_consistency_ode(
                lambda x, t: self.consistency(x, t, text_emb),
                noise,
                self.denoiser.schedule,
                self.timesteps(self.cfg.one_step.target_steps),
            )
        top = self.timesteps(1).expand(len(noise)).to(noise.device)
        one_step = self.consistency(noise, top, text_emb)
        loss = self.distance(one_step.float(), target.float(), **self.distance_kwargs).mean()
        return {"loss_one_step": loss.detach()} if self.backward(loss) else None

    def _checkpoint_weights(self) -> dict:
        return {"lora": lora_state_dict(self.denoiser)}

    def _load_weights(self, path: Path) -> None:
        load_lora_state_dict(self.denoiser, ckpt.load_weights(path / "lora.safetensors"))

    def finish(self) -> None:
        """The one-step student's export in output_dir/one_step/export."""
        if not self.accelerator.is_main_process:
            return
        sampling = dict(self.card, num_inference_steps=1, recommended_steps=[1])
        ckpt.write_directory(
            self.out / "export",
            lambda tmp: export_student(
                self.bundle, tmp, sampling=sampling, training_config=self.cfg
            ),
        )
