"""The flow-matching world teacher's two training stages, as recipes of the one trainer
(the counterparts of :mod:`mcm.world.teacher_training` for the Wan architecture).

1. :class:`WanVAERecipe`: ``AutoencoderKLWan`` on 9-frame low-quality clips and on single
   frames (clean and style images encoded as one-frame clips, as the discriminator's
   images will be); loss = MSE of the unclamped decode + ``kl_weight`` * KL.
2. :class:`FlowRecipe`: the transformer and UMT5, jointly, on normalised VAE latents of
   low-quality clips only: the flow-matching MSE of v = eps - z0 at x = (1 - s) z0 + s eps,
   s uniform then shifted by the scheduler's ``flow_shift`` (``top_noise_fraction`` of each
   batch at s = 1, where the text is all the network has), ``prompt_dropout`` of the
   prompts replaced by "", the direction hinge of the UNet build; the saved weights are an
   EMA.

Both resume from their checkpoints, so a CPU build runs in parts (``--vae-max-seconds``,
``--unet-max-seconds``). :func:`build_world_wan_teacher` runs both and saves the pipeline
(``mcm world build --family wan``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5EncoderModel

from mcm.diffusion.schedules import shift_sigmas
from mcm.errors import InputError
from mcm.training import checkpoint as ckpt
from mcm.world.teacher import (
    _asset_bytes,
    _device_name,
    _git_revision,
    teacher_metrics,
    write_manifest,
)
from mcm.world.teacher_training import (
    LatentStage,
    _StageRecipe,
    prompt_tokens,
    vae_loss,
)
from mcm.world.train_config import TEACHER_GUIDANCE, TEACHER_STEPS, BuildConfig
from mcm.world.train_data import lowq_video_batch, vae_frame_batch
from mcm.world.wan_pipeline import (
    WAN_FRAMES,
    WorldWanConfig,
    world_wan_components,
    world_wan_pipeline,
)


def decode_unclamped(vae, z: torch.Tensor) -> torch.Tensor:
    """``AutoencoderKLWan.decode(z)`` without its final clamp to [-1, 1]: latents [B, C, F',
    h, w] -> frames [B, 3, F, H, W]. For training: the clamp passes no gradient to a pixel
    decoded past the range, so that pixel stays wrong until other updates happen to move it
    (a width-16 VAE trained 600 steps on either: 20.1 dB unclamped, 19.1 dB clamped)."""
    vae.clear_cache()
    x = vae.post_quant_conv(z)
    frames = []
    for i in range(x.shape[2]):  # one latent frame at a time, as decode() runs the causal cache
        vae._conv_idx = [0]
        frames.append(
            vae.decoder(
                x[:, :, i : i + 1],
                feat_cache=vae._feat_map,
                feat_idx=vae._conv_idx,
                first_chunk=i == 0,
            )
        )
    vae.clear_cache()
    return torch.cat(frames, dim=2)


class WanVAERecipe(_StageRecipe):
    """Stage 1: clips [B, 3, 9, H, W] and single frames [N, 3, 1, H, W] each step."""

    name = "wan_vae"

    def setup(self) -> None:
        cfg = self.cfg
        self.make_accelerator(cpu=self.device.type == "cpu")
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed)
        self.vae = self.components["vae"].train()
        self.batch_size = cfg.vae_batch_size  # frames per step, as the UNet build counts
        self._setup_optimizer(list(self.vae.parameters()), cfg.vae_lr, weight_decay=0.0)
        super().setup()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(clips [B, 3, 9, H, W], single frames [N, 3, 1, H, W]): half the frames of a step
        in clips, half as images."""
        n = self.cfg.vae_batch_size
        clips, _ = lowq_video_batch(
            max(1, n // (2 * WAN_FRAMES)), self.generator, num_frames=WAN_FRAMES
        )
        frames = vae_frame_batch(max(1, n // 2), self.generator)
        return clips, frames[:, :, None]

    def _loss_step(self, batch) -> dict | None:
        clips, frames = batch
        with self.accelerator.autocast():
            kl, g = self.cfg.kl_weight, self.generator
            loss = vae_loss(self.vae, clips, kl, g, decode=decode_unclamped)
            loss = loss + vae_loss(self.vae, frames, kl, g, decode=decode_unclamped)
        return {"loss": loss.detach()} if self.backward(loss) else None

    def _checkpoint_weights(self) -> dict:
        return {"vae": self.vae.state_dict()}

    def _load_weights(self, path: Path) -> None:
        self.vae.load_state_dict(ckpt.load_weights(path / "vae.safetensors"))


def flow_training_sigmas(
    n: int, shift: float, generator: torch.Generator, top_fraction: float = 0.0
) -> torch.Tensor:
    """Noise levels [n]: u ~ U(0, 1) shifted (:func:`shift_sigmas`), a ``top_fraction`` of
    them set to 1 (pure noise)."""
    s = shift_sigmas(torch.rand(n, generator=generator, device=generator.device), shift)
    if top_fraction > 0:
        top = torch.rand(n, generator=generator, device=generator.device) < top_fraction
        s = torch.where(top, torch.ones_like(s), s)
    return s


def flow_matching_loss(
    transformer, text_encoder, z0, tokens, generator, shift: float, top_fraction: float = 0.0
) -> torch.Tensor:
    """MSE of the predicted v = eps - z0 at x = (1 - s) z0 + s eps: z0 [B, C, F, h, w],
    tokens [B, L] -> scalar. The text states past each prompt are zeroed, as WanPipeline
    encodes; the transformer sees t = s T (T = 1000)."""
    B = z0.shape[0]
    s = flow_training_sigmas(B, shift, generator, top_fraction)
    noise = torch.randn(z0.shape, generator=generator, device=z0.device)
    sb = s.view(B, 1, 1, 1, 1)
    x = (1 - sb) * z0 + sb * noise
    mask = (tokens != text_encoder.config.pad_token_id).long()
    mask[:, 0] = 1  # the empty prompt keeps its first token
    states = text_encoder(tokens, attention_mask=mask).last_hidden_state * mask[..., None]
    v = transformer(x, timestep=s * 1000, encoder_hidden_states=states, return_dict=False)[0]
    return F.mse_loss(v.float(), noise - z0)


_TIED = "encoder.embed_tokens.weight"


class FlowRecipe(LatentStage):
    """Stage 2: the transformer and UMT5 on a pool of normalised clip latents [n, C, F', h,
    w]. Leaves the EMA weights in the models."""

    name = "transformer"

    def setup(self) -> None:
        cfg, device = self.cfg, self.device
        self.make_accelerator(cpu=device.type == "cpu")
        self.transformer = self.components["transformer"]
        self.text_encoder = self.components["text_encoder"]
        self.shift = float(self.components["scheduler"].config.flow_shift)
        self.tokens = prompt_tokens(self.components["tokenizer"], device)
        self.generator = torch.Generator(device).manual_seed(cfg.seed + 1)
        self.batch_size = cfg.batch_size
        self._setup_training((self.transformer, self.text_encoder))
        for m in self.text_encoder.modules():  # every draw from `generator`
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        super().setup()

    def _loss_step(self, batch) -> dict | None:
        z0, tokens, prompt_index = batch
        cfg = self.cfg
        with self.accelerator.autocast():
            loss = flow_matching_loss(
                self.transformer,
                self.text_encoder,
                z0,
                tokens,
                self.generator,
                self.shift,
                cfg.top_noise_fraction,
            )
            loss = loss + self._direction_term(prompt_index)
        return {"loss": loss.detach()} if self.backward(loss) else None

    def _checkpoint_weights(self) -> dict:
        # UMT5 ties its input embedding to `shared`: one copy on disk
        text = {k: v for k, v in self.text_encoder.state_dict().items() if k != _TIED}
        return {"transformer": self.transformer.state_dict(), "text_encoder": text}

    def _load_weights(self, path: Path) -> None:
        self.transformer.load_state_dict(ckpt.load_weights(path / "transformer.safetensors"))
        text = ckpt.load_weights(path / "text_encoder.safetensors")
        missing = self.text_encoder.load_state_dict(text, strict=False).missing_keys
        if missing not in ([], [_TIED]):
            raise ValueError(f"{path}: text encoder weights missing {missing[:3]}.")


@torch.no_grad()
def wan_latent_pool(vae, n: int, seed: int, device: torch.device, chunk: int = 64):
    """n fresh low-quality 9-frame clips, encoded (posterior mode, raw): (latents [n, C, 3,
    h, w], prompt index [n])."""
    g = torch.Generator(device).manual_seed(seed)
    latents, prompts = [], []
    for start in range(0, n, chunk):
        videos, scenes = lowq_video_batch(min(chunk, n - start), g, num_frames=WAN_FRAMES)
        latents.append(vae.encode(videos).latent_dist.mode().float())
        prompts.append(scenes.prompt_index())
    return torch.cat(latents), torch.cat(prompts)


def _save_pool(path: Path, latents: torch.Tensor, prompt_index: torch.Tensor) -> None:
    tmp = path.with_name(path.name + ".tmp")  # renamed into place: never half a pool
    ckpt.save_weights({"latents": latents, "prompt_index": prompt_index}, tmp)
    os.replace(tmp, path)


def _load_pool(path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The pool a previous part encoded with the same VAE, or None (none, or another size)."""
    if not path.is_file():
        return None
    pool = ckpt.load_weights(path)
    if len(pool["latents"]) != size:
        return None
    return pool["latents"], pool["prompt_index"]


def set_latent_stats(vae, latents: torch.Tensor) -> torch.Tensor:
    """Record the pool's per-channel mean and std as the VAE's ``latents_mean`` /
    ``latents_std`` (what WanPipeline normalises with) and return the normalised pool."""
    dims = [0, 2, 3, 4]
    mean, std = latents.mean(dims), latents.std(dims).clamp(min=1e-6)
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    return (latents - mean.view(1, -1, 1, 1, 1)) / std.view(1, -1, 1, 1, 1)


def load_init_vae(vae, folder: str | Path) -> dict:
    """Copy the weights of the ``AutoencoderKLWan`` saved in ``folder`` (a VAE folder or a
    pipeline folder with ``vae/``) into ``vae``; returns what the manifest records of it."""
    folder = Path(folder)
    if (folder / "vae" / "config.json").is_file():
        folder = folder / "vae"
    if not (folder / "config.json").is_file():
        raise InputError(
            f"--init-from {folder}: no AutoencoderKLWan here (no config.json, nor vae/config.json)"
            "; pass a folder that save_pretrained wrote."
        )
    saved = AutoencoderKLWan.from_pretrained(folder)
    keys = ("base_dim", "decoder_base_dim", "z_dim", "dim_mult", "num_res_blocks")
    theirs, ours = ({k: c.config.get(k) for k in keys} for c in (saved, vae))
    if theirs != ours:
        raise InputError(
            f"--init-from {folder}: its VAE is {theirs}, this build's is {ours}; start from a "
            "VAE of this build's sizes (WorldWanConfig) or drop --init-from."
        )
    vae.load_state_dict(saved.state_dict())
    manifest = folder / "manifest.json"
    return {"from": str(folder), **(json.loads(manifest.read_text()) if manifest.is_file() else {})}


def load_init_denoiser(components: dict, folder: str | Path) -> dict | None:
    """Copy the transformer and UMT5 of the ``WanPipeline`` saved in ``folder`` into
    ``components`` (in fp32, as they train), so that the transformer stage continues from
    them with a fresh optimiser; None for a folder with the VAE only."""
    folder = Path(folder)
    if not (folder / "transformer" / "config.json").is_file():
        return None
    loaded = {
        "transformer": WanTransformer3DModel.from_pretrained(folder / "transformer"),
        "text_encoder": UMT5EncoderModel.from_pretrained(folder / "text_encoder"),
    }
    for name, saved in loaded.items():
        theirs, ours = (
            {k: tuple(v.shape) for k, v in m.state_dict().items()}
            for m in (saved, components[name])
        )
        if theirs != ours:
            differ = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
            raise InputError(
                f"--init-from {folder}: its {name} has other sizes than this build's "
                f"({differ[0]}: {theirs.get(differ[0])} against {ours.get(differ[0])}); start "
                "from a teacher of this build's sizes (WorldWanConfig) or from its VAE only."
            )
        components[name].load_state_dict({k: v.float() for k, v in saved.state_dict().items()})
    manifest = folder / "manifest.json"
    stages = json.loads(manifest.read_text()).get("stages", {}) if manifest.is_file() else {}
    return {"from": str(folder), "stages": stages}


def build_world_wan_teacher(
    out_dir: str | Path,
    cfg: BuildConfig,
    model_config: WorldWanConfig | None = None,
    resume: bool = False,
    command: str | None = None,
    evaluate_videos: int = 0,
    init_from: str | Path | None = None,
) -> Path:
    """Train the flow-matching world teacher (the VAE, then the transformer and UMT5) and
    save it to ``out_dir`` as a stock ``WanPipeline`` with a manifest; checkpoints go to
    ``<out_dir>.checkpoints/`` and ``resume`` continues from them (``cfg.vae_max_seconds``
    / ``unet_max_seconds`` cap each part's time). ``init_from``: a saved VAE (or pipeline)
    folder whose VAE the VAE stage starts from, for ``cfg.vae_steps`` more steps (0: kept
    as it is), and whose transformer and UMT5, if it has them, the transformer stage
    continues (fresh optimiser); so a build continues on another machine from what an
    earlier one saved. ``evaluate_videos`` > 0: the world metrics of that many samples at 50 and 4 Euler
    steps go into the manifest."""
    model_config = model_config or WorldWanConfig()
    dev = torch.device(cfg.device)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir.with_name(out_dir.name + ".checkpoints")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    components = world_wan_components(model_config, seed=cfg.seed)
    init = None if init_from is None else load_init_vae(components["vae"], init_from)
    init_denoiser = None if init_from is None else load_init_denoiser(components, init_from)
    for name in ("vae", "text_encoder", "transformer"):
        components[name].to(dev)
    t_start = time.perf_counter()

    # 1. The VAE; a VAE trained further invalidates a transformer checkpoint built on it.
    stage = WanVAERecipe(components, cfg, cfg.vae_steps, cfg.vae_max_seconds, ckpt_dir, resume)
    vae_stats = stage.run()
    if vae_stats["trained"]:
        shutil.rmtree(ckpt_dir / FlowRecipe.name, ignore_errors=True)
    vae = components["vae"].eval().requires_grad_(False)

    # 2. The pool of encoded clips and the latent statistics WanPipeline normalises with,
    # kept beside the checkpoints for the next part of the build (a VAE trained further
    # encodes a new one).
    t0 = time.perf_counter()
    pool_file = ckpt_dir / "pool.safetensors"
    cached = _load_pool(pool_file, cfg.pool_size) if not vae_stats["trained"] else None
    pool_reused = cached is not None
    if cached is None:
        cached = wan_latent_pool(vae, cfg.pool_size, cfg.seed + 2, dev)
        _save_pool(pool_file, *cached)
    latents, prompt_index = (x.to(dev) for x in cached)
    pool = (set_latent_stats(vae, latents), prompt_index)
    pool_s = time.perf_counter() - t0

    # 3. The transformer and UMT5 on low-quality latents only.
    stage = FlowRecipe(
        components, pool, cfg, cfg.unet_steps, cfg.unet_max_seconds, ckpt_dir, resume
    )
    flow_stats = stage.run()

    # 4. The stock pipeline and its manifest.
    for name in ("vae", "text_encoder", "transformer"):
        components[name].to("cpu")
    # The transformer is stored in fp16 (18 MB instead of 36: the shipped teacher may take
    # 25 MB); loaders upcast it (load_teacher on CPU, stock from_pretrained by default).
    for param in components["transformer"].parameters():
        param.data = param.data.half()
    out_dir.mkdir(parents=True, exist_ok=True)
    world_wan_pipeline(components).save_pretrained(out_dir, safe_serialization=True)
    manifest = {
        "what": "the mcm flow-matching world teacher: a stock diffusers WanPipeline",
        "command": command if command is not None else " ".join(["mcm", *sys.argv[1:]]),
        "seed": cfg.seed,
        "revision": _git_revision(),
        "device": _device_name(dev),
        "created_unix": int(time.time()),
        "build_config": asdict(cfg),
        "model_config": asdict(model_config),
        **({"init_vae": init} if init is not None else {}),
        **({"init_transformer": init_denoiser} if init_denoiser is not None else {}),
        "parameters": {
            n: sum(p.numel() for p in components[n].parameters())
            for n in ("vae", "text_encoder", "transformer")
        },
        "stages": {
            "vae": vae_stats,
            "pool": {"clips": cfg.pool_size, "wall_s": round(pool_s, 2), "reused": pool_reused},
            "transformer": flow_stats,
        },
        "total_wall_s": round(time.perf_counter() - t_start, 2),
        "sampling": {
            "scheduler": "UniPCMultistepScheduler",
            "num_inference_steps": TEACHER_STEPS,
            "guidance_scale": TEACHER_GUIDANCE,
            "num_frames": model_config.num_frames,
            "height": model_config.size,
            "width": model_config.size,
            "max_sequence_length": model_config.max_tokens,
        },
    }
    write_manifest(out_dir, manifest)
    if evaluate_videos > 0:
        manifest["metrics"] = teacher_metrics(
            out_dir, evaluate_videos, device=cfg.device, seed=cfg.seed
        )
    manifest["asset_bytes"] = _asset_bytes(out_dir)
    write_manifest(out_dir, manifest)
    return out_dir
