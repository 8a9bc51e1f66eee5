"""Where an exported student came from, recorded without local paths (what
``mcm_student.json`` holds for its model card, :mod:`mcm.models.model_card`).

* The teacher (and an AnimateDiff motion adapter) by a *portable reference*: a hub id as
  is (a folder of the hub cache is turned back into its id), ``world`` / ``world-wan`` for
  the teachers that ship with mcm, any other local folder as a path relative to the
  export folder, always starting with ``./`` or ``../`` so that it is never mistaken for a
  hub id. :func:`resolve_reference` turns a reference back into what ``from_pretrained``
  loads.
* The licence the student inherits (:func:`teacher_licence`), what the training config
  says about the method and data (:func:`training_summary`; data sources by name, never a
  local path) and the metrics (:func:`metrics_table`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from huggingface_hub import try_to_load_from_cache
from huggingface_hub.repocard import metadata_load

from mcm.errors import InputError
from mcm.paths import WORLD_TEACHER, WORLD_WAN_TEACHER, resolve_teacher

CARD_NAME = "README.md"
WORLD_NAMES = {"world": WORLD_TEACHER, "world-wan": WORLD_WAN_TEACHER}
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
