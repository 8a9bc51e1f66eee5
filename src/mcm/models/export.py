"""Export a distilled student for stock diffusers pipelines (loading it back:
:mod:`mcm.models.student`).

``export_student`` writes, under ``out_dir``::

    lora/pytorch_lora_weights.safetensors   diffusers-format LoRA ("unet.<module>.lora_A.weight";
                                            Wan: "transformer.<module>...", with peft metadata)
    merged/                                 the full pipeline, LoRA fused, LCMScheduler set up
                                            (Wan: UniPC on the student's flow grid, order 1)
    mcm_student.json                        what a user needs to sample (scheduler settings,
                                            recommended steps, guidance, LoRA settings), the
                                            teacher by hub id, "world" or a relative path
    aux/<name>.safetensors                  auxiliary modules (e.g. the learnable motion head)
    README.md, merged/README.md             model cards (:mod:`mcm.models.model_card`)

Nothing in the folder names a path of the machine that wrote it (the teacher's reference,
licence, training summary: :mod:`mcm.models.provenance`), so it uploads to a model hub as
it is (the whole export, or ``merged/`` alone).

The LoRA scale alpha / rank is folded into the B matrices, so every loader that assumes
alpha = rank (the diffusers convention when no alphas are stored) gets the right scale.
A Wan LoRA keeps alpha and carries its adapter config as metadata instead, which stock
``WanPipeline.load_lora_weights`` reads (without it, it would load at scale 1).

Loading (no mcm code needed for the merged folder)::

    DiffusionPipeline.from_pretrained("out/merged")               # any family
    AnimateDiffPipeline(...).load_lora_weights("out/lora")         # AnimateDiff, stock (+ the
                                                                   #   LCMScheduler, see _usage)
    WanPipeline(...).load_lora_weights("out/lora")                 # Wan, stock (+ the scheduler)
    mcm.models.load_student_lora(pipe, "out/lora")                 # ModelScope (and AnimateDiff)

diffusers 0.42 cannot load LoRA into ``UNet3DConditionModel`` (no PEFT mixin), hence
``load_student_lora``, which injects the layers with peft directly.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    LCMScheduler,
    UniPCMultistepScheduler,
    WanPipeline,
)
from safetensors.torch import save_file
from torch import Tensor, nn

from mcm.diffusion import consistency_timesteps, flow_sigmas, schedule_from_config
from mcm.errors import InputError
from mcm.models.loading import detect_family, load_pipeline, read_model_index
from mcm.models.lora import fuse_lora
from mcm.models.lora_weights import (
    attach_lora_from_state_dict,
    check_lora_family,
    lora_rank,
    lora_state_dict,
)
from mcm.models.model_card import lcm_scheduler_line, write_model_cards
from mcm.models.provenance import (
    metrics_table,
    portable_reference,
    teacher_licence,
    training_summary,
)
from mcm.paths import resolve_teacher

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
STUDENT_JSON = "mcm_student.json"

# The reference MCM samples with LCMScheduler, timestep scaling 4, on the 50-step grid.
DEFAULT_SAMPLING: dict[str, Any] = {
    "timestep_scaling": 4.0,
    "original_inference_steps": 50,
    "num_inference_steps": 4,
    "recommended_steps": [1, 2, 4, 8],
    "guidance_scale": 1.0,
    "num_frames": 16,
    "fps": 8,
}


def sampling_settings(sampling: dict[str, Any] | None = None) -> dict[str, Any]:
    """DEFAULT_SAMPLING updated with ``sampling``, validated.

    Without an explicit ``recommended_steps``, the default 1/2/4/8 are kept up to
    ``original_inference_steps``.
    """
    sampling = dict(sampling or {})
    out = {**DEFAULT_SAMPLING, **sampling}
    if not float(out["timestep_scaling"]) > 0:
        raise InputError(f"timestep_scaling must be > 0; got {out['timestep_scaling']}.")
    n_orig = int(out["original_inference_steps"])
    if "recommended_steps" not in sampling:
        out["recommended_steps"] = [n for n in DEFAULT_SAMPLING["recommended_steps"] if n <= n_orig]
    for n in [out["num_inference_steps"], *out["recommended_steps"]]:
        if not 1 <= int(n) <= n_orig:
            raise InputError(
                f"Step counts must be in 1..original_inference_steps={n_orig}; got {n}."
            )
    if float(out["guidance_scale"]) != 1.0:
        warnings.warn(
            "guidance_scale != 1 makes the stock pipeline run CFG on top of the distilled "
            "(already guided) student.",
            stacklevel=2,
        )
    return out


def lcm_scheduler(base_config: dict[str, Any], sampling: dict[str, Any]) -> LCMScheduler:
    """An LCMScheduler on the teacher's betas with the student's sampling settings."""
    return LCMScheduler.from_config(
        base_config,
        timestep_scaling=float(sampling["timestep_scaling"]),
        original_inference_steps=int(sampling["original_inference_steps"]),
        clip_sample=False,
        thresholding=False,
    )


def flow_student_scheduler(
    base_config: dict[str, Any], sampling: dict[str, Any]
) -> UniPCMultistepScheduler:
    """The stock scheduler that samples a flow-matching student exactly as it was trained:
    UniPC on the teacher's shifted flow sigmas (``flow_sigmas``: 2 steps at shift 5 ->
    [1, .834, 0], no wasted step near sigma 0), order 1 with the corrector off, i.e. the
    deterministic Euler step, which draws no noise (WanPipeline never passes its generator
    to ``scheduler.step``)."""
    n_max = int(sampling["original_inference_steps"])
    return UniPCMultistepScheduler.from_config(
        {k: v for k, v in base_config.items() if k != "_class_name"},
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=float(sampling["flow_shift"]),
        solver_order=1,
        disable_corrector=list(range(max(n_max, 8) + 1)),
        final_sigmas_type="zero",
    )


def student_scheduler(family: str, base_config: dict[str, Any], sampling: dict[str, Any]):
    """The exported student's scheduler: LCM for the UNet families, flow UniPC for Wan."""
    if family == "wan":
        return flow_student_scheduler(base_config, sampling)
    return lcm_scheduler(base_config, sampling)


def _save_wan_lora(lora: dict[str, Tensor], alpha: float, lora_dir: Path) -> None:
    """The LoRA as stock ``WanPipeline.save_lora_weights`` writes it, with the adapter
    config (rank, alpha, target modules) as metadata so stock loaders apply alpha / rank."""
    modules = sorted({k.split(".lora_")[0] for k in lora})
    metadata = {
        "r": lora_rank(lora),
        "lora_alpha": float(alpha),
        "target_modules": modules,
        "lora_dropout": 0.0,
        "bias": "none",
        "use_dora": False,
    }
    WanPipeline.save_lora_weights(
        lora_dir,
        transformer_lora_layers={k: v.float().cpu().contiguous() for k, v in lora.items()},
        transformer_lora_adapter_metadata=metadata,
        weight_name=LORA_WEIGHT_NAME,
    )


def diffusers_lora_state_dict(lora: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """Our LoRA weights -> diffusers' format: "unet." prefix, alpha / rank folded into B."""
    scale = float(alpha) / lora_rank(lora)
    return {
        f"unet.{k}": (v * scale if ".lora_B." in k else v).float().cpu().contiguous()
        for k, v in lora.items()
    }


def _save_aux(modules: dict[str, nn.Module | dict[str, Tensor]], aux_dir: Path) -> list[str]:
    aux_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for name, module in modules.items():
        if not name.replace("_", "").replace("-", "").isalnum():
            raise InputError(f"Auxiliary module name {name!r} must be alphanumeric (with _ or -).")
        state = module.state_dict() if isinstance(module, nn.Module) else module
        meta = {
            "format": "pt",
            "class": type(module).__qualname__ if isinstance(module, nn.Module) else "state_dict",
        }
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, str(aux_dir / f"{name}.safetensors"), metadata=meta)
        names.append(name)
    return names


def export_lora(
    teacher: str,
    lora: dict[str, Tensor],
    out_dir: str | Path,
    alpha: float | None = None,
    sampling: dict[str, Any] | None = None,
    extra_modules: dict[str, nn.Module | dict[str, Tensor]] | None = None,
    motion_adapter: str | None = None,
    lora_meta: dict[str, str] | None = None,
    training_config: Any = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Export LoRA weights trained on ``teacher`` (see the module docstring for the layout).

    Args:
        teacher: the teacher pipeline (directory, hub id or "world"), reloaded in fp32.
        lora: weights keyed ``<module>.lora_{A,B}.weight`` (:func:`lora_state_dict`).
        alpha: LoRA alpha (default: the rank, i.e. scale 1).
        sampling: overrides of :data:`DEFAULT_SAMPLING`.
        extra_modules: auxiliary modules saved to ``aux/<name>.safetensors``.
        motion_adapter: the MotionAdapter used with an SD1.5 AnimateDiff teacher.
        lora_meta: metadata read with the LoRA (its family is checked).
        training_config: the run's ``TrainConfig`` (or its dict, e.g. its config.yaml): the
            model card's method and training data (default: "not recorded").
        metrics: a metrics.json's contents for the model card (`mcm evaluate`'s or
            `mcm demo`'s).

    Raises:
        ValueError: the LoRA was made for another family or does not fit the teacher.
    """
    out_dir = Path(out_dir)
    settings = sampling_settings(sampling)
    path = resolve_teacher(teacher)
    family = detect_family(read_model_index(path), motion_adapter)
    check_lora_family(lora_meta or {}, lora, family)
    rank = lora_rank(lora)
    alpha = float(alpha if alpha is not None else rank)
    extras = _card_extras(training_config, metrics)

    # 1. The LoRA in diffusers format, with the sampling settings in its metadata.
    (out_dir / "lora").mkdir(parents=True, exist_ok=True)
    scheduler_meta = {
        "timestep_scaling": float(settings["timestep_scaling"]),
        "original_inference_steps": int(settings["original_inference_steps"]),
    }
    if family == "wan":
        _save_wan_lora(lora, alpha, out_dir / "lora")
    else:
        save_file(
            diffusers_lora_state_dict(lora, alpha),
            str(out_dir / "lora" / LORA_WEIGHT_NAME),
            metadata={
                "format": "pt",
                "mcm_family": family,
                "lora_rank": str(rank),
                "lora_alpha": str(rank),  # alpha / rank is folded into lora_B
                "mcm_scheduler": json.dumps(scheduler_meta),
            },
        )

    # 2. The merged pipeline (teacher in fp32 + LoRA fused) and 3. the sampling card.
    def fuse(network: nn.Module) -> None:
        attach_lora_from_state_dict(network, lora, alpha=alpha)
        fuse_lora(network)

    lora_card = {
        "file": f"lora/{LORA_WEIGHT_NAME}",
        "rank": rank,
        "alpha": alpha,
        "alpha_folded_into_lora_B": family != "wan",
        "modules": len({k.split(".lora_")[0] for k in lora}),
    }
    card = {"lora": lora_card, **extras}
    return _export_merged(teacher, out_dir, settings, fuse, extra_modules, motion_adapter, card)


def export_full(
    teacher: str,
    weights: dict[str, Tensor],
    out_dir: str | Path,
    sampling: dict[str, Any] | None = None,
    extra_modules: dict[str, nn.Module | dict[str, Tensor]] | None = None,
    motion_adapter: str | None = None,
    training_config: Any = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Export a fully fine-tuned student: ``weights`` (the whole network's state dict, a
    UNet's or Wan's transformer's) in the teacher's pipeline, as ``merged/`` with the
    student's scheduler, ``mcm_student.json``, ``aux/`` and the model cards (no ``lora/``;
    ``training_config`` and ``metrics`` as in :func:`export_lora`).

    Raises:
        ValueError: the weights do not fit the teacher's network (names the keys).
    """

    def load(network: nn.Module) -> None:
        result = network.load_state_dict(weights, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise InputError(
                f"The fine-tuned weights do not fit {type(network).__name__}: missing "
                f"{result.missing_keys[:2]}, unexpected {result.unexpected_keys[:2]}; export "
                "them with the teacher they were trained from."
            )

    settings = sampling_settings(sampling)
    card = _card_extras(training_config, metrics)
    return _export_merged(
        teacher, Path(out_dir), settings, load, extra_modules, motion_adapter, card
    )


def _card_extras(training_config: Any, metrics: dict[str, Any] | None) -> dict[str, Any]:
    """What mcm_student.json records for the model card, checked before anything is written."""
    extras = {}
    if training_config is not None:
        extras["training"] = training_summary(training_config)
    if metrics is not None:
        extras["metrics"] = metrics_table(metrics)
    return extras


def _drop_source_paths(folder: Path) -> None:
    """Remove the ``_name_or_path`` entries save_pretrained copies into the configs: they
    name the folder the teacher was loaded from (diffusers sets them anew on loading)."""
    for path in sorted(folder.rglob("*.json")):
        try:
            config = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(config, dict) and "_name_or_path" in config:
            del config["_name_or_path"]
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _export_merged(teacher, out_dir: Path, settings, update_network, extra_modules,
                   motion_adapter, card_extra: dict) -> Path:  # fmt: skip
    """The teacher's pipeline in fp32 with ``update_network(network)`` applied and the
    student's scheduler, saved as ``merged/``; the auxiliary modules; ``mcm_student.json``;
    the model cards."""
    path = resolve_teacher(teacher)
    family = detect_family(read_model_index(path), motion_adapter)
    pipe = load_pipeline(path, family, motion_adapter, dtype=torch.float32)
    update_network(pipe.transformer if family == "wan" else pipe.unet)
    if family == "animatediff" and getattr(pipe, "motion_adapter", None) is not None:
        # Keep the saved motion adapter consistent with the fused UNet's motion modules.
        motion = {k: v for k, v in pipe.unet.state_dict().items() if "motion_modules" in k}
        pipe.motion_adapter.load_state_dict(motion)
    base_scheduler_config = dict(pipe.scheduler.config)
    if family == "wan":  # the teacher's shift, and Wan's default call where not given
        shift = schedule_from_config(pipe.scheduler).shift
        settings = {"height": 480, "width": 832, "max_sequence_length": 512, **settings}
        settings.setdefault("flow_shift", shift)
    pipe.scheduler = student_scheduler(family, base_scheduler_config, settings)
    pipe.save_pretrained(out_dir / "merged", safe_serialization=True)
    _drop_source_paths(out_dir / "merged")

    aux = _save_aux(extra_modules or {}, out_dir / "aux") if extra_modules else []
    n_train = int(base_scheduler_config.get("num_train_timesteps", 1000))
    if family == "wan":  # the grid's t = sigma T (the network sees them truncated)
        shift = float(settings["flow_shift"])
        scheduler_card = {
            "_class_name": "UniPCMultistepScheduler",
            "flow_shift": shift,
            "solver_order": 1,
            "corrector": False,
        }
        grids = {
            str(n): flow_sigmas(int(n), shift, n_train).tolist()
            for n in settings["recommended_steps"]
        }
    else:
        n_orig = int(settings["original_inference_steps"])
        scheduler_card = {
            "_class_name": "LCMScheduler",
            "timestep_scaling": float(settings["timestep_scaling"]),
            "original_inference_steps": n_orig,
        }
        grids = {
            str(n): consistency_timesteps(int(n), n_train, n_orig).tolist()
            for n in settings["recommended_steps"]
        }
    teacher_ref = portable_reference(str(teacher), out_dir)
    card = {
        "family": family,
        "pipeline_class": type(pipe).__name__,
        "teacher": teacher_ref,
        "motion_adapter": motion_adapter and portable_reference(motion_adapter, out_dir),
        "scheduler": scheduler_card,
        "sampling": settings,
        "timesteps": grids,
        **card_extra,
        "merged": "merged",
        "aux_modules": {name: f"aux/{name}.safetensors" for name in aux},
        "usage": _usage(family, settings, "lora" in card_extra),
        "license": teacher_licence(path, teacher_ref),
    }
    (out_dir / STUDENT_JSON).write_text(json.dumps(card, indent=2) + "\n")
    write_model_cards(out_dir)
    return out_dir


def _usage(family: str, settings: dict[str, Any], has_lora: bool) -> dict[str, str]:
    call = "num_inference_steps=4, guidance_scale=1.0"
    if family == "wan":
        call += (
            f", height={settings['height']}, width={settings['width']}, "
            f"num_frames={settings['num_frames']}, "
            f"max_sequence_length={settings['max_sequence_length']}"
        )
    lora = "mcm.models.load_student_lora(pipe, '<out>/lora')"
    if family == "animatediff":  # stock: the student's scheduler, not the teacher's
        lora += f" or pipe.load_lora_weights('<out>/lora'); {lcm_scheduler_line(settings)}"
    if family == "wan":
        lora = (
            "pipe.load_lora_weights('<out>/lora'); pipe.scheduler = "
            "UniPCMultistepScheduler.from_pretrained('<out>/merged', subfolder='scheduler')"
        )
    merged = f"DiffusionPipeline.from_pretrained('<out>/merged')(prompt, {call})"
    return {"merged": merged, "lora": lora} if has_lora else {"merged": merged}


def export_student(
    bundle,
    out_dir: str | Path,
    sampling: dict[str, Any] | None = None,
    extra_modules: dict[str, nn.Module] | None = None,
    lora: dict[str, Tensor] | None = None,
    full: bool = False,
    training_config: Any = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Export the student of a :class:`TeacherBundle`: its LoRA (:func:`export_lora`), or,
    with ``full=True``, its whole network (:func:`export_full`).

    ``lora``: its weights when already gathered (FSDP: every rank gathers, one exports);
    default :func:`lora_state_dict` of the denoiser. ``training_config`` (the run's
    ``TrainConfig``) and ``metrics`` go into the model card (see :func:`export_lora`).
    """
    if full:
        weights = {
            k: v.detach().float().cpu() for k, v in bundle.denoiser.unet.state_dict().items()
        }
        return export_full(
            bundle.path, weights, out_dir, sampling, extra_modules, bundle.motion_adapter,
            training_config=training_config, metrics=metrics,
        )  # fmt: skip
    config = getattr(bundle.denoiser, "lora_config", None)
    if config is None:
        raise ValueError("The bundle's denoiser has no LoRA; call attach_lora and train first.")
    return export_lora(
        bundle.path,
        lora if lora is not None else lora_state_dict(bundle.denoiser),
        out_dir,
        alpha=config["alpha"],
        sampling=sampling,
        extra_modules=extra_modules,
        motion_adapter=bundle.motion_adapter,
        lora_meta={"mcm_family": bundle.family},
        training_config=training_config,
        metrics=metrics,
    )
