"""LoRA on the student UNet (peft), the teacher as the same UNet with adapters disabled.

* :func:`attach_lora` injects LoRA layers (the reference MCM target modules by default),
  freezes everything else and keeps the LoRA weights in fp32.
* :func:`disable_adapters` - inside it the denoiser *is* the teacher (one UNet in memory).
* :func:`fuse_lora` / :func:`remove_lora` - fold LoRA into the base weights, or drop it.

Reading and writing the LoRA weights (state dicts, files) is :mod:`mcm.models.lora_weights`.

Works on ``UNet3DConditionModel`` too, which has no diffusers PEFT mixin: we use peft's
``inject_adapter_in_model`` directly for both families.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from collections.abc import Iterator

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

ADAPTER = "default"

# Module-name suffixes the reference MCM trains: attention q/k/v/out, transformer
# proj_in/out, feed-forward, resnet convs + shortcut, down/upsampler convs, time_emb_proj.
DEFAULT_TARGET_MODULES = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)
# Wan2.1's transformer: self- and cross-attention q/k/v/out and the feed-forward (the
# modules of the public Wan LoRAs; stock WanPipeline.load_lora_weights loads them).
FAMILY_TARGET_MODULES = {
    "wan": ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"),
}
# Never targeted, per family (regexes searched in the module name):
# * ModelScope: the temporal 3-D convs (as the reference).
# * AnimateDiff: the motion modules' proj_in/proj_out. diffusers 0.42 calls them as
#   ``proj_in(input=x)``, a keyword peft's LoRA layers do not accept, so a LoRA there could
#   not run in a stock pipeline. The motion modules' attention and feed-forward layers
#   are targeted.
EXCLUDED_MODULES = {
    "modelscope": (r"(^|\.)temp_convs\.",),
    "animatediff": (r"(^|\.)motion_modules\.\d+\.proj_(in|out)$",),
}
_LORA_TYPES = (nn.Linear, nn.Conv2d)


def lora_target_modules(
    unet: nn.Module, family: str, target_modules: tuple[str, ...] | list[str] | None = None
) -> list[str]:
    """Full names of the Linear/Conv2d modules that get LoRA.

    A module is a target if its name equals a suffix in ``target_modules`` (default
    :data:`DEFAULT_TARGET_MODULES`; Wan: :data:`FAMILY_TARGET_MODULES`) or ends with "." + suffix, and it is not excluded for
    ``family`` (:data:`EXCLUDED_MODULES`). AnimateDiff's motion modules match through their attention,
    projection and feed-forward layers.
    """
    suffixes = tuple(target_modules or FAMILY_TARGET_MODULES.get(family, DEFAULT_TARGET_MODULES))
    excluded = [re.compile(p) for p in EXCLUDED_MODULES.get(family, ())]
    names = []
    for name, module in unet.named_modules():
        if not isinstance(module, _LORA_TYPES) or any(p.search(name) for p in excluded):
            continue
        if any(name == s or name.endswith("." + s) for s in suffixes):
            names.append(name)
    return names


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


def unet_of(model: nn.Module) -> nn.Module:
    """The UNet of a denoiser (a bare UNet is its own)."""
    return getattr(model, "unet", model)


def attach_lora(
    denoiser: nn.Module,
    rank: int = 64,
    alpha: float = 64,
    dropout: float = 0.0,
    target_modules: tuple[str, ...] | list[str] | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Inject LoRA (scale alpha / rank) into the denoiser's UNet; only LoRA stays trainable.

    The LoRA B matrices start at zero, so the student starts equal to the teacher. The A
    matrices are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (peft's default
    distribution) with ``generator`` (default: a generator seeded with 0), never from the
    global RNG. The settings are recorded in ``denoiser.lora_config``.

    Raises:
        ValueError: bad rank/alpha/dropout, LoRA already attached, or no module matched.
    """
    if rank < 1 or alpha <= 0 or not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"Need rank >= 1, alpha > 0, 0 <= dropout < 1; got rank={rank}, alpha={alpha}, "
            f"dropout={dropout}."
        )
    unet = unet_of(denoiser)
    if has_lora(unet):
        raise ValueError("This UNet already has LoRA layers; attach_lora must be called once.")
    family = getattr(denoiser, "family", "")
    names = lora_target_modules(unet, family, target_modules)
    if not names:
        raise ValueError(
            f"No Linear/Conv2d module of the UNet matches target_modules={target_modules}; "
            "use module-name suffixes such as 'to_q' or 'conv1'."
        )
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, init_lora_weights=True
    )
    unet.requires_grad_(False)
    unet.__dict__.pop("_mcm_module_cache", None)
    inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    for name, p in named_lora_parameters(denoiser):
        p.data = p.data.float()
        if ".lora_A." in name:
            bound = 1.0 / math.sqrt(p[0].numel())  # fan_in = in_features (* kernel size)
            draw = torch.rand(p.shape, generator=generator, dtype=torch.float32) * 2 - 1
            p.data.copy_(draw * bound)
        p.requires_grad_(True)
    denoiser.lora_config = {
        "rank": rank,
        "alpha": float(alpha),
        "dropout": dropout,
        "target_modules": names,
    }


def named_lora_parameters(denoiser: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(UNet parameter name, weight) of every LoRA A and B, in a fixed order."""
    return [(n, p) for n, p in unet_of(denoiser).named_parameters() if ".lora_" in n]


def lora_parameters(denoiser: nn.Module) -> list[nn.Parameter]:
    """The LoRA weights (A and B of every adapted layer), in a fixed order."""
    return [p for _, p in named_lora_parameters(denoiser)]


def _modules_and_tuner_layers(unet: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """All modules of the UNet and its LoRA layers, cached on the UNet.

    Walking the ~2k modules of a UNet costs milliseconds, and the distillation step enters
    :func:`disable_adapters` several times. The cache is keyed by the module count of the
    top level and the adapter names, and dropped whenever LoRA is attached or removed here.
    """
    key = (len(unet._modules), tuple(getattr(unet, "peft_config", None) or ()))
    cached = unet.__dict__.get("_mcm_module_cache")
    if cached is None or cached[0] != key:
        modules = list(unet.modules())
        cached = (key, modules, [m for m in modules if isinstance(m, BaseTunerLayer)])
        unet.__dict__["_mcm_module_cache"] = cached
    return cached[1], cached[2]


@contextlib.contextmanager
def disable_adapters(denoiser: nn.Module) -> Iterator[nn.Module]:
    """Inside this context the denoiser computes exactly the teacher (base weights only).

    The UNet is also put in eval mode for the duration (ModelScope's temporal convs have
    dropout 0.1, which would otherwise make the teacher random in train mode). On exit the
    adapter state, every module's train/eval mode and every LoRA weight's
    ``requires_grad`` are restored.
    """
    unet = unet_of(denoiser)
    modules, layers = _modules_and_tuner_layers(unet)
    was_disabled = [m.disable_adapters for m in layers]
    grads = [(p, p.requires_grad) for p in lora_parameters(denoiser)]
    modes = [m.training for m in modules]
    for m in layers:
        m.enable_adapters(False)
    for m in modules:  # unet.eval() without its recursion (nor Module.__setattr__'s checks)
        m.__dict__["training"] = False
    try:
        yield denoiser
    finally:
        for m, off in zip(layers, was_disabled):
            m.enable_adapters(not off)
        for p, g in grads:
            p.requires_grad_(g)
        for m, training in zip(modules, modes):
            m.__dict__["training"] = training


def _replace_with_base(unet: nn.Module, merge: bool) -> nn.Module:
    layers = [(n, m) for n, m in unet.named_modules() if isinstance(m, LoraLayer)]
    for name, layer in layers:
        if merge:
            layer.merge(adapter_names=list(layer.lora_A.keys()))
        parent_name, _, child = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        setattr(parent, child, layer.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded", "lora_config", "_mcm_module_cache"):
        if attr in unet.__dict__:
            delattr(unet, attr)
    return unet


def fuse_lora(unet: nn.Module) -> nn.Module:
    """Fold every LoRA delta into its base weight and remove the LoRA layers (in place)."""
    return _replace_with_base(unet, merge=True)


def remove_lora(unet: nn.Module) -> nn.Module:
    """Remove the LoRA layers without merging (in place): the teacher's UNet."""
    return _replace_with_base(unet, merge=False)


def copy_teacher(denoiser: nn.Module) -> nn.Module:
    """A separate frozen teacher: a deep copy of the denoiser without its LoRA layers.

    For configs that ask for a separate teacher (e.g. a teacher in a different dtype);
    the default is :func:`disable_adapters` on the student, which costs no memory.
    """
    teacher = copy.deepcopy(denoiser)
    remove_lora(teacher.unet)
    teacher.__dict__.pop("lora_config", None)
    return teacher.eval().requires_grad_(False)
