"""The shipped FSDP accelerate configs and the choice of FSDP units (no processes needed;
the sharded training itself is tested with two real processes in test_training_recipe.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from accelerate.utils import FullyShardedDataParallelPlugin

from mcm.models.tiny import tiny_unet3d, tiny_unet_motion, tiny_wan_transformer
from mcm.training.sharding import wrapped_blocks

ROOT = Path(__file__).resolve().parents[1]


def _blocks(unet) -> set[int]:
    if not hasattr(unet, "down_blocks"):  # Wan's transformer
        return {id(b) for b in unet.blocks}
    return {id(b) for b in [*unet.down_blocks, unet.mid_block, *unet.up_blocks]}


def _plugin_from_config(name: str, monkeypatch) -> FullyShardedDataParallelPlugin:
    """The plugin a process started by `accelerate launch --config_file <name>` builds: the
    launcher turns the YAML into FSDP_* variables (its own, private, functions)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    path = ROOT / "configs" / "accelerate" / name
    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, _, _ = _validate_launch_command(args)
    assert args.use_fsdp, f"{name} does not select FSDP"
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith("FSDP_") or key == "ACCELERATE_USE_FSDP":
            monkeypatch.setenv(key, value)
    return FullyShardedDataParallelPlugin()


@pytest.mark.parametrize("name", ["fsdp.yaml", "fsdp_cpu.yaml"])
def test_shipped_configs_shard_every_block_of_both_families(name, monkeypatch):
    plugin = _plugin_from_config(name, monkeypatch)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    for unet in (tiny_unet3d(), tiny_unet_motion()[0], tiny_wan_transformer()):
        units = wrapped_blocks(unet, plugin)
        assert {id(m) for m in units} == _blocks(unet), type(unet).__name__


def test_default_units_are_the_blocks_and_unknown_classes_are_an_error():
    unet = tiny_unet3d()
    default = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="no_wrap")
    assert {id(m) for m in wrapped_blocks(unet, default)} == _blocks(unet)
    wan = tiny_wan_transformer()
    assert {id(m) for m in wrapped_blocks(wan, default)} == _blocks(wan)
    wrong = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        transformer_cls_names_to_wrap=["LlamaDecoderLayer"],
    )
    with pytest.raises(ValueError, match="CrossAttnDownBlock3D"):
        wrapped_blocks(unet, wrong)


def test_size_based_units_are_innermost_first():
    unet = tiny_unet3d()
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="size_based_wrap", min_num_params=100_000
    )
    units = wrapped_blocks(unet, plugin)
    names = {id(m): n for n, m in unet.named_modules()}
    depths = [names[id(m)].count(".") for m in units]
    assert units and unet not in units and depths == sorted(depths, reverse=True)
    assert all(sum(p.numel() for p in m.parameters()) > 100_000 for m in units)
