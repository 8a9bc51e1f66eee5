"""LoRA weights as data: state dicts, files and the checks that they fit a model.

* :func:`lora_state_dict` / :func:`load_lora_state_dict` - the attached LoRA's weights,
  keyed by UNet module names, e.g. ``down_blocks.0.attentions.0.proj_in.lora_A.weight``
  (FSDP-sharded weights are gathered / split).
* :func:`save_lora` / :func:`read_lora` - our safetensors file (weights + family, rank,
  alpha) and diffusers' ``pytorch_lora_weights.safetensors``.
* :func:`check_lora_family` / :func:`attach_lora_from_state_dict` - a LoRA read from a file
  onto a model: made for this family, attached on exactly its modules.

Attaching, enabling and removing the adapters themselves is :mod:`mcm.models.lora`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor

from mcm.errors import InputError
from mcm.models.lora import ADAPTER, attach_lora, named_lora_parameters, unet_of

LORA_FORMAT = "mcm-lora"


def _public_key(name: str) -> str:
    return name.replace(f".{ADAPTER}.", ".")


def lora_state_dict(denoiser: nn.Module) -> dict[str, Tensor]:
    """LoRA weights keyed ``<module>.lora_A.weight`` / ``<module>.lora_B.weight`` (copies).

    Weights sharded by FSDP (``DTensor``) are gathered whole: then every rank must call it.
    """
    return {_public_key(n): _full(p.detach()).clone() for n, p in named_lora_parameters(denoiser)}


def _full(t: Tensor) -> Tensor:
    return t.full_tensor() if isinstance(t, DTensor) else t


def load_lora_state_dict(denoiser: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Copy LoRA weights (as given by :func:`lora_state_dict`) into an attached LoRA.

    FSDP-sharded weights (``DTensor``) take their own rank's part of the full weights.

    Raises:
        ValueError: keys or shapes do not match (wrong family, rank or target modules).
    """
    params = {_public_key(n): p for n, p in named_lora_parameters(denoiser)}
    missing = sorted(set(params) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(params))
    if missing or unexpected:
        raise InputError(
            f"LoRA weights do not fit this {getattr(denoiser, 'family', '')} UNet: "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]}). Was it trained for the other model family or with "
            "other target modules?"
        )
    with torch.no_grad():
        for k, p in params.items():
            if p.shape != state_dict[k].shape:
                raise InputError(
                    f"LoRA weight {k} has shape {tuple(state_dict[k].shape)}, the model "
                    f"expects {tuple(p.shape)} (different rank?)."
                )
            value = state_dict[k].to(p.device, p.dtype)
            if isinstance(p, DTensor):  # every rank holds the full tensor: no communication
                value = distribute_tensor(value, p.device_mesh, p.placements, src_data_rank=None)
            p.copy_(value)


def lora_rank(state_dict: dict[str, Tensor]) -> int:
    ranks = {v.shape[0] for k, v in state_dict.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise InputError(f"Expected one LoRA rank in the weights; found {sorted(ranks)}.")
    return ranks.pop()


def save_lora(
    denoiser: nn.Module, path: str | Path, state_dict: dict[str, Tensor] | None = None
) -> Path:
    """Write the LoRA weights + their settings (family, rank, alpha) as safetensors.

    This is the file ``mcm export --lora`` reads back (see :func:`read_lora`).
    ``state_dict``: the weights to write (default :func:`lora_state_dict`); under FSDP all
    ranks gather them and one rank writes.
    """
    config = getattr(denoiser, "lora_config", None)
    if config is None:
        raise ValueError("The denoiser has no LoRA; call attach_lora first.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = state_dict if state_dict is not None else lora_state_dict(denoiser)
    tensors = {k: v.float().cpu().contiguous() for k, v in weights.items()}
    meta = {
        "format": "pt",
        "mcm_format": LORA_FORMAT,
        "mcm_family": denoiser.family,
        "lora_rank": str(config["rank"]),
        "lora_alpha": str(config["alpha"]),
        "lora_target_modules": json.dumps(config["target_modules"]),
    }
    save_file(tensors, str(path), metadata=meta)
    return path


def read_lora(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a LoRA file: ours (:func:`save_lora`) or a diffusers ``pytorch_lora_weights``.

    ``path`` may be a ``.safetensors`` file or a directory holding
    ``pytorch_lora_weights.safetensors``, an ``mcm export`` folder (``lora/``) or a
    training checkpoint folder (``lora.safetensors``). Returns (weights keyed
    ``<module>.lora_{A,B}.weight``, metadata). Diffusers files get their ``unet.`` prefix
    removed. Without recorded alpha, alpha = rank (scale 1) and the metadata gets
    ``lora_alpha_assumed = "true"``.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (
            path / "pytorch_lora_weights.safetensors",
            path / "lora" / "pytorch_lora_weights.safetensors",
            path / "lora.safetensors",  # a training checkpoint folder
        ):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise FileNotFoundError(
                f"No pytorch_lora_weights.safetensors or lora.safetensors in {path}; pass the "
                "LoRA file itself."
            )
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file not found: {path}.")
    if path.suffix != ".safetensors":
        raise InputError(f"LoRA weights must be a .safetensors file; got {path.name}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no iter)
    except SafetensorError as e:
        raise InputError(f"{path} is not a readable safetensors file ({e}).") from e
    lora = {}
    for k, v in tensors.items():
        if ".lora_A." not in k and ".lora_B." not in k:
            continue
        if k.startswith("text_encoder."):
            raise InputError(
                f"{path.name} holds text-encoder LoRA weights ({k}); only UNet LoRA is supported."
            )
        lora[k.removeprefix("unet.")] = v
    if not lora:
        raise InputError(f"{path} holds no LoRA weights (no '.lora_A.' / '.lora_B.' keys).")
    if "lora_rank" not in meta:
        meta["lora_rank"] = str(lora_rank(lora))
    if "lora_alpha" not in meta:
        meta["lora_alpha"] = meta["lora_rank"]
        meta["lora_alpha_assumed"] = "true"
    return lora, meta


def guess_family(state_dict: dict[str, Tensor]) -> str | None:
    """The model family a LoRA was made for, from its module names (None if unclear)."""
    keys = " ".join(state_dict)
    if "motion_modules" in keys:
        return "animatediff"
    if "temp_attentions" in keys or "transformer_in" in keys:
        return "modelscope"
    return None


def check_lora_family(meta: dict[str, str], state_dict: dict[str, Tensor], family: str) -> None:
    """Raise a clear ValueError when a LoRA was made for another model family."""
    made_for = meta.get("mcm_family") or guess_family(state_dict)
    if made_for is not None and made_for != family:
        raise InputError(
            f"This LoRA was made for a {made_for} UNet but the model is {family}; load it into "
            f"a {made_for} pipeline (or export it with the teacher it was trained on)."
        )


def attach_lora_from_state_dict(
    denoiser: nn.Module, state_dict: dict[str, Tensor], alpha: float | None = None
) -> None:
    """Attach LoRA on exactly the modules named in ``state_dict`` and load its weights.

    Raises:
        ValueError: a named module does not exist in the UNet (wrong family or model).
    """
    unet = unet_of(denoiser)
    names = sorted({k.split(".lora_")[0] for k in state_dict})
    modules = dict(unet.named_modules())
    absent = [n for n in names if n not in modules]
    if absent:
        raise InputError(
            f"{len(absent)} of {len(names)} LoRA target modules are not in this "
            f"{getattr(denoiser, 'family', '')} UNet (e.g. {absent[:2]}): the LoRA was made "
            "for a different model."
        )
    rank = lora_rank(state_dict)
    attach_lora(denoiser, rank=rank, alpha=alpha or rank, target_modules=names)
    load_lora_state_dict(denoiser, state_dict)
