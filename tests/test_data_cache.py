"""Latent cache (real tiny VAE and text encoder) and the `mcm data` command."""

import json

import pytest
import torch

from mcm.cli import main
from mcm.data import VideoDataConfig, build_video_dataset, make_dataloader
from mcm.data.cache import write_latent_cache
from mcm.data.datasets import CachedLatentDataset
from mcm.media import write_video
from mcm.models.text import TextEncoder
from mcm.models.tiny import build_clip_tokenizer, tiny_text_encoder, tiny_vae
from mcm.models.vae import VideoVAE

SMALL = {"num_frames": 4, "frame_stride": 2, "resolution": 16, "num_workers": 0}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    g = torch.Generator().manual_seed(0)
    for i in range(6):
        write_video(d / f"c{i}.mp4", torch.rand(3, 10, 24, 32, generator=g) * 2 - 1)
        (d / f"c{i}.txt").write_text(f"a clip with the number {i}")
    (d / "broken.mp4").write_text("not a video")
    (d / "broken.txt").write_text("a caption")
    return d


@pytest.fixture(scope="module")
def encoders():
    torch.manual_seed(0)
    tokenizer = build_clip_tokenizer(model_max_length=16)
    return VideoVAE(tiny_vae(), chunk_size=3), TextEncoder(tokenizer, tiny_text_encoder(tokenizer))


def test_cached_latents_match_the_uncached_run_on_the_same_clips(tmp_path, folder, encoders):
    vae, text = encoders
    # random crops and starts: clip i of the cache gets the view of position i of an uncached
    # run with the same seed and shuffle off
    cfg = VideoDataConfig(source=str(folder), shuffle=False, max_bad_fraction=0.5, **SMALL)
    log = write_latent_cache(
        cfg, vae.encode, tmp_path / "cache", text, batch_size=4, seed=3, shard_size=4
    )
    assert log.bad_counts == {"undecodable": 1}
    info = json.loads((tmp_path / "cache" / "cache.json").read_text())
    assert info["count"] == 6 and info["shapes"]["latents"] == [4, 4, 8, 8]
    assert len(list((tmp_path / "cache").glob("latents-*.safetensors"))) == 2

    good = VideoDataConfig(source=str(folder), shuffle=False, **SMALL)
    uncached = make_dataloader(build_video_dataset(good), 3, 0, seed=3)
    cached_cfg = VideoDataConfig(latent_cache=str(tmp_path / "cache"), shuffle=False, **SMALL)
    dataset = build_video_dataset(cached_cfg)
    assert isinstance(dataset, CachedLatentDataset)
    cached = make_dataloader(dataset, 3, 0, seed=3)
    for raw, hit, _ in zip(uncached, cached, range(2)):
        assert set(hit) == {"latents", "text_emb", "caption", "key"}
        assert hit["key"] == raw["key"] and hit["caption"] == raw["caption"]
        torch.testing.assert_close(hit["latents"], vae.encode(raw["video"]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(hit["text_emb"], text(raw["caption"]), atol=1e-5, rtol=1e-5)


def test_cache_refuses_to_overwrite_and_reports_a_missing_cache(tmp_path, folder, encoders):
    vae, _ = encoders
    cfg = VideoDataConfig(source=str(folder), max_bad_fraction=0.5, **SMALL)
    write_latent_cache(cfg, vae.encode, tmp_path / "c", batch_size=6)
    with pytest.raises(FileExistsError, match="already holds"):
        write_latent_cache(cfg, vae.encode, tmp_path / "c")
    with pytest.raises(FileNotFoundError, match="mcm data cache-latents"):
        build_video_dataset(VideoDataConfig(latent_cache=str(tmp_path / "nothing")))
    (batch,) = [b for b, _ in zip(make_dataloader(build_video_dataset(
        VideoDataConfig(latent_cache=str(tmp_path / "c"))), 2, 0), range(1))]  # fmt: skip
    assert set(batch) == {"latents", "caption", "key"}  # no text embeddings were stored


def test_cli_check_pack_and_cache_latents(tmp_path, folder, capsys):
    from mcm.models.tiny import save_tiny_pipeline

    args = ["--num-frames", "4", "--frame-stride", "2", "--resolution", "16", "--num-workers", "0"]
    rc = main(["data", "check", str(folder), *args, "--json", str(tmp_path / "r.json")])
    assert rc == 1  # 1 bad of 7 is above the default max_bad_fraction=0.05
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["bad"] == {"undecodable": 1} and report["good"] == 6
    assert "broken.mp4" in capsys.readouterr().out
    assert main(["data", "check", str(folder), *args, "--set", "max_bad_fraction=0.5"]) == 0

    assert main(["data", "pack", str(folder), "--out", str(tmp_path / "shards"), *args]) == 0
    assert "shard-000000.tar" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "shards"), *args]) == 0

    teacher = save_tiny_pipeline("modelscope", tmp_path / "teacher")
    out = tmp_path / "cache"
    rc = main([
        "data", "cache-latents", "--source", str(tmp_path / "shards"), "--teacher", str(teacher),
        "--out", str(out), "--device", "cpu", *args,
    ])  # fmt: skip
    assert rc == 0
    assert json.loads((out / "cache.json").read_text())["count"] == 6
    assert main(["data", "check", str(tmp_path / "missing"), *args]) == 2
    assert "does not exist" in capsys.readouterr().err
