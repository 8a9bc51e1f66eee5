"""Build the world teacher: train its VAE, then its UNet3D + text encoder
(:mod:`mcm.world.teacher_training`, the one trainer), save a stock diffusers
``TextToVideoSDPipeline`` plus ``manifest.json``.

Each stage is seeded, resumable (``checkpoint_every`` steps, ``resume=True``) and shows a
progress bar; its throughput goes into the manifest. Everything renders and trains on
``device``; on CUDA the forward passes run under bf16 autocast. Checkpoints live in
``<out_dir>.checkpoints/`` so that ``out_dir`` can be copied as-is into
``mcm/world/assets/teacher``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import diffusers
import torch
import transformers

from mcm.models import load_teacher
from mcm.models.sampling import sample_teacher
from mcm.world.metrics import world_metrics
from mcm.world.pipeline import (
    WorldTeacherConfig,
    load_world_pipeline,
    world_pipeline,
    world_teacher_components,
)
from mcm.world.probes import load_probes
from mcm.world.teacher_training import UNetRecipe, VAERecipe, latent_pool, loop_config
from mcm.world.train_config import TEACHER_GUIDANCE, TEACHER_STEPS, BuildConfig
from mcm.world.train_data import world_prompts
from mcm.world.wan_pipeline import WorldWanConfig

MANIFEST = "manifest.json"
__all__ = [
    "BuildConfig",
    "build_world_teacher",
    "teacher_metrics",
    "TEACHER_STEPS",
    "TEACHER_GUIDANCE",
]


def scheduler_overrides(cfg: BuildConfig) -> dict:
    """Scheduler config entries the build sets, whatever the starting teacher had: the
    parametrisation and the schedule, zero SNR with "trailing" timesteps (sampling starts at
    the pure-noise step) or ModelScope's with "leading" ones."""
    return {
        "prediction_type": cfg.prediction_type,
        "rescale_betas_zero_snr": cfg.zero_snr,
        "timestep_spacing": "trailing" if cfg.zero_snr else "leading",
    }


def _git_revision() -> str:
    if os.environ.get("MCM_GIT_REVISION"):  # e.g. a copied working tree with a stale .git
        return os.environ["MCM_GIT_REVISION"]
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev, dirty = "", ""
    if not rev:
        return "unknown (no .git; set MCM_GIT_REVISION)"
    return rev + ("+dirty" if dirty else "")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------------
# The whole build
# ---------------------------------------------------------------------------------------


def _asset_bytes(out_dir: Path) -> int:
    return sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())


def build_world_teacher(
    out_dir: str | Path,
    vae_steps: int = BuildConfig.vae_steps,
    unet_steps: int = BuildConfig.unet_steps,
    batch_size: int = BuildConfig.batch_size,
    device: str = "cpu",
    seed: int = 0,
    resume: bool = False,
    model_config: WorldTeacherConfig | None = None,
    evaluate_videos: int = 0,
    command: str | None = None,
    note: str | None = None,
    init_from: str | Path | None = None,
    **overrides,
) -> Path:
    """Train the world teacher and save it to ``out_dir`` as a stock diffusers pipeline.

    Args:
        out_dir: the pipeline directory to write (``model_index.json``, ``vae/``,
            ``text_encoder/``, ``tokenizer/``, ``unet/``, ``scheduler/``, ``manifest.json``).
            Checkpoints go to ``<out_dir>.checkpoints/``.
        vae_steps, unet_steps, batch_size, device, seed: see :class:`BuildConfig`.
        resume: continue from the checkpoints (a finished stage is not re-run).
        model_config: model sizes (default: the shipped teacher's).
        evaluate_videos: if > 0 and the world probes exist, sample this many videos at
            DDIM-50 and DDIM-4 and record the world metrics in the manifest.
        command: the command line to record in the manifest (default: ``sys.argv``).
        note: free text stored in the manifest (e.g. why this build was made).
        init_from: a saved world teacher to continue from: its VAE (and latent scale) is
            kept as is (no VAE stage), its UNet and text encoder are trained further
            with a fresh optimiser; its manifest goes into this one's ``history``.
        **overrides: any other :class:`BuildConfig` field.

    Returns:
        ``out_dir`` as a Path.
    """
    cfg = BuildConfig(
        vae_steps=vae_steps,
        unet_steps=unet_steps,
        batch_size=batch_size,
        device=str(device),
        seed=seed,
        **overrides,
    )
    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
    out_dir = Path(out_dir)
    ckpt_dir = out_dir.with_name(out_dir.name + ".checkpoints")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    if init_from is not None:
        previous = read_manifest(init_from)
        history = [*previous.pop("history", []), previous]
        model_config = WorldTeacherConfig(
            **{
                k: tuple(v) if isinstance(v, list) else v
                for k, v in previous["model_config"].items()
            }
        )
        components = load_world_pipeline(str(init_from)).components
    else:
        model_config = model_config or WorldTeacherConfig()
        components = world_teacher_components(model_config, seed=cfg.seed)
    components["scheduler"] = type(components["scheduler"]).from_config(
        components["scheduler"].config, **scheduler_overrides(cfg)
    )
    for name in ("vae", "text_encoder", "unet"):
        components[name].to(dev)
    t_start = time.perf_counter()

    # 1. VAE; a VAE trained further invalidates a UNet checkpoint built on the old one.
    vae = components["vae"]
    if init_from is None:
        stage = VAERecipe(components, cfg, cfg.vae_steps, cfg.vae_max_seconds, ckpt_dir, resume)
        vae_stats = stage.run()
        if vae_stats["trained"]:
            shutil.rmtree(ckpt_dir / UNetRecipe.name, ignore_errors=True)
    else:
        vae_stats = {"skipped": f"kept the VAE of {init_from}"}
    vae.eval().requires_grad_(False)

    # 2. Latent scale and the pool of encoded low-quality clips.
    t0 = time.perf_counter()
    bf16 = loop_config(cfg, 0, None).mixed_precision == "bf16"
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)
    latents, prompt_index = latent_pool(vae, cfg.pool_size, cfg.seed + 2, dev, autocast=autocast)
    if init_from is None:
        scaling_factor = float(1.0 / latents.std())
        vae.register_to_config(scaling_factor=scaling_factor)
    else:
        scaling_factor = float(vae.config.scaling_factor)
    latents = latents * scaling_factor
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    pool_s = time.perf_counter() - t0
    print(
        f"[pool] {cfg.pool_size} clips rendered + encoded in {pool_s:.1f} s; "
        f"latent scaling factor {scaling_factor:.4f}",
        file=sys.stderr,
    )

    # 3. UNet + text encoder on low-quality latents only.
    pool = (latents, prompt_index)
    stage = UNetRecipe(
        components, pool, cfg, cfg.unet_steps, cfg.unet_max_seconds, ckpt_dir, resume
    )
    unet_stats = stage.run()
    del latents

    # 4. Save the stock pipeline and the manifest.
    for name in ("vae", "text_encoder", "unet"):
        components[name].to("cpu")
    pipe = world_pipeline(components)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    manifest = {
        "what": "the mcm world teacher: a stock diffusers TextToVideoSDPipeline",
        "command": command if command is not None else " ".join(["mcm", *sys.argv[1:]]),
        "seed": cfg.seed,
        "revision": _git_revision(),
        "device": _device_name(dev),
        "created_unix": int(time.time()),
        "versions": {"torch": torch.__version__, **_versions()},
        "build_config": asdict(cfg),
        "model_config": asdict(model_config),
        "parameters": {
            n: sum(p.numel() for p in components[n].parameters())
            for n in ("vae", "text_encoder", "unet")
        },
        "latent_scaling_factor": scaling_factor,
        "stages": {
            "vae": vae_stats,
            "pool": {"clips": cfg.pool_size, "wall_s": round(pool_s, 2)},
            "unet": unet_stats,
        },
        "total_wall_s": round(time.perf_counter() - t_start, 2),
        "sampling": {
            "scheduler": "DDIMScheduler",
            "num_inference_steps": TEACHER_STEPS,
            "guidance_scale": TEACHER_GUIDANCE,
            "num_frames": model_config.num_frames,
            "height": model_config.size,
            "width": model_config.size,
        },
        "metrics": None,
    }
    if note:
        manifest["note"] = note
    if history:
        manifest["init_from"] = str(init_from)
        manifest["history"] = history
    write_manifest(out_dir, manifest)
    if evaluate_videos > 0:
        manifest["metrics"] = teacher_metrics(
            out_dir, evaluate_videos, device=cfg.device, seed=cfg.seed
        )
        write_manifest(out_dir, manifest)
    manifest["asset_bytes"] = _asset_bytes(out_dir)
    write_manifest(out_dir, manifest)
    return out_dir


def _versions() -> dict:
    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__}


def write_manifest(out_dir: str | Path, manifest: dict) -> None:
    path = Path(out_dir) / MANIFEST
    path.write_text(json.dumps(manifest, indent=1, default=str) + "\n")


def read_manifest(out_dir: str | Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"No {MANIFEST} in {out_dir}; is it a world teacher built by `mcm world build`?"
        )
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------
# Sampling and metrics
# ---------------------------------------------------------------------------------------


def teacher_metrics(
    teacher_dir: str | Path,
    num_videos: int = 120,
    device: str = "cpu",
    seed: int = 0,
    steps: tuple[int, ...] = (TEACHER_STEPS, 4),
    guidance_scale: float = TEACHER_GUIDANCE,
    probes_dir: str | Path | None = None,
) -> dict:
    """World metrics of the teacher's samples at each DDIM step count (a flow-matching
    teacher: Euler steps, frames 0-7 of its 9 scored) with probes from ``probes_dir``
    (default the shipped ones), or {"skipped": reason} without probes."""
    try:
        probes = load_probes() if probes_dir is None else load_probes(probes_dir)
    except (ImportError, FileNotFoundError, OSError) as e:
        return {"skipped": f"world probes not available ({e}); run `mcm world build-probes` first"}

    wan = WorldWanConfig()
    bundle = load_teacher(str(teacher_dir), device=device, max_sequence_length=wan.max_tokens)
    prompts = world_prompts()
    prompts = [prompts[i % len(prompts)] for i in range(num_videos)]
    result = {"num_videos": num_videos, "guidance_scale": guidance_scale}
    if bundle.family == "wan":  # 9-frame clips; frames 0-7 are scored, as the probes know 8
        size, sampler = (
            {"num_frames": wan.num_frames, "height": wan.size, "width": wan.size},
            "euler",
        )
        result["scored_frames"] = "0-7 of 9"
    else:
        size, sampler = {"num_frames": WorldTeacherConfig.num_frames}, "ddim"
    for n in steps:
        t0 = time.perf_counter()
        videos = sample_teacher(bundle, prompts, n, guidance_scale, seed, **size).cpu()
        videos = videos[:, :, : WorldTeacherConfig.num_frames]
        wall = time.perf_counter() - t0
        m = world_metrics(videos, prompts, probes)
        m = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
        m["wall_s_per_video"] = round(wall / num_videos, 4)
        m["nfe"] = 2 * n
        result[f"{sampler}_{n}"] = m
    return result
