"""Load an exported student into stock diffusers pipelines (the folders
:func:`mcm.models.export.export_student` writes).

* :func:`load_student_pipeline` - the merged pipeline and its sampling card.
* :func:`student_teacher` - the teacher an export was distilled from, loadable
  (``mcm_student.json`` names it by hub id, "world" or a path relative to the export).
* :func:`load_student_lora` - a UNet student's LoRA into a stock ModelScope or AnimateDiff
  pipeline, with its LCMScheduler (diffusers 0.42 cannot load LoRA into
  ``UNet3DConditionModel``). A Wan student's LoRA loads with stock
  ``WanPipeline.load_lora_weights``.
* :func:`pipeline_video` - a stock pipeline's frames in mcm's layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    DiffusionPipeline,
    UNet3DConditionModel,
    UNetMotionModel,
    WanTransformer3DModel,
)
from torch import Tensor

from mcm.errors import InputError
from mcm.models.export import (
    DEFAULT_SAMPLING,
    STUDENT_JSON,
    diffusers_lora_state_dict,
    lcm_scheduler,
)
from mcm.models.lora import fuse_lora
from mcm.models.lora_weights import attach_lora_from_state_dict, check_lora_family, read_lora
from mcm.models.provenance import resolve_reference


def pipeline_family(pipe) -> str:
    if isinstance(getattr(pipe, "transformer", None), WanTransformer3DModel):
        return "wan"
    unet = getattr(pipe, "unet", None)
    if isinstance(unet, UNet3DConditionModel):
        return "modelscope"
    if isinstance(unet, UNetMotionModel):
        return "animatediff"
    raise InputError(
        f"{type(pipe).__name__} with a {type(unet).__name__} is not a supported video "
        "pipeline (need UNet3DConditionModel, UNetMotionModel or WanTransformer3DModel)."
    )


def student_teacher(export_dir: str | Path) -> str:
    """The teacher of an export as ``from_pretrained`` loads it: a hub id, the shipped world
    teacher's folder, or the local folder its relative path in ``mcm_student.json`` names
    (seen from ``export_dir``; an absolute path an older mcm wrote is returned as it is).

    Raises:
        FileNotFoundError: no mcm_student.json in ``export_dir``.
    """
    card = Path(export_dir) / STUDENT_JSON
    if not card.is_file():
        raise FileNotFoundError(
            f"No {STUDENT_JSON} in {export_dir}: pass the folder written by `mcm export`."
        )
    return resolve_reference(json.loads(card.read_text())["teacher"], card.parent)


def load_student_lora(pipe, lora: str | Path, fuse: bool = False, set_scheduler: bool = True):
    """Load an exported student LoRA into a stock pipeline, in one call.

    Args:
        pipe: a ``TextToVideoSDPipeline`` (ModelScope) or ``AnimateDiffPipeline``.
        lora: the ``lora/`` folder of an export, or a LoRA ``.safetensors`` file.
        fuse: fold the LoRA into the UNet weights (then ``pipe.save_pretrained`` writes a
            plain merged model).
        set_scheduler: replace the scheduler by the LCMScheduler the student was
            distilled for (from the file's metadata).

    Returns:
        pipe (modified in place).

    Raises:
        ValueError: the LoRA was made for the other family or does not fit the UNet.
    """
    family = pipeline_family(pipe)
    if family == "wan":  # a stock LoRA file: its adapter metadata gives the scale
        raise InputError(
            "Load a Wan student's LoRA with stock diffusers: pipe.load_lora_weights('<out>/lora') "
            "and the scheduler of '<out>/merged' (see mcm_student.json's usage)."
        )
    weights, meta = read_lora(lora)
    check_lora_family(meta, weights, family)
    modules = dict(pipe.unet.named_modules())
    absent = sorted({k.split(".lora_")[0] for k in weights} - set(modules))
    if absent:
        raise InputError(
            f"{len(absent)} LoRA target modules are not in this {family} UNet (e.g. "
            f"{absent[:2]}): the LoRA was made for a different model."
        )
    alpha = float(meta["lora_alpha"])
    if family == "animatediff":
        pipe.load_lora_weights(diffusers_lora_state_dict(weights, alpha), adapter_name="mcm")
        if fuse:
            pipe.fuse_lora()
            pipe.unload_lora_weights()
    else:
        attach_lora_from_state_dict(pipe.unet, weights, alpha=alpha)
        if fuse:
            fuse_lora(pipe.unet)
    if set_scheduler and "mcm_scheduler" in meta:
        pipe.scheduler = lcm_scheduler(
            dict(pipe.scheduler.config), json.loads(meta["mcm_scheduler"])
        )
    return pipe


def load_student_pipeline(path: str | Path, device=None, dtype=torch.float32):
    """The merged student of an export as a stock pipeline, plus its sampling settings.

    Args:
        path: an ``mcm export`` folder (with ``merged/`` and ``mcm_student.json``) or the
            ``merged/`` folder itself.
    Returns:
        (pipeline with its LCMScheduler, info) where info holds the card's ``sampling``
        settings (``timestep_scaling``, ``original_inference_steps``, ``num_frames``, ...)
        plus ``family`` and, with the card, ``teacher`` (:func:`student_teacher`).

    Raises:
        FileNotFoundError: no merged pipeline at ``path``.
    """
    path = Path(path)
    merged = path / "merged" if (path / "merged" / "model_index.json").is_file() else path
    if not (merged / "model_index.json").is_file():
        raise FileNotFoundError(
            f"No merged student pipeline in {path}: pass the folder written by `mcm export` "
            "(it holds merged/ and mcm_student.json)."
        )
    pipe = DiffusionPipeline.from_pretrained(merged, dtype=dtype)
    if device is not None:
        pipe = pipe.to(device)
    card_path = merged.parent / STUDENT_JSON
    if card_path.is_file():
        card = json.loads(card_path.read_text())
        info = {**card["sampling"], "family": card["family"]}
        info["teacher"] = resolve_reference(card.get("teacher"), merged.parent)
    else:  # a merged folder on its own: what its scheduler says
        config = pipe.scheduler.config
        info = {
            **DEFAULT_SAMPLING,
            "timestep_scaling": config.get("timestep_scaling", 10.0),
            "original_inference_steps": config.get("original_inference_steps", 50),
            "family": pipeline_family(pipe),
        }
    return pipe, info


def pipeline_video(output) -> Tensor:
    """A stock pipeline's ``output_type="pt"`` frames [B, F, 3, H, W] in [0, 1] -> our
    convention [B, 3, F, H, W] in [-1, 1]."""
    frames = getattr(output, "frames", output)
    if not torch.is_tensor(frames) or frames.ndim != 5:
        raise ValueError('Call the pipeline with output_type="pt" to get [B, F, 3, H, W] frames.')
    return frames.permute(0, 2, 1, 3, 4).float() * 2 - 1
