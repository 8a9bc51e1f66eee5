"""The bad-input matrix: every command x its bad arguments and config values.

Each case runs ``mcm.cli.main`` in this process and must exit with status 2, print one or
two lines on stderr (a few for a config with several problems) that name the argument,
key or path, show no traceback, and write nothing to its output path.
"""

import pytest
import torch
from safetensors.torch import save_file

from mcm.cli import main
from mcm.training.config import check_train_inputs, load_train_config
from mcm.training.config_io import save_config

CONFIG = """\
model:
  teacher: world
data:
  video:
    source: {ws}/clips
discriminator:
  enabled: false
method:
  mixed_trajectories: false
"""

TRAIN = ["train", "--config", "{ws}/train.yaml", "--output-dir", "{out}"]
GENERATE = ["generate", "--prompt", "a red circle moving left", "--out", "{out}/v.mp4"]
EVALUATE = ["evaluate", "--videos", "{ws}/videos", "--prompts", "{ws}/prompts.txt"]
EVALUATE += ["--out", "{out}/m.json"]
EXPORT = ["export", "--teacher", "world", "--lora", "{ws}/lora.safetensors", "--out", "{out}"]
CHECK = ["data", "check", "{ws}/clips", "--json", "{out}/report.json"]
PACK = ["data", "pack", "{ws}/clips", "--out", "{out}"]
CACHE = ["data", "cache-latents", "--source", "{ws}/clips", "--teacher", "world"]
CACHE += ["--out", "{out}"]
RENDER = ["world", "render", "--out", "{out}", "--n-videos", "1", "--n-images", "1"]
BUILD = ["world", "build", "--out", "{out}/teacher"]
PROBES = ["world", "build-probes", "--out", "{out}"]
DEMO = ["demo", "--out", "{out}"]

# (argv, what stderr must name)
CASES = {
    # mcm train: the list, then keys, files and checkpoints
    "train-lr-not-yaml": (TRAIN + ["--set", "train.lr=["], "train.lr: '[' is not valid YAML"),
    "train-log-every-0": (TRAIN + ["--set", "train.log_every=0"], "train.log_every: must be >= 1"),
    "train-lr-negative": (TRAIN + ["--set", "train.lr=-1"], "train.lr: must be > 0"),
    "train-num-frames-0": (
        TRAIN + ["--set", "data.video.num_frames=0"],
        "data.video.num_frames: must be >= 1",
    ),
    "train-checkpoint-every": (
        TRAIN + ["--set", "train.checkpoint_every=-3"],
        "train.checkpoint_every: must be >= 0, got -3",
    ),
    "train-keep-checkpoints": (
        TRAIN + ["--set", "train.keep_checkpoints=-1"],
        "train.keep_checkpoints: must be >= 1, got -1",
    ),
    "train-w-min": (TRAIN + ["--set", "method.w_min=-5"], "method.w_min: must be >= 0"),
    "train-mixed-precision": (
        TRAIN + ["--set", "train.mixed_precision=fp8"],
        "train.mixed_precision: must be one of 'no', 'fp16' or 'bf16', got fp8",
    ),
    "train-unknown-key": (TRAIN + ["--set", "train.lrr=1"], "Did you mean 'train.lr'?"),
    "train-not-an-override": (TRAIN + ["--set", "train.lr"], "section.key=value"),
    "train-cross-field": (
        TRAIN + ["--set", "method.mixed_trajectories=true"],
        "method.mixed_trajectories needs the discriminator",
    ),
    "train-missing-teacher": (
        TRAIN + ["--set", "model.teacher={ws}/no-teacher"],
        "model.teacher: Cannot find teacher",
    ),
    "train-missing-clips": (
        TRAIN + ["--set", "data.video.source={ws}/no-clips"],
        "data.video.source: '{ws}/no-clips' does not exist",
    ),
    "train-missing-cache": (
        TRAIN + ["--set", "data.video.latent_cache={ws}/no-cache"],
        "data.video.latent_cache",
    ),
    "train-missing-config": (["train", "--config", "{ws}/no.yaml"], "{ws}/no.yaml"),
    "train-no-config": (["train"], "the following arguments are required: --config"),
    "train-resume-no-checkpoint": (TRAIN + ["--resume", "{ws}/clips"], "--resume '{ws}/clips'"),
    # mcm generate
    "generate-steps-0": (GENERATE + ["--steps", "0"], "argument --steps: must be an integer >= 1"),
    "generate-frames-negative": (GENERATE + ["--frames", "-4"], "argument --frames"),
    "generate-guidance-negative": (GENERATE + ["--guidance", "-5"], "argument --guidance"),
    "generate-steps-text": (GENERATE + ["--steps", "four"], "argument --steps"),
    "generate-seed-negative": (GENERATE + ["--seed", "-1"], "argument --seed"),
    "generate-fps-0": (GENERATE + ["--fps", "0"], "argument --fps"),
    "generate-teacher-and-student": (
        GENERATE + ["--teacher", "world", "--student", "{ws}/student"],
        "argument --student: not allowed with argument --teacher",
    ),
    "generate-avi": (
        ["generate", "--prompt", "a", "--out", "{out}/v.avi"],
        "--out '{out}/v.avi': mcm writes videos as .mp4",
    ),
    "generate-txt": (["generate", "--prompt", "a", "--out", "{out}/v.txt"], "--out"),
    "generate-two-prompts-one-file": (
        GENERATE + ["--prompt", "a blue square moving up"],
        "give a folder, not a file name",
    ),
    "generate-no-prompt": (["generate", "--out", "{out}/v.mp4"], "--prompt"),
    "generate-missing-prompt-file": (
        GENERATE + ["--prompt-file", "{ws}/none.txt"],
        "--prompt-file '{ws}/none.txt'",
    ),
    "generate-missing-student": (GENERATE + ["--student", "{ws}/student"], "{ws}/student"),
    "generate-missing-teacher": (GENERATE + ["--teacher", "{ws}/no-teacher"], "no-teacher"),
    "generate-broken-teacher": (
        GENERATE + ["--teacher", "{ws}/broken-teacher"],
        "broken-teacher/model_index.json is not valid JSON",
    ),
    # mcm evaluate
    "evaluate-batch-size-0": (EVALUATE + ["--batch-size", "0"], "argument --batch-size"),
    "evaluate-fvd-resolution": (EVALUATE + ["--fvd-resolution", "0"], "--fvd-resolution"),
    "evaluate-input-scale": (EVALUATE + ["--fvd-input-scale", "0"], "--fvd-input-scale"),
    "evaluate-device": (EVALUATE + ["--device", "gpu"], "argument --device"),
    "evaluate-unknown-metric": (EVALUATE + ["--metrics", "psnr"], "Unknown metric(s) ['psnr']"),
    "evaluate-fvd-needs-reference": (EVALUATE + ["--metrics", "fvd"], "--reference DIR"),
    "evaluate-i3d-call": (EVALUATE + ["--i3d-call", "[1]"], "--i3d-call"),
    "evaluate-missing-videos": (
        ["evaluate", "--videos", "{ws}/none", "--prompts", "p", "--out", "{out}/m.json"],
        "--videos '{ws}/none' does not exist",
    ),
    # mcm export
    "export-steps-0": (EXPORT + ["--steps", "0"], "argument --steps"),
    "export-num-frames-0": (EXPORT + ["--num-frames", "0"], "argument --num-frames"),
    "export-timestep-scaling": (EXPORT + ["--timestep-scaling", "0"], "--timestep-scaling"),
    "export-lora-alpha": (EXPORT + ["--lora-alpha", "-1"], "argument --lora-alpha"),
    "export-guidance": (EXPORT + ["--guidance-scale", "-1"], "argument --guidance-scale"),
    "export-aux-form": (EXPORT + ["--aux", "head"], "--aux wants NAME=FILE"),
    "export-aux-name": (EXPORT + ["--aux", "a/b=x.safetensors"], "NAME must be letters"),
    "export-aux-missing": (EXPORT + ["--aux", "head={ws}/none.safetensors"], "--aux head"),
    "export-steps-past-grid": (
        EXPORT + ["--steps", "60", "--original-inference-steps", "50"],
        "--steps 60 must be <= --original-inference-steps 50",
    ),
    "export-missing-lora": (
        ["export", "--teacher", "world", "--lora", "{ws}/none.safetensors", "--out", "{out}"],
        "{ws}/none.safetensors",
    ),
    "export-lora-not-safetensors": (
        ["export", "--teacher", "world", "--lora", "{ws}/prompts.txt", "--out", "{out}"],
        "must be a .safetensors file",
    ),
    "export-lora-corrupt": (
        ["export", "--teacher", "world", "--lora", "{ws}/corrupt.safetensors", "--out", "{out}"],
        "is not a readable safetensors file",
    ),
    "export-missing-teacher": (
        ["export", "--teacher", "{ws}/no-teacher", "--lora", "{ws}/lora.safetensors"]
        + ["--out", "{out}"],
        "{ws}/no-teacher",
    ),
    # mcm data check / pack / cache-latents
    "check-set-type": (CHECK + ["--set", "num_frames=abc"], "data.video.num_frames: must be an"),
    "check-set-unknown": (CHECK + ["--set", "frames=8"], "data.video.frames: unknown key"),
    "check-set-range": (CHECK + ["--set", "max_bad_fraction=2"], "data.video.max_bad_fraction"),
    "check-set-choice": (CHECK + ["--set", "crop=zoom"], "data.video.crop: must be one of"),
    "check-set-form": (CHECK + ["--set", "num_frames"], "--set 'num_frames': write KEY=VALUE"),
    "check-set-yaml": (CHECK + ["--set", "resolution=[1"], "data.video.resolution: '[1'"),
    "check-num-frames-0": (CHECK + ["--num-frames", "0"], "argument --num-frames"),
    "check-resolution-0": (CHECK + ["--resolution", "0"], "argument --resolution"),
    "check-resolution-3": (CHECK + ["--resolution", "8", "8", "8"], "data.video.resolution"),
    "check-fps": (CHECK + ["--fps", "-1"], "argument --fps"),
    "check-workers": (CHECK + ["--num-workers", "-1"], "argument --num-workers"),
    "check-kind-image-frames": (
        CHECK + ["--kind", "image", "--num-frames", "4"],
        "--num-frames applies to videos",
    ),
    "check-missing-config": (CHECK + ["--config", "{ws}/no.yaml"], "{ws}/no.yaml"),
    "check-missing-source": (
        ["data", "check", "{ws}/none", "--json", "{out}/r.json"],
        "data source '{ws}/none' does not exist",
    ),
    "check-world-source": (
        ["data", "check", "world:laion", "--json", "{out}/r.json"],
        "Unknown world source 'world:laion'",
    ),
    "pack-shard-size": (PACK + ["--shard-size", "0"], "argument --shard-size"),
    "pack-shard-mb": (PACK + ["--max-shard-mb", "0"], "argument --max-shard-mb"),
    "pack-set": (PACK + ["--set", "shuffle=sometimes"], "data.video.shuffle: must be true or"),
    "cache-batch-size": (CACHE + ["--batch-size", "0"], "argument --batch-size"),
    "cache-dtype": (CACHE + ["--dtype", "fp64"], "argument --dtype"),
    "cache-device": (CACHE + ["--device", "gpu"], "argument --device"),
    "cache-missing-teacher": (
        ["data", "cache-latents", "--source", "{ws}/clips", "--teacher", "{ws}/no-teacher"]
        + ["--out", "{out}"],
        "no-teacher",
    ),
    # mcm world render / build / build-probes
    "render-videos": (RENDER + ["--n-videos", "-1"], "argument --n-videos"),
    "render-size": (RENDER + ["--size", "0"], "argument --size: must be an integer >= 8"),
    "render-frames": (RENDER + ["--frames", "0"], "argument --frames"),
    "render-domain": (RENDER + ["--domains", "laion"], "argument --domains: invalid choice"),
    "build-vae-steps": (BUILD + ["--vae-steps", "-1"], "argument --vae-steps"),
    "build-batch-size": (BUILD + ["--batch-size", "0"], "argument --batch-size"),
    "build-lr": (BUILD + ["--lr", "0"], "argument --lr: must be a number > 0"),
    "build-top-noise": (BUILD + ["--top-noise-fraction", "2"], "--top-noise-fraction"),
    "build-threads": (BUILD + ["--threads", "0"], "argument --threads"),
    "build-device": (BUILD + ["--device", "gpu"], "argument --device"),
    "build-precision": (BUILD + ["--precision", "fp16"], "argument --precision"),
    "build-zero-snr-epsilon": (
        BUILD + ["--zero-snr", "--prediction-type", "epsilon"],
        "pass --prediction-type v_prediction",
    ),
    "build-init-from-missing": (BUILD + ["--init-from", "{ws}/none"], "{ws}/none"),
    "probes-steps": (PROBES + ["--steps", "0"], "argument --steps"),
    "probes-batch-size": (PROBES + ["--batch-size", "1"], "must be an integer >= 2"),
    "probes-lr": (PROBES + ["--lr", "-1"], "argument --lr"),
    "probes-workers": (PROBES + ["--workers", "-1"], "argument --workers"),
    # mcm demo
    "demo-prompts": (DEMO + ["--prompts", "0"], "argument --prompts"),
    "demo-mcm-steps": (DEMO + ["--mcm-steps", "0"], "argument --mcm-steps"),
    "demo-lcm-steps": (DEMO + ["--lcm-steps", "-1"], "argument --lcm-steps"),
    "demo-clips": (DEMO + ["--clips", "0"], "argument --clips"),
    "demo-threads": (DEMO + ["--threads", "0"], "argument --threads"),
    "demo-seed": (DEMO + ["--seed", "-2"], "argument --seed"),
    "demo-images-video": (DEMO + ["--images", "world:lowq_video"], "is a video domain"),
    "demo-images-count": (DEMO + ["--images", "world:hq_image:0"], "the count must be"),
    "demo-images-folder": (DEMO + ["--images", "{ws}/none"], "no folder '{ws}/none'"),
    # no such command
    "unknown-command": (["distil"], "argument COMMAND: invalid choice: 'distil'"),
}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """What the cases point at: a clip folder, a valid training config, a LoRA file, ..."""
    ws = tmp_path_factory.mktemp("ws")
    (ws / "clips").mkdir()
    (ws / "clips" / "a.txt").write_text("a red circle moving left\n")
    (ws / "videos").mkdir()
    (ws / "prompts.txt").write_text("a red circle moving left\n")
    (ws / "train.yaml").write_text(CONFIG.format(ws=ws))
    (ws / "broken-teacher").mkdir()
    (ws / "broken-teacher" / "model_index.json").write_text("{not json")
    (ws / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00not a header")
    lora = {"down.lora_A.weight": torch.zeros(2, 4), "down.lora_B.weight": torch.zeros(4, 2)}
    save_file(lora, str(ws / "lora.safetensors"), metadata={"lora_rank": "2", "lora_alpha": "2"})
    return ws


def test_the_matrixs_config_is_valid(ws):
    # Each train case differs from a config that passes by its one bad value.
    cfg = load_train_config(ws / "train.yaml", [f"output_dir={ws / 'run'}"])
    check_train_inputs(cfg)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_naming_it_and_writes_nothing(name, ws, tmp_path, capsys):
    argv, fragment = CASES[name]
    out = tmp_path / "out"
    fill = {"ws": ws, "out": out}
    rc = main([a.format(**fill) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert fragment.format(**fill) in err, err
    assert "Traceback" not in err
    assert 1 <= len(err.strip().splitlines()) <= 2, err
    assert err.startswith("mcm"), err  # which command it was
    assert not out.exists(), f"{name} wrote {sorted(p.name for p in out.rglob('*'))}"


def test_every_problem_of_a_config_in_one_run(ws, tmp_path, capsys):
    bad = ["train.log_every=0", "train.lr=-1", "data.video.num_frames=0", "method.w_min=-5"]
    argv = [a.format(ws=ws, out=tmp_path / "out") for a in TRAIN]
    assert main([*argv, *[x for b in bad for x in ("--set", b)]]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == len(bad)
    for b in bad:
        assert any(line.startswith(f"mcm train: {b.split('=')[0]}: must be") for line in lines)
    assert not (tmp_path / "out").exists()


def test_resume_with_a_config_that_changes_the_checkpoint(ws, tmp_path, capsys):
    run = tmp_path / "run"
    checkpoint = run / "checkpoint-5"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.pt").write_bytes(b"")
    saved = load_train_config(ws / "train.yaml", ["model.lora_rank=8", f"output_dir={run}"])
    save_config(saved, checkpoint / "config.yaml")
    before = sorted(run.rglob("*"))
    argv = ["train", "--config", str(ws / "train.yaml"), "--output-dir", str(run)]
    assert main([*argv, "--resume", "latest"]) == 2
    err = capsys.readouterr().err
    assert "model.lora_rank: 8 in the checkpoint, now 64" in err and "Traceback" not in err
    assert sorted(run.rglob("*")) == before


def test_world_domains_match_the_worlds(ws):
    from mcm.commands.world import WORLD_DOMAINS
    from mcm.world.domains import DOMAINS

    assert WORLD_DOMAINS == DOMAINS
