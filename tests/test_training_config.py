"""Config loading: YAML + overrides, and errors that name the key and the fix."""

from pathlib import Path

import pytest

from mcm.training.config import (
    MethodConfig,
    TrainConfig,
    check_resume_config,
    checkpoint_config_differences,
    load_train_config,
)
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
        (["train.lrr=1"], "train.lrr: unknown key. Did you mean 'train.lr'?"),
        (["trainn.lr=1"], "trainn: unknown key. Did you mean 'train'?"),
        (["train.max_steps=ten"], "train.max_steps: must be an integer, got ten"),
        (["train.max_steps=0"], "train.max_steps: must be >= 1, got 0"),
        (["method.motion=optical_flow"], "method.motion: must be one of 'raw', 'diff'"),
        (["discriminator.enabled=false"], "discriminator.enabled=true"),
        (["train.mixed_precision=fp8"], "train.mixed_precision: must be one of 'no', 'fp16'"),
        (["method.distance=l1"], "method.distance: must be one of 'huber' or 'l2', got l1"),
        (["train.validation_steps=[1,99]"], "train.validation_steps: [99] exceed"),
        (["train.validation_steps=[0]"], "train.validation_steps[0]: must be >= 1, got 0"),
        (["data.video.source="], "data.video.source is empty"),
        (["data.images.source="], "data.images.source is empty"),
        (["discriminator.caption_drop=moving ("], "discriminator.caption_drop: not a regular"),
        (["discriminator.augment=blur"], "discriminator.augment: Unknown augmentation(s)"),
        (["discriminator.latent_t_min=600"], "latent_t_min (600) must be <= latent_t_max"),
        (["method.w_min=20"], "method: w_min (20.0) must be <= w_max (3.0)"),
        (["method.lambda_real=1.5"], "method.lambda_real: must be <= 1.0, got 1.5"),
        (["train.lr=nan"], "train.lr: must be a finite number, got nan"),
        (["train.betas=[0.9]"], "train.betas: must have at least 2 items, got [0.9]"),
        (["train.progress=maybe"], "train.progress: must be true or false, got maybe"),
        (["model.lora_rank=0"], "model.lora_rank: must be >= 1, got 0"),
        (["data.video.resolution=[32, 0]"], "data.video.resolution[1]: must be >= 1, got 0"),
        (["data.video.resolution=big"], "data.video.resolution: must be an integer, got big"),
        (["data.video.crop_scale=[0.9, 0.5]"], "crop_scale: need low <= high"),
        (["train=5"], "train: must be a section (a mapping of keys), got 5"),
        (["train.lr.x=1"], "train.lr is a value, not a section"),
        (["train.lr"], "section.key=value"),
    ],
)
def test_bad_values_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as e:
        load_train_config(CONFIGS / "world.yaml", overrides)
    assert fragment in str(e.value)


def test_every_problem_is_reported_at_once():
    # The list: each was accepted, or failed late (after the output folder was
    # written, or as a ZeroDivisionError mid-run).
    bad = {
        "train.log_every=0": "train.log_every: must be >= 1, got 0",
        "train.lr=-1": "train.lr: must be > 0.0, got -1",
        "data.video.num_frames=0": "data.video.num_frames: must be >= 1, got 0",
        "train.checkpoint_every=-3": "train.checkpoint_every: must be >= 0, got -3",
        "train.keep_checkpoints=-1": "train.keep_checkpoints: must be >= 1, got -1",
        "method.w_min=-5": "method.w_min: must be >= 0.0, got -5",
    }
    with pytest.raises(ConfigError) as e:
        load_train_config(CONFIGS / "world.yaml", list(bad))
    assert sorted(str(e.value).splitlines()) == sorted(bad.values())


def test_scalars_are_typed_by_the_schema_not_by_yaml(tmp_path):
    # YAML 1.1 reads `no` as false and 1e-5 as a string; the schema decides instead.
    cfg = load_train_config(CONFIGS / "world.yaml", ["train.mixed_precision=no"])
    assert cfg.train.mixed_precision == "no"
    path = tmp_path / "c.yaml"
    path.write_text(
        "data:\n  video:\n    source: clips\n    caption_column: 'null'\n"
        "    captions_file: null\n"
        "train:\n  mixed_precision: no\n  lr: 1e-5\n  progress: no\n  max_seconds: ~\n"
        "  validation_prompts: [yes, 1.0]\n"
    )
    cfg = load_train_config(path)
    assert cfg.train.mixed_precision == "no"
    assert cfg.train.lr == 1e-5 and cfg.train.progress is False and cfg.train.max_seconds is None
    assert cfg.train.validation_prompts == ["yes", "1.0"]  # strings stay as written
    assert cfg.data.video.caption_column == "null" and cfg.data.video.captions_file is None


def test_yaml_errors_name_the_file_or_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train.lr: '\[' is not valid YAML"):
        load_train_config(CONFIGS / "world.yaml", ["train.lr=["])
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: [1\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML .* line 3"):
        load_train_config(path)
    path.write_text("train:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(ConfigError, match="the key 'lr' appears twice"):
        load_train_config(path)
    path.write_text("- train\n")
    with pytest.raises(ConfigError, match="top level of a config must be a mapping"):
        load_train_config(path)


def test_configs_are_dataclasses_validated_when_made():
    import dataclasses

    cfg = load_train_config(CONFIGS / "world.yaml")
    assert dataclasses.is_dataclass(cfg) and "train" in {f.name for f in dataclasses.fields(cfg)}
    cfg.method.target = "ema"  # plain attribute assignment
    assert dataclasses.asdict(cfg)["method"]["target"] == "ema"
    with pytest.raises(ValueError, match="log_every"):
        dataclasses.replace(cfg.train, log_every=0)
    with pytest.raises(ValueError, match="w_min"):
        MethodConfig(w_min=3.0, w_max=1.0)


def _checkpoint(tmp_path, overrides):
    ckpt = tmp_path / "checkpoint-10"
    ckpt.mkdir()
    save_config(load_train_config(CONFIGS / "world.yaml", overrides), ckpt / "config.yaml")
    return ckpt


def test_resume_refuses_a_config_that_changes_the_checkpoint(tmp_path):
    ckpt = _checkpoint(tmp_path, ["train.seed=3"])
    same = load_train_config(CONFIGS / "world.yaml", ["train.lr=1e-3", "train.max_steps=500"])
    assert checkpoint_config_differences(same, ckpt) == []  # what it holds is unchanged
    check_resume_config(same, ckpt)
    changed = load_train_config(
        CONFIGS / "world.yaml", ["model.lora_rank=8", "method.motion=diff", "method.target=ema"]
    )
    with pytest.raises(ConfigError) as e:
        check_resume_config(changed, ckpt)
    message = str(e.value)
    assert f"model.lora_rank: {same.model.lora_rank} in the checkpoint, now 8" in message
    assert "method.motion: 'learnable' in the checkpoint, now 'diff'" in message
    assert "method.target" in message and "train.seed" not in message
    # a DINOv2 setting means nothing to the latent discriminator of both
    assert (
        checkpoint_config_differences(
            load_train_config(CONFIGS / "world.yaml", ["discriminator.taps=[1]"]), ckpt
        )
        == []
    )
    # a checkpoint without config.yaml is not compared
    (ckpt / "config.yaml").unlink()
    assert checkpoint_config_differences(changed, ckpt) == []


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
