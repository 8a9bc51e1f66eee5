"""FSDP2 sharding of the student UNet, driven by accelerate's FSDP config.

With ``accelerate launch --config_file configs/accelerate/fsdp.yaml`` every down, mid and
up block of the UNet becomes one FSDP2 unit (``torch.distributed.fsdp.fully_shard``): its
frozen base weights and its LoRA weights are split across the ranks (``DTensor``,
``Shard(0)``), gathered for the block's forward and backward, and its LoRA gradients are
reduce-scattered (mean over ranks) during the backward. The UNet's top-level layers
(``conv_in``, the time embedding, ``transformer_in``, ``conv_out``: 0.5% of the full-size
ModelScope UNet's 1.41B weights) stay replicated, so the UNet's own forward is never an FSDP root: the teacher
(adapters disabled) and the latent discriminator's early-exit encoder pass run on the
sharded UNet unchanged. Gradients that are not ``DTensor``s (top-level LoRA, motion head,
discriminator heads) are all-reduced by the recipe exactly as without FSDP.

Why not ``accelerator.prepare(unet, optimizer)``: accelerate's FSDP2 path wants one model
and an optimizer holding only that model's parameters (ours also trains the motion head),
makes the UNet itself the FSDP root, and is never selected on CPU (accelerate turns a CPU
run into ``MULTI_CPU``). Reading the same plugin and calling ``fully_shard`` here gives one
code path on GPUs and on CPU (gloo), where it is tested.

Every function that turns a ``DTensor`` into a full tensor is a collective: all ranks must
call it, in the same order.
"""

from __future__ import annotations

import os

import torch
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch import Tensor, nn


def fsdp_plugin(accelerator):
    """The accelerate FSDP plugin of this run, or None when the run is not sharded.

    On GPUs accelerate sets ``distributed_type == FSDP``. On CPU it always reports
    ``MULTI_CPU``, so the plugin is rebuilt from the ``FSDP_*`` variables that
    ``accelerate launch`` exports for an FSDP config (``ACCELERATE_USE_FSDP=true``).
    """
    if accelerator.distributed_type == DistributedType.FSDP:
        plugin = accelerator.state.fsdp_plugin
    elif (
        accelerator.distributed_type == DistributedType.MULTI_CPU
        and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    ):
        plugin = FullyShardedDataParallelPlugin()
    else:
        return None
    if plugin.fsdp_version != 2:
        raise ValueError(
            "mcm shards the UNet with FSDP2 (fully_shard): set `fsdp_version: 2` in the "
            "accelerate config's fsdp_config (see configs/accelerate/fsdp.yaml)."
        )
    return plugin


def wrapped_blocks(unet: nn.Module, plugin) -> list[nn.Module]:
    """The UNet modules that become FSDP units, innermost first.

    TRANSFORMER_BASED_WRAP: modules whose class name is in
    ``fsdp_transformer_layer_cls_to_wrap`` (names absent from this UNet are ignored, so one
    config can list the blocks of every family); without names, or with NO_WRAP, the
    UNet's down/mid/up blocks (a transformer's: its ``blocks``). SIZE_BASED_WRAP: submodules with more than
    ``fsdp_min_num_params`` parameters. The UNet itself is never wrapped (see module doc).

    Raises:
        ValueError: no module of the UNet matches.
    """
    from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy

    names = getattr(plugin, "transformer_cls_names_to_wrap", None)
    policy = getattr(plugin.auto_wrap_policy, "func", plugin.auto_wrap_policy)
    named = [(n, m) for n, m in unet.named_modules() if n]
    if hasattr(unet, "down_blocks"):
        blocks = [b for b in [*unet.down_blocks, unet.mid_block, *unet.up_blocks] if b is not None]
    else:  # a transformer (Wan): its blocks
        blocks = list(unet.blocks)
    if policy is size_based_auto_wrap_policy:
        threshold = plugin.min_num_params or 0
        chosen = [(n, m) for n, m in named if sum(p.numel() for p in m.parameters()) > threshold]
    elif names:
        wanted = {s.strip() for s in names}
        chosen = [(n, m) for n, m in named if type(m).__name__ in wanted]
    else:
        chosen = [(n, m) for n, m in named if any(m is b for b in blocks)]
    if not chosen:
        present = sorted({type(b).__name__ for b in blocks})
        raise ValueError(
            f"No module of the {type(unet).__name__} matches the FSDP wrap policy "
            f"(fsdp_transformer_layer_cls_to_wrap={names}, min_num_params="
            f"{getattr(plugin, 'min_num_params', None)}); this UNet's blocks are {present}."
        )
    chosen.sort(key=lambda item: item[0].count("."), reverse=True)  # children before parents
    return [m for _, m in chosen]


def shard_unet(unet: nn.Module, plugin, device: torch.device) -> list[nn.Module]:
    """Apply ``fully_shard`` to the blocks chosen by :func:`wrapped_blocks` (in place) and
    return them (the FSDP units).

    Honours ``fsdp_reshard_after_forward`` (true: FULL_SHARD / ZeRO-3-like; false:
    SHARD_GRAD_OP / ZeRO-2-like) and ``fsdp_offload_params``. Precision is not FSDP's: the
    frozen weights keep ``model.frozen_dtype`` and the LoRA fp32, and
    ``train.mixed_precision`` autocasts, as without FSDP.

    FSDP2 warns that some diffusers blocks return views; the UNets never modify a block's
    output in place (FSDP and DDP gradients agree: tests/test_training_recipe.py).
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    world = torch.distributed.get_world_size()
    mesh = init_device_mesh(device.type, (world,))
    offload = plugin.cpu_offload if isinstance(plugin.cpu_offload, CPUOffloadPolicy) else None
    blocks = wrapped_blocks(unet, plugin)
    for block in blocks:
        fully_shard(
            block,
            mesh=mesh,
            reshard_after_forward=bool(plugin.reshard_after_forward),
            offload_policy=offload or OffloadPolicy(),
        )
    return blocks


def reshard(units: list[nn.Module]) -> None:
    """Free the gathered weights of every unit. Needed before the optimizer step: a unit
    kept gathered (reshard_after_forward false, or a forward without a backward, such as
    the discriminator's features) would otherwise run its next forward on stale weights."""
    for unit in units:
        unit.reshard()


def is_sharded(t: Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def full_tensor(t: Tensor) -> Tensor:
    """The whole tensor on every rank (a collective for a ``DTensor``); others as given."""
    return t.full_tensor() if is_sharded(t) else t


def shard_like(full: Tensor, param: Tensor) -> Tensor:
    """This rank's part of ``full`` laid out like the ``DTensor`` ``param`` (no
    communication: every rank holds the same ``full``)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(
        full.to(param.device, param.dtype), param.device_mesh, param.placements, src_data_rank=None
    )


def full_optimizer_state(state_dict: dict) -> dict:
    """An optimizer ``state_dict()`` with every ``DTensor`` replaced by its full tensor, so
    that one file resumes any number of ranks (a collective)."""
    state = {
        index: {k: full_tensor(v) if torch.is_tensor(v) else v for k, v in entry.items()}
        for index, entry in state_dict["state"].items()
    }
    return {**state_dict, "state": state}


def shard_optimizer_state(optimizer) -> None:
    """After ``load_state_dict`` of full tensors: lay each state tensor of a sharded
    parameter out like the parameter (AdamW's moments must match their DTensor param)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if not is_sharded(p):
                continue
            entry = optimizer.state.get(p, {})
            for k, v in entry.items():
                if torch.is_tensor(v) and not is_sharded(v) and v.shape == p.shape:
                    entry[k] = shard_like(v, p)


def clip_grad_norm_(params: list[Tensor], max_norm: float) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_`` over a mix of sharded (DTensor) and replicated
    gradients: the norm is that of the full gradient, the same on every rank."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    device = grads[0].device
    sq = torch.zeros((), dtype=torch.float32, device=device)
    for g in grads:
        if not is_sharded(g):
            sq += g.float().pow(2).sum().to(device)
    sharded = [g.to_local() for g in grads if is_sharded(g)]
    if sharded:  # one all-reduce of the local squared sums
        local = torch.stack([g.float().pow(2).sum() for g in sharded]).sum()
        torch.distributed.all_reduce(local)
        sq += local.to(device)
    total = sq.sqrt()
    coef = max_norm / (float(total) + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total


def check_fsdp_config(cfg) -> None:
    """Settings the sharded path does not support, with the fix."""
    if cfg.model.finetune == "full":
        raise ValueError(
            "model.finetune=full is not supported with FSDP yet (it shards LoRA students); "
            "use model.finetune=lora, or train on one process / with DDP."
        )
    if cfg.train.mixed_precision == "fp16":
        raise ValueError(
            "train.mixed_precision=fp16 with FSDP: the loss scaler would check only each "
            "rank's shard of the gradients for inf; use train.mixed_precision=bf16."
        )
    if cfg.method.target == "ema":
        raise ValueError(
            "method.target=ema is not supported with FSDP (the EMA swap would miss "
            "gathered blocks); use method.target=online or a DDP accelerate config."
        )
    if cfg.train.optimizer != "adamw":
        raise ValueError(
            f"train.optimizer={cfg.train.optimizer} with FSDP: use train.optimizer=adamw "
            "(the sharded LoRA weights are DTensors)."
        )
