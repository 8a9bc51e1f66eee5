"""The model card (README.md) of an exported student, and the portable teacher reference.

An export folder (:mod:`mcm.models.export`) is meant to be uploaded to a model hub as it
is, so nothing in it names a path of the machine that wrote it:

* ``mcm_student.json`` refers to the teacher (and an AnimateDiff motion adapter) by a
  *portable reference*: a hub id as is (a folder of the hub cache is turned back into its
  id), ``world`` / ``world-wan`` for the teachers that ship with mcm, and any other local
  folder as a path relative to the export folder, always starting with ``./`` or ``../``
  so that it is never mistaken for a hub id. :func:`resolve_reference` turns a reference
  back into something ``from_pretrained`` loads.
* ``README.md`` (the export) and ``merged/README.md`` (the merged pipeline on its own) are
  model cards: YAML front matter a hub reads (library, pipeline tag, base model, tags,
  licence), then the base model, the method, how to sample, the training data and metrics
  when the export was told them, runnable loading code for stock diffusers, and the
  licence. Both are rendered from ``mcm_student.json`` alone (:func:`write_model_cards`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from huggingface_hub import ModelCardData, try_to_load_from_cache
from huggingface_hub.repocard import metadata_load

from mcm.errors import InputError
from mcm.paths import WORLD_TEACHER, WORLD_WAN_TEACHER, resolve_teacher

CARD_NAME = "README.md"
# The loading code's first line names the folder with this text; replace it to run the code.
FOLDER_PLACEHOLDER = "path/to/this/folder"
WORLD_NAMES = {"world": WORLD_TEACHER, "world-wan": WORLD_WAN_TEACHER}
# Front matter when the teacher's licence is not known: a hub accepts it, a reader sees
# that it must be set before the upload.
LICENCE_PLACEHOLDER = {"license": "other", "license_name": "set-the-teacher-licence-before-upload"}
FAMILY_NAMES = {
    "modelscope": "ModelScope T2V (UNet3DConditionModel)",
    "animatediff": "AnimateDiff (UNetMotionModel)",
    "wan": "Wan 2.1 (WanTransformer3DModel, flow matching)",
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_HUB_CACHE_FOLDER = re.compile(r"models--(.+)")
_WORLD_DATA_FOLDER = re.compile(r"([a-z_]+)-n(\d+)-seed(\d+)")


# ----------------------------------------------------------------------- teacher references
def is_local_reference(reference: str) -> bool:
    return reference in (".", "..") or reference.startswith(("./", "../"))


def hub_id(reference: str | None) -> str | None:
    """``reference`` when it is a hub id (``org/name``), else None."""
    if reference is None or reference in WORLD_NAMES or is_local_reference(reference):
        return None
    return reference if _HUB_ID.fullmatch(reference) else None


def hub_id_of_cache_folder(path: Path) -> str | None:
    """``.../models--org--name/snapshots/<revision>`` (a hub cache folder) -> ``org/name``."""
    parts = path.parts
    for i, part in enumerate(parts[:-2]):
        match = _HUB_CACHE_FOLDER.fullmatch(part)
        if match and parts[i + 1] == "snapshots":
            return match.group(1).replace("--", "/")
    return None


def portable_reference(name_or_path: str, out_dir: str | Path) -> str:
    """How ``mcm_student.json`` names a teacher or motion adapter: a hub id as is, the
    shipped world teachers as ``world`` / ``world-wan``, a local folder relative to
    ``out_dir`` (``../teacher``; ``./x`` for one inside it)."""
    if name_or_path in WORLD_NAMES:
        return name_or_path
    path = Path(name_or_path)
    if not path.exists():  # a hub id (the export loaded it, so it exists there)
        return name_or_path
    resolved = path.resolve()
    for name, folder in WORLD_NAMES.items():
        if resolved == folder.resolve():
            return name
    repo = hub_id_of_cache_folder(resolved)
    if repo is not None:
        return repo
    relative = os.path.relpath(resolved, Path(out_dir).resolve())
    return relative if is_local_reference(relative) else f"./{relative}"


def resolve_reference(reference: str | None, export_dir: str | Path) -> str | None:
    """A reference of ``mcm_student.json`` -> what ``from_pretrained`` loads: ``world`` ->
    the shipped teacher's folder, ``../x`` -> that folder seen from ``export_dir``; a hub id
    (or an absolute path an older mcm wrote) unchanged."""
    if reference is None:
        return None
    if reference in WORLD_NAMES:
        return resolve_teacher(reference)
    if is_local_reference(reference):
        return os.path.normpath(Path(export_dir).resolve() / reference)
    return reference


# --------------------------------------------------------------------------------- licence
def _package_licence() -> str | None:
    try:
        info = metadata.metadata("mcm")
    except metadata.PackageNotFoundError:
        return None
    return info.get("License-Expression") or info.get("License") or None


def _teacher_card(name_or_path: str) -> Path | None:
    """The teacher's own README.md: in its folder, or in the hub cache (no download)."""
    path = Path(name_or_path)
    if path.is_dir():
        card = path / CARD_NAME
        return card if card.is_file() else None
    if hub_id(name_or_path) is None:
        return None
    cached = try_to_load_from_cache(name_or_path, CARD_NAME)
    return Path(cached) if isinstance(cached, str) else None


def teacher_licence(name_or_path: str, reference: str) -> dict[str, str | None]:
    """The licence a student inherits from its teacher: ``{"license", "source"}`` (plus
    ``license_name`` / ``license_link`` when the teacher's card gives them); ``license``
    is None when neither the teacher's card nor mcm knows it.

    Args:
        name_or_path: the teacher as loaded (a folder or a hub id).
        reference: its :func:`portable_reference`.
    """
    if reference in WORLD_NAMES:
        spdx = _package_licence()
        if spdx:
            return {"license": spdx.lower(), "source": "the mcm package, which ships this teacher"}
    card = _teacher_card(name_or_path)
    meta = (metadata_load(card) or {}) if card is not None else {}
    if isinstance(meta.get("license"), str):
        keys = ("license", "license_name", "license_link")
        return {
            **{k: str(meta[k]) for k in keys if k in meta},
            "source": "the teacher's model card",
        }
    return {"license": None, "source": None}


# ---------------------------------------------------------------------- training and metrics
def describe_source(source: str | None) -> str | None:
    """A data source as the card shows it, without local paths: ``world:...`` and URLs
    (without credentials or query) as they are, a local folder or file by its name."""
    if not source:
        return None
    if source.startswith("world:"):
        return f"`{source}` (the built-in world)"
    if source.startswith("pipe:"):
        return "webdataset shards streamed by a `pipe:` command"
    if "://" in source:
        url = urlsplit(source)
        host = url.hostname or ""
        return f"`{urlunsplit((url.scheme, host, url.path, '', ''))}`"
    name = PurePath(source).name or source
    world = _WORLD_DATA_FOLDER.fullmatch(name)
    if world and PurePath(source).parent.name == "world-data":  # a rendered world: source
        domain, count, seed = world.groups()
        return f"`world:{domain}:{count}` (the built-in world, rendered with seed {seed})"
    return f"a local dataset (`{name}`)"


def training_summary(config: Any) -> dict[str, Any]:
    """What the card says about training, from a training config (a ``TrainConfig`` or its
    dict, e.g. a run's ``config.yaml`` read as YAML); keys it lacks are left out.

    ``method`` is "lcm" for consistency distillation on raw latents without a
    discriminator (the LCM baseline), else "mcm".
    """
    if is_dataclass(config):
        config = asdict(config)
    if not isinstance(config, Mapping):
        raise InputError(
            f"The training config must be a mapping (a run's config.yaml); got {type(config).__name__}."
        )
    model = config.get("model") or {}
    method = config.get("method") or {}
    disc = config.get("discriminator") or {}
    data = config.get("data") or {}
    train = config.get("train") or {}
    video = data.get("video") or {}
    images = data.get("images") or {}
    disc_on = bool(disc.get("enabled", False))
    summary = {
        "method": "lcm" if method.get("motion") == "raw" and not disc_on else "mcm",
        "motion": method.get("motion"),
        "discriminator": {"backbone": disc.get("backbone"), "lambda_adv": method.get("lambda_adv")}
        if disc_on
        else None,
        "lambda_real": method.get("lambda_real") if disc_on else None,
        "mixed_trajectories": method.get("mixed_trajectories"),
        "guidance_range": [method["w_min"], method["w_max"]]
        if "w_min" in method and "w_max" in method
        else None,
        "num_ode_steps": method.get("num_ode_steps"),
        "finetune": model.get("finetune", "lora"),
        "lora_rank": model.get("lora_rank"),
        "lora_alpha": model.get("lora_alpha"),
        "video_data": describe_source(video.get("source")),
        "num_frames": video.get("num_frames"),
        "resolution": video.get("resolution"),
        "image_data": describe_source(images.get("source")) if disc_on else None,
        "max_steps": train.get("max_steps"),
        "batch_size": train.get("batch_size"),
        "grad_accum": train.get("grad_accum"),
        "lr": train.get("lr"),
    }
    return {k: v for k, v in summary.items() if v is not None}


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def metrics_table(metrics: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Rows of the card's metrics table, ``{label: {metric: value}}``, from a metrics.json:
    `mcm evaluate`'s (``{"metrics": {name: {"value": v, ...protocol}}}``: one row,
    "student") or `mcm demo`'s (``{label: {metric: value}}``)."""
    if isinstance(metrics.get("metrics"), Mapping):
        row = {
            name: record.get("value") if isinstance(record, Mapping) else record
            for name, record in metrics["metrics"].items()
        }
        table = {"student": row}
    else:
        table = {label: dict(row) for label, row in metrics.items() if isinstance(row, Mapping)}
    table = {label: {k: v for k, v in row.items() if _number(v)} for label, row in table.items()}
    table = {label: row for label, row in table.items() if row}
    if not table:
        raise InputError(
            "The metrics hold no numbers: pass the metrics.json written by `mcm evaluate` or "
            "`mcm demo`."
        )
    return table


# ------------------------------------------------------------------------------- rendering
def _teacher_title(reference: str) -> str:
    if reference in WORLD_NAMES:
        return "the mcm world teacher"
    return f"`{reference}`" if hub_id(reference) else "a local teacher"


def _teacher_name(reference: str) -> str:
    if reference == "world":
        return "the mcm world teacher"
    if reference == "world-wan":
        return "the mcm flow-matching world teacher"
    if hub_id(reference):
        return f"[{reference}](https://huggingface.co/{reference})"
    return f"a local teacher (`{PurePath(reference).name}`, not on the hub)"


def _teacher_expression(reference: str) -> tuple[list[str], str]:
    """(imports, Python expression) for the teacher in the loading code."""
    if reference in WORLD_NAMES:
        return [
            "from mcm.paths import resolve_teacher"
        ], f"resolve_teacher({json.dumps(reference)})"
    if hub_id(reference):
        return [], json.dumps(reference)
    return [], f'f"{{folder}}/{reference}"'  # relative to the export folder


def _call_lines(student: dict, prompt: str) -> list[str]:
    sampling = student["sampling"]
    steps = ", ".join(str(n) for n in sampling["recommended_steps"])
    lines = [
        "video = pipe(",
        f"    {json.dumps(prompt)},",
        f"    num_inference_steps={int(sampling['num_inference_steps'])},  # {steps}",
        f"    guidance_scale={float(sampling['guidance_scale'])},",
        f"    num_frames={int(sampling['num_frames'])},",
    ]
    for key in ("height", "width", "max_sequence_length"):
        if key in sampling:
            lines.append(f"    {key}={int(sampling[key])},")
    lines += [
        "    generator=torch.Generator().manual_seed(0),",
        '    output_type="np",',
        ").frames[0]  # [frames, height, width, 3] in [0, 1]",
        f'export_to_video(video, "video.mp4", fps={int(sampling["fps"])})',
    ]
    return lines


def _prompt(student: dict) -> str:
    if student["teacher"] in WORLD_NAMES:
        return "a red circle moving left"
    return "a panda playing the guitar by a lake"


def merged_code(student: dict, scope: Literal["export", "merged"] = "export") -> str:
    """Python that samples the merged pipeline with stock diffusers (no mcm)."""
    if scope == "merged":
        folder = f'folder = "{FOLDER_PLACEHOLDER}"  # this folder, or its hub id "<user>/<repo>"'
        source = "folder"
    else:
        folder = (
            f'folder = "{FOLDER_PLACEHOLDER}"  # this folder; from the hub: '
            'huggingface_hub.snapshot_download("<user>/<repo>")'
        )
        source = 'f"{folder}/merged"'
    lines = [
        "import torch",
        "from diffusers import DiffusionPipeline",
        "from diffusers.utils import export_to_video",
        "",
        folder,
        f'pipe = DiffusionPipeline.from_pretrained({source})  # on a GPU: add .to("cuda")',
        *_call_lines(student, _prompt(student)),
    ]
    return "\n".join(lines)


def lcm_scheduler_line(scheduler: Mapping[str, Any]) -> str:
    """The line that gives a stock pipeline the student's LCMScheduler (``scheduler``: its
    ``timestep_scaling`` and ``original_inference_steps``)."""
    return (
        "pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config, "
        f"timestep_scaling={float(scheduler['timestep_scaling'])}, "
        f"original_inference_steps={int(scheduler['original_inference_steps'])}, "
        "clip_sample=False, thresholding=False)"
    )


def lora_code(student: dict) -> str:
    """Python that loads the LoRA onto the teacher: stock diffusers for AnimateDiff and Wan
    (with the student's scheduler), ``mcm.models.load_student_lora`` for ModelScope."""
    family = student["family"]
    imports, teacher = _teacher_expression(student["teacher"])
    diffusers_names = {
        "modelscope": ["DiffusionPipeline"],
        "animatediff": ["AnimateDiffPipeline", "LCMScheduler"],
        "wan": ["DiffusionPipeline", "UniPCMultistepScheduler"],
    }[family]
    if family == "animatediff" and student.get("motion_adapter"):
        diffusers_names.append("MotionAdapter")
    if family == "modelscope":
        imports.append("from mcm.models import load_student_lora")
    lines = [
        "import torch",
        f"from diffusers import {', '.join(sorted(diffusers_names))}",
        "from diffusers.utils import export_to_video",
        *imports,
        "",
        f'folder = "{FOLDER_PLACEHOLDER}"  # this export',
        f"teacher = {teacher}",
    ]
    if family == "modelscope":
        lines += [
            "pipe = DiffusionPipeline.from_pretrained(teacher)",
            "# diffusers cannot load a LoRA into UNet3DConditionModel: mcm's loader does,",
            "# and sets the student's LCMScheduler",
            'load_student_lora(pipe, f"{folder}/lora")',
        ]
    elif family == "animatediff":
        adapter = student.get("motion_adapter")
        if adapter:
            _, adapter_expression = _teacher_expression(adapter)
            lines += [
                f"adapter = MotionAdapter.from_pretrained({adapter_expression})",
                "pipe = AnimateDiffPipeline.from_pretrained(teacher, motion_adapter=adapter)",
            ]
        else:
            lines.append("pipe = AnimateDiffPipeline.from_pretrained(teacher)")
        lines += [
            'pipe.load_lora_weights(f"{folder}/lora")',
            "# the student's scheduler: AnimateDiff's own (DDIM, Euler, ...) gives other videos",
            lcm_scheduler_line(student["scheduler"]),
        ]
    else:
        lines += [
            "pipe = DiffusionPipeline.from_pretrained(teacher)",
            'pipe.load_lora_weights(f"{folder}/lora")',
            "# the student's scheduler: flow UniPC on its grid, order 1",
            'pipe.scheduler = UniPCMultistepScheduler.from_pretrained(f"{folder}/merged", '
            'subfolder="scheduler")',
        ]
    return "\n".join([*lines, *_call_lines(student, _prompt(student))])


def front_matter(student: dict, scope: Literal["export", "merged"] = "export") -> str:
    """The card's YAML front matter (between ``---`` lines)."""
    family = student["family"]
    base = [r for r in (hub_id(student["teacher"]), hub_id(student.get("motion_adapter"))) if r]
    tags = ["mcm", "motion-consistency-model", "consistency-distillation", "text-to-video", family]
    if method_name(student) == "lcm":
        tags.append("lcm")
    if "lora" in student and scope == "export":
        tags.append("lora")
    licence = student.get("license") or {}
    fields = (
        {k: licence[k] for k in ("license", "license_name", "license_link") if licence.get(k)}
        if licence.get("license")
        else dict(LICENCE_PLACEHOLDER)
    )
    data = ModelCardData(
        library_name="diffusers",
        pipeline_tag="text-to-video",
        base_model=(base[0] if len(base) == 1 else base) or None,
        base_model_relation="finetune" if base and scope == "merged" else None,
        tags=tags,
        **fields,
    )
    return f"---\n{data.to_yaml()}\n---\n"


def method_name(student: dict) -> str | None:
    """ "mcm", "lcm", or None when the export does not record it (a learnable motion head
    among the auxiliary modules still says MCM)."""
    training = student.get("training") or {}
    if "method" in training:
        return training["method"]
    return "mcm" if "motion_head" in student.get("aux_modules", {}) else None


def _method_text(student: dict) -> list[str]:
    training = student.get("training")
    if not training:
        if "motion_head" in student.get("aux_modules", {}):
            return [
                "Motion Consistency Model (MCM) distillation with a learnable motion head "
                "(`aux/motion_head.safetensors`). The export was written without its training "
                "config, so the rest of the recipe (discriminator, data) is not recorded here."
            ]
        return [
            "Consistency distillation with mcm. The export was written without its training "
            "config, so whether this is the MCM recipe or its LCM baseline is not recorded here."
        ]
    if training["method"] == "lcm":
        text = [
            "**Latent Consistency Model (LCM) baseline**: consistency distillation of the "
            "teacher's guided ODE on the raw latents; no discriminator."
        ]
    else:
        text = [
            "**Motion Consistency Model (MCM)**: consistency distillation of the teacher's "
            f"guided ODE applied to a motion representation of the latents (`{training.get('motion')}`)"
            + (
                ", plus a frame discriminator that learns appearance from high-quality images "
                f"({training['discriminator'].get('backbone')} backbone, weight "
                f"{training['discriminator'].get('lambda_adv')}; real-data consistency weight "
                f"{training.get('lambda_real')})"
                if training.get("discriminator")
                else "; no discriminator"
            )
            + (
                ", on mixed (teacher and student) trajectories."
                if training.get("mixed_trajectories")
                else "."
            )
        ]
    details = []
    if "guidance_range" in training:
        w_min, w_max = training["guidance_range"]
        details.append(f"guidance distilled in (w in [{w_min}, {w_max}], LCM form)")
    if "num_ode_steps" in training:
        details.append(f"teacher ODE on a {training['num_ode_steps']}-step skipping grid")
    if training.get("finetune") == "full":
        details.append("the whole network fine-tuned")
    elif "lora_rank" in training:
        details.append(f"LoRA rank {training['lora_rank']}, alpha {training.get('lora_alpha')}")
    if "max_steps" in training:
        batch = training.get("batch_size", 1) * training.get("grad_accum", 1)
        details.append(
            f"{training['max_steps']} optimiser steps of {batch} clips per process, "
            f"lr {training.get('lr')}"
        )
    if details:
        text.append("Training: " + "; ".join(details) + ".")
    return text


def _data_text(student: dict) -> list[str]:
    training = student.get("training")
    if not training:
        return [
            "Not recorded: the export was written without its training config (`mcm export "
            "--config RUN/config.yaml` records it)."
        ]
    lines = []
    if "video_data" in training:
        shape = ", ".join(
            s
            for s in (
                f"{training['num_frames']} frames" if "num_frames" in training else "",
                f"{training['resolution']} px" if "resolution" in training else "",
            )
            if s
        )
        lines.append(f"- Videos: {training['video_data']}" + (f"; {shape}" if shape else ""))
    if "image_data" in training:
        lines.append(f"- Images for the frame discriminator: {training['image_data']}")
    return lines or ["Not recorded in the training config."]


def _format(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _metrics_text(student: dict) -> list[str]:
    table = student.get("metrics")
    if not table:
        return [
            "None recorded with this export (`mcm export --metrics metrics.json` adds the numbers "
            "of `mcm evaluate` or `mcm demo`)."
        ]
    columns = list(dict.fromkeys(k for row in table.values() for k in row))
    lines = [
        "As measured by mcm (the metrics file records each number's protocol):",
        "",
        "| | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for label, row in table.items():
        lines.append(f"| {label} | " + " | ".join(_format(row.get(c)) for c in columns) + " |")
    return lines


def _sampling_text(student: dict) -> list[str]:
    sampling, scheduler = student["sampling"], student["scheduler"]
    if student["family"] == "wan":
        how = (
            f"`UniPCMultistepScheduler` on the teacher's flow sigmas (shift "
            f"{scheduler['flow_shift']}), order 1, corrector off: a deterministic Euler step"
        )
        grid = "sigmas"
    else:
        how = (
            f"`LCMScheduler` (timestep_scaling {scheduler['timestep_scaling']}, "
            f"original_inference_steps {scheduler['original_inference_steps']}) on the "
            "teacher's betas"
        )
        grid = "timesteps"
    lines = [
        f"- Steps: {', '.join(str(n) for n in sampling['recommended_steps'])} "
        f"(default {sampling['num_inference_steps']}); one network evaluation per step.",
        f"- Guidance: `guidance_scale={float(sampling['guidance_scale'])}` (classifier-free "
        "guidance is distilled in; a higher value runs CFG on top of it).",
        f"- Frames: {sampling['num_frames']} at {sampling['fps']} fps"
        + (
            f"; {sampling['height']}x{sampling['width']} px, max_sequence_length "
            f"{sampling['max_sequence_length']}"
            if "height" in sampling
            else ""
        )
        + ".",
        f"- Scheduler: {how}; `merged/scheduler` stores it.",
        "",
        f"| steps | {grid} |",
        "|---|---|",
    ]
    for n, values in student.get("timesteps", {}).items():
        shown = ", ".join(_format(v) if isinstance(v, float) else str(v) for v in values)
        lines.append(f"| {n} | {shown} |")
    return lines


def _licence_text(student: dict) -> list[str]:
    licence = student.get("license") or {}
    teacher = _teacher_name(student["teacher"])
    if licence.get("license"):
        text = (
            f"The weights are derived from {teacher} and carry its licence, "
            f"`{licence['license']}` (from {licence.get('source')})."
        )
        if licence.get("license_link"):
            text += f" Terms: {licence['license_link']}."
    else:
        text = (
            f"Not known to mcm: the weights are derived from {teacher}, so they follow its "
            "licence. Set `license` in the front matter above (and `license_name` / "
            "`license_link` when it is `other`) to the teacher's licence before uploading."
        )
    if student.get("motion_adapter"):
        text += " The motion adapter's licence applies as well."
    return [text]


def model_card(student: dict, scope: Literal["export", "merged"] = "export") -> str:
    """The README.md of an export (``scope="export"``) or of its ``merged/`` folder.

    Args:
        student: the contents of ``mcm_student.json``.
    """
    family = student["family"]
    title = {"lcm": "LCM student", "mcm": "MCM student"}.get(
        method_name(student), "Consistency-distilled student"
    )
    teacher = _teacher_name(student["teacher"])
    steps = "/".join(str(n) for n in student["sampling"]["recommended_steps"])
    out = [
        front_matter(student, scope),
        f"# {title} of {_teacher_title(student['teacher'])}",
        "",
        f"A {steps}-step text-to-video student of {teacher}, distilled with mcm (Motion "
        "Consistency Model distillation for diffusers video models; the method: "
        "[arXiv 2406.06890](https://arxiv.org/abs/2406.06890))."
        + (" This folder is the merged pipeline of an `mcm export`." if scope == "merged" else ""),
        "",
        "## Base model",
        "",
        f"{teacher[0].upper()}{teacher[1:]}: {FAMILY_NAMES[family]}, as a stock "
        f"`{student['pipeline_class']}`.",
    ]
    if student["teacher"] in WORLD_NAMES:
        out.append(
            "A small text-to-video model of mcm's built-in world (coloured shapes moving in "
            "one direction, rendered procedurally), trained by mcm's own `mcm world build` and "
            "shipped inside the `mcm` package."
        )
    if student.get("motion_adapter"):
        out.append(f"Motion adapter: {_teacher_name(student['motion_adapter'])}.")
    if scope == "export" and is_local_reference(student["teacher"]):
        out.append(
            f"`mcm_student.json` names it `{student['teacher']}`, relative to this folder; "
            "where that folder is absent, point the LoRA code below at your copy."
        )
    out += ["", "## Method", "", *_method_text(student), "", "## Sampling", ""]
    out += _sampling_text(student)
    out += ["", "## Training data", "", *_data_text(student), "", "## Metrics", ""]
    out += _metrics_text(student)
    out += ["", "## Use with diffusers", ""]
    if scope == "merged":
        out += [
            "This folder is a stock diffusers pipeline with the student's scheduler: no mcm "
            "needed.",
            "",
            "```python",
            merged_code(student, "merged"),
            "```",
        ]
    else:
        out += [
            "`merged/` is a stock diffusers pipeline (the LoRA fused, the student's scheduler "
            "set): no mcm needed.",
            "",
            "```python",
            merged_code(student, "export"),
            "```",
        ]
        if "lora" in student:
            route = {
                "modelscope": "The LoRA on the teacher (ModelScope: with mcm's loader):",
                "animatediff": "The LoRA on the teacher, stock diffusers. Switch the "
                "pipeline to the student's `LCMScheduler` with the settings below: the "
                "AnimateDiff scheduler the teacher ships samples other videos.",
                "wan": "The LoRA on the teacher, stock diffusers, with the student's scheduler "
                "from `merged/`:",
            }[family]
            out += ["", route, "", "```python", lora_code(student), "```"]
        out += ["", "## Files", ""]
        out += [
            "- `merged/`: the pipeline for `DiffusionPipeline.from_pretrained`.",
            *(
                [f"- `{student['lora']['file']}`: the LoRA in diffusers format."]
                if "lora" in student
                else []
            ),
            "- `mcm_student.json`: the sampling settings, timestep grids and teacher reference.",
            *(
                f"- `{path}`: auxiliary module `{name}`."
                for name, path in student.get("aux_modules", {}).items()
            ),
        ]
    out += ["", "## Licence", "", *_licence_text(student), ""]
    return "\n".join(out)


def write_model_cards(
    export_dir: str | Path,
    training_config: Any = None,
    metrics: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``README.md`` into an export folder and its ``merged/`` folder, from its
    ``mcm_student.json``; a given training config or metrics are first recorded there
    (so a later call keeps them).

    Args:
        training_config: a ``TrainConfig`` or its dict (:func:`training_summary`).
        metrics: a metrics.json's contents (:func:`metrics_table`).

    Returns:
        The cards written.
    """
    export_dir = Path(export_dir)
    card_path = export_dir / "mcm_student.json"
    if not card_path.is_file():
        raise FileNotFoundError(
            f"No mcm_student.json in {export_dir}: pass a folder written by `mcm export`."
        )
    student = json.loads(card_path.read_text())
    if training_config is not None or metrics is not None:
        if training_config is not None:
            student["training"] = training_summary(training_config)
        if metrics is not None:
            student["metrics"] = metrics_table(metrics)
        card_path.write_text(json.dumps(student, indent=2) + "\n")
    written = [export_dir / CARD_NAME]
    written[0].write_text(model_card(student, "export"))
    if (export_dir / "merged" / "model_index.json").is_file():
        written.append(export_dir / "merged" / CARD_NAME)
        written[1].write_text(model_card(student, "merged"))
    return written
