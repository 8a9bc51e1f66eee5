"""`mcm evaluate` end to end on real mp4 files, with tiny random networks saved to disk."""

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from mcm.cli import main
from mcm.evaluation.i3d import InceptionI3d
from mcm.evaluation.inputs import read_prompts, read_videos
from mcm.evaluation.protocol import sha256_file
from mcm.media import write_image, write_video
from test_evaluation_clip import save_tiny_clip, save_tiny_dinov2

PROTOCOL_KEYS = {
    "value",
    "feature_network",
    "weights",
    "num_videos",
    "num_frames",
    "resolution",
    "resize_policy",
}
PROMPTS = ["a red circle moving left", "a blue square moving up", "a green triangle moving right"]


def _write_clips(folder, n: int, seed: int, frames: int = 8, size: int = 32) -> None:
    g = torch.Generator().manual_seed(seed)
    for i in range(n):
        write_video(folder / f"{i:03d}.mp4", torch.rand(3, frames, size, size, generator=g) * 2 - 1)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    for name in ("gen", "ref", "images"):
        (root / name).mkdir()
    _write_clips(root / "gen", 3, seed=0)
    _write_clips(root / "ref", 3, seed=1)
    g = torch.Generator().manual_seed(2)
    for i in range(4):
        write_image(root / "images" / f"{i}.png", torch.rand(3, 40, 48, generator=g) * 2 - 1)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    save_tiny_clip(root / "clip")
    save_tiny_dinov2(root / "dino")
    torch.manual_seed(0)
    i3d = InceptionI3d()
    for m in i3d.modules():
        if isinstance(m, nn.Conv3d):  # He init: no denormal activations (slow on CPU)
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    save_file({k: v.contiguous() for k, v in i3d.state_dict().items()}, root / "i3d.safetensors")
    return root


def test_evaluate_fvd_clipsim_frame_fid(workspace, capsys):
    out = workspace / "metrics.json"
    code = main(
        [
            "evaluate",
            "--videos", str(workspace / "gen"),
            "--prompts", str(workspace / "prompts.txt"),
            "--metrics", "fvd,clipsim,frame_fid",
            "--reference", str(workspace / "ref"),
            "--i3d", str(workspace / "i3d.safetensors"),
            "--fvd-resolution", "32",
            "--clip", str(workspace / "clip"),
            "--reference-images", str(workspace / "images"),
            "--fid-features", str(workspace / "dino"),
            "--fid-resolution", "28",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["num_videos"] == 3 and result["num_frames"] == 8 and result["size"] == [32, 32]
    metrics = result["metrics"]
    assert set(metrics) == {"fvd", "clipsim", "frame_fid"}
    for name, record in metrics.items():
        assert set(record) >= PROTOCOL_KEYS, name
        assert record["num_videos"] == 3 and record["num_frames"] == 8
        assert isinstance(record["value"], float)
    fvd = metrics["fvd"]
    assert fvd["value"] > 0
    assert fvd["weights"]["sha256"] == sha256_file(workspace / "i3d.safetensors")
    assert fvd["weights"]["format"] == "state_dict"
    assert fvd["resolution"] == "32x32x16"  # 8-frame clips, every frame shown twice
    assert "repeat" in fvd["resize_policy"]
    assert fvd["reference"]["num_videos"] == 3
    assert fvd["input_range"] == [-1.0, 1.0]
    assert metrics["clipsim"]["weights"]["sha256"] == sha256_file(
        workspace / "clip" / "model.safetensors"
    )
    assert set(metrics["clipsim"]["per_video"]) == {"000.mp4", "001.mp4", "002.mp4"}
    fid = metrics["frame_fid"]
    assert fid["num_generated_frames"] == 24 and fid["reference"]["num_images"] == 4
    assert fid["weights"]["sha256"] == sha256_file(workspace / "dino" / "model.safetensors")
    assert "dinov2" in fid["feature_network"]
    assert "fvd" in capsys.readouterr().out


def test_world_metrics_with_random_probes(workspace, tmp_path):
    from mcm.world.probes import FrameProbe, ProbeConfig, VideoProbe, WorldProbes

    config = ProbeConfig()
    torch.manual_seed(0)
    frame, video = FrameProbe(config), VideoProbe(config)
    d = config.channels[-1]  # the pooled feature size
    reference = {
        "frame_mu": torch.zeros(d, dtype=torch.float64),
        "frame_sigma": torch.eye(d, dtype=torch.float64),
        "video_mu": torch.zeros(d, dtype=torch.float64),
        "video_sigma": torch.eye(d, dtype=torch.float64),
    }
    cfg = {
        "channels": list(config.channels),
        "size": config.size,
        "num_frames": config.num_frames,
    }
    manifest = {
        "frame_probe": {"config": cfg},
        "video_probe": {"config": cfg},
        "reference": {"sharpness_ratio_clean": 1.0},
    }
    WorldProbes(frame, video, reference, manifest).save_pretrained(tmp_path / "probes")
    _write_clips(tmp_path, 3, seed=3, frames=config.num_frames, size=config.size)
    out = tmp_path / "world.json"
    code = main(
        [
            "evaluate", "--videos", str(tmp_path), "--prompts", str(workspace / "prompts.txt"),
            "--metrics", "world", "--world-probes", str(tmp_path / "probes"), "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert {
        "world/prompt_accuracy",
        "world/motion_accuracy",
        "world/frame_fd",
        "world/video_fd",
    } <= set(metrics)
    for record in metrics.values():
        assert set(record) >= PROTOCOL_KEYS
        assert record["resolution"] == f"{config.size}x{config.size}x{config.num_frames}"
    assert metrics["world/frame_fd"]["weights"]["sha256"] == sha256_file(
        tmp_path / "probes" / "frame_probe.safetensors"
    )
    assert metrics["world/sharpness"]["weights"]["path"] is None
    assert 0.0 <= metrics["world/prompt_accuracy"]["value"] <= 1.0


def test_prompts_must_match_the_videos(workspace, tmp_path, capsys):
    paths, videos = read_videos(workspace / "gen")
    assert videos.shape == (3, 3, 8, 32, 32)
    assert [p.name for p in paths] == ["000.mp4", "001.mp4", "002.mp4"]
    # JSON {file name: prompt}, with or without the suffix
    mapping = tmp_path / "prompts.json"
    mapping.write_text(json.dumps({"002.mp4": "c", "000": "a", "001.mp4": "b"}))
    assert read_prompts(mapping, paths) == ["a", "b", "c"]
    mapping.write_text(json.dumps({"000.mp4": "a", "001.mp4": "b"}))
    with pytest.raises(ValueError, match="no prompt for '002.mp4'"):
        read_prompts(mapping, paths)
    short = tmp_path / "two.txt"
    short.write_text("a\nb\n")
    with pytest.raises(ValueError, match="2 prompts but the folder has 3 videos"):
        read_prompts(short, paths)
    # the command turns it into a message and exit code 2
    args = [
        "evaluate",
        "--videos",
        str(workspace / "gen"),
        "--prompts",
        str(short),
        "--out",
        str(tmp_path / "m.json"),
    ]
    assert main(args) == 2
    assert "2 prompts but the folder has 3 videos" in capsys.readouterr().err


def test_missing_inputs_name_the_flag(workspace, tmp_path, capsys):
    out = str(tmp_path / "m.json")
    gen = str(workspace / "gen")
    assert (
        main(["evaluate", "--videos", gen, "--metrics", "fvd", "--i3d", "x.pt", "--out", out]) == 2
    )
    assert "--reference DIR" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--videos",
                gen,
                "--metrics",
                "clipsim",
                "--prompts",
                "p.txt",
                "--out",
                out,
            ]
        )
        == 2
    )
    assert "--clip" in capsys.readouterr().err
    assert main(["evaluate", "--videos", gen, "--metrics", "psnr", "--out", out]) == 2
    assert "Unknown metric" in capsys.readouterr().err
    assert (
        main(["evaluate", "--videos", str(tmp_path / "none"), "--prompts", "p", "--out", out]) == 2
    )
    assert "does not exist" in capsys.readouterr().err

    (tmp_path / "mixed").mkdir()
    write_video(tmp_path / "mixed" / "a.mp4", torch.zeros(3, 8, 32, 32))
    write_video(tmp_path / "mixed" / "b.mp4", torch.zeros(3, 6, 32, 32))
    with pytest.raises(ValueError, match="b.mp4 has shape"):
        read_videos(tmp_path / "mixed")
