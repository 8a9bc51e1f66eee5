"""Config loading: YAML + overrides, and errors that name the key and the fix."""

from pathlib import Path

import pytest

from mcm.training.config import TrainConfig, load_train_config
from mcm.training.config_io import ConfigError, parse_override, save_config

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


@pytest.mark.parametrize("name", ["world.yaml", "world-lcm.yaml"])
def test_world_configs_guide_like_the_demo(name):
    # The shipped world teacher loses shape accuracy at high guidance (docs/WORLD.md):
    # `mcm train` on the world configs must draw w from the demo's range, not the default.
    from mcm.demo import demo_config

    cfg = load_train_config(CONFIGS / name)
    demo = demo_config("mcm", Path("unused"), 10)
    assert (cfg.method.w_min, cfg.method.w_max) == (demo.method.w_min, demo.method.w_max)


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
