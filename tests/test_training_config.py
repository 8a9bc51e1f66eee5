"""Config loading: YAML + overrides, and errors that name the key and the fix."""

from pathlib import Path

import pytest

from mcm.training.config import TrainConfig, load_train_config
from mcm.training.config_io import ConfigError, parse_override, save_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(
    "name", ["world.yaml", "world-lcm.yaml", "modelscope.yaml", "animatediff.yaml"]
)
def test_shipped_configs_load(name):
    cfg = load_train_config(CONFIGS / name)
    assert isinstance(cfg, TrainConfig)
    assert cfg.data.video.source


def test_world_lcm_is_plain_lcm():
    cfg = load_train_config(CONFIGS / "world-lcm.yaml")
    assert cfg.method.motion == "raw"
    assert not cfg.discriminator.enabled
    assert not cfg.method.mixed_trajectories


def test_world_configs_train_the_demos_students(tmp_path):
    # One config source: `mcm train --config configs/world.yaml` (the repository's file, read
    # by the trainer's loader) resolves to exactly the config `mcm demo` trains at its
    # defaults (the packaged recipe, read through importlib.resources, with the demo's
    # settings applied), and configs/world-lcm.yaml to the demo's LCM baseline.
    from mcm.cli import build_parser
    from mcm.demo import MCM_STEPS, demo_configs

    args = build_parser(["demo"]).parse_args(["demo", "--out", str(tmp_path / "demo")])
    mcm_steps = MCM_STEPS if args.mcm_steps is None else args.mcm_steps  # as `mcm demo` does
    demo = demo_configs(args.out, mcm_steps, args.lcm_steps, args.images)
    for kind, name in (("mcm", "world.yaml"), ("lcm", "world-lcm.yaml")):
        cfg = load_train_config(CONFIGS / name, [f"output_dir={demo[kind].output_dir}"])
        assert to_dict(cfg) == to_dict(demo[kind]), name
    # ... and they are what the demo's docs say it trains (docs/RESULTS.md, "The demo")
    mcm, lcm = demo["mcm"], demo["lcm"]
    assert (mcm.train.max_steps, mcm.discriminator.warmup_steps, lcm.train.max_steps) == (
        250,
        150,
        100,
    )
    assert (mcm.train.lr, mcm.train.lr_schedule, lcm.train.lr) == (1e-4, "constant", 5e-4)
    assert mcm.train.batch_size == lcm.train.batch_size == 4
    # The world teacher loses shape accuracy at high guidance (docs/WORLD.md, "Quality"):
    # both draw w from [1.5, 3], not the default range.
    assert (
        (mcm.method.w_min, mcm.method.w_max) == (lcm.method.w_min, lcm.method.w_max) == (1.5, 3.0)
    )


def test_the_repositorys_world_configs_are_the_packaged_files():
    import importlib.resources

    packaged = importlib.resources.files("mcm").joinpath("configs")
    for name in ("world.yaml", "world-lcm.yaml"):
        assert (CONFIGS / name).read_text() == packaged.joinpath(name).read_text()
        # a relative symlink: the same file in a fresh clone wherever it lies
        assert (CONFIGS / name).is_symlink() and not (CONFIGS / name).readlink().is_absolute()


def test_overrides_are_typed():
    cfg = load_train_config(
        CONFIGS / "world.yaml",
        [
            "train.lr=1e-5",
            "train.max_steps=20",
            "method.motion=diff",
            "train.validation_steps=[1,2]",
        ],
    )
    assert cfg.train.lr == 1e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 20
    assert cfg.method.motion == "diff"
    assert cfg.train.validation_steps == [1, 2]


def test_roundtrip(tmp_path):
    cfg = load_train_config(CONFIGS / "world.yaml", ["train.seed=7"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_train_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["train.lrr=1"], "'train.lrr'"),
        (["train.max_steps=ten"], "train.max_steps: expected int"),
        (["train.max_steps=0"], "train.max_steps must be >= 1"),
        (["method.motion=optical_flow"], "method.motion"),
        (["discriminator.enabled=false"], "discriminator.enabled=true"),
        (["train.mixed_precision=fp8"], "train.mixed_precision"),
        (["method.distance=l1"], "distance"),
        (["train.validation_steps=[1,99]"], "train.validation_steps"),
        (["data.video.source="], "data.video.source is empty"),
        (["discriminator.caption_drop=moving ("], "discriminator.caption_drop"),
    ],
)
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_train_config(CONFIGS / "world.yaml", overrides)
    assert fragment in str(e.value)


def test_mixing_without_discriminator_is_fine_when_turned_off():
    cfg = load_train_config(
        CONFIGS / "world.yaml", ["discriminator.enabled=false", "method.mixed_trajectories=false"]
    )
    assert not cfg.discriminator.enabled


def test_missing_file_and_bad_override():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_train_config("nope.yaml")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("train.lr")
