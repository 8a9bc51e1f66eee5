"""The model cards (README.md) of an exported student, rendered from its
``mcm_student.json`` alone (:func:`write_model_cards`).

``README.md`` (the export) and ``merged/README.md`` (the merged pipeline on its own, e.g.
uploaded as a repository by itself; diffusers ignores the file) carry YAML front matter a
hub reads (library, pipeline tag, base model when the teacher is a hub id, tags, licence),
then the base model, the method, how to sample, the training data and metrics when the
export was told them, runnable code for stock diffusers, and the licence. The code's
``folder = "path/to/this/folder"`` line (:data:`FOLDER_PLACEHOLDER`) is the one to edit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any, Literal

from huggingface_hub import ModelCardData

from mcm.models.provenance import (
    CARD_NAME,
    WORLD_NAMES,
    hub_id,
    is_local_reference,
    metrics_table,
    training_summary,
)

# The loading code's first line names the folder with this text; replace it to run the code.
FOLDER_PLACEHOLDER = "path/to/this/folder"
# Front matter when the teacher's licence is not known: a hub accepts it, a reader sees
# that it must be set before the upload.
LICENCE_PLACEHOLDER = {"license": "other", "license_name": "set-the-teacher-licence-before-upload"}
FAMILY_NAMES = {
    "modelscope": "ModelScope T2V (UNet3DConditionModel)",
    "animatediff": "AnimateDiff (UNetMotionModel)",
    "wan": "Wan 2.1 (WanTransformer3DModel, flow matching)",
}


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
