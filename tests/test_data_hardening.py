"""Data hardening: safe tar member names in `mcm data pack`, opt-in `pipe:` shards, and the
bad-sample counts of small shuffled webdataset sources."""

import json
import tarfile

import pytest
import torch

from mcm.cli import main
from mcm.data import BadDataError, VideoDataConfig, build_video_dataset, make_dataloader
from mcm.data.streams import webdataset_stream
from mcm.data.webdataset import ShardWriter, open_stream
from mcm.media import write_video

SMALL = {"num_frames": 4, "frame_stride": 1, "resolution": 16, "num_workers": 0}
FLAGS = ["--num-frames", "4", "--frame-stride", "1", "--resolution", "16", "--num-workers", "0"]


@pytest.fixture(scope="module")
def video_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_video(path, torch.rand(3, 6, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    return path.read_bytes()


# -- mcm data pack: member names ---------------------------------------------------------


def manifest(tmp_path, video_bytes, rows) -> str:
    """A JSONL manifest next to a real clip ``media/ok.mp4``."""
    (tmp_path / "media").mkdir(exist_ok=True)
    (tmp_path / "media" / "ok.mp4").write_bytes(video_bytes)
    path = tmp_path / "media" / "clips.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


OK_ROW = {"key": "clips/ok", "path": "ok.mp4", "caption": "a fine clip"}


@pytest.mark.parametrize(
    ("row", "key", "problem"),
    [
        ({"key": "../../evil"}, "../../evil", "contains a '..' component"),
        ({"key": "clips/../../evil"}, "clips/../../evil", "contains a '..' component"),
        ({"key": "/etc/evil"}, "/etc/evil", "is an absolute path"),
        ({"key": "clips\\..\\evil"}, "clips\\..\\evil", "contains a backslash"),
        ({"key": "C:/evil"}, "C:/evil", "starts with a drive letter"),
        ({"path": "../ok_outside.mp4"}, "../ok_outside", "contains a '..' component"),  # no key
    ],
)
def test_pack_refuses_unsafe_member_names_before_writing(
    tmp_path, video_bytes, capsys, row, key, problem
):
    (tmp_path / "ok_outside.mp4").write_bytes(video_bytes)
    hostile = {"path": "ok.mp4", "caption": "a hostile row", **row}
    source = manifest(tmp_path, video_bytes, [OK_ROW, hostile])
    out = tmp_path / "shards"
    assert main(["data", "pack", source, "--out", str(out), "--no-verify", *FLAGS]) == 2
    err = capsys.readouterr().err
    assert f"webdataset key {key!r} {problem}" in err
    assert "give that row a relative key" in err  # the fix
    assert not out.exists()  # nothing written, not even the folder


def test_pack_writes_relative_member_names(tmp_path, video_bytes):
    source = manifest(tmp_path, video_bytes, [OK_ROW, {**OK_ROW, "key": "clips/two..parts"}])
    out = tmp_path / "shards"
    assert main(["data", "pack", source, "--out", str(out), "--no-verify", *FLAGS]) == 0
    with tarfile.open(out / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names == [f"clips/{k}.{e}" for k in ("ok", "two__parts") for e in ("mp4", "txt", "json")]


def test_shard_writer_refuses_unsafe_keys(tmp_path):
    with ShardWriter(str(tmp_path)) as writer, pytest.raises(ValueError, match="'..' component"):
        writer.write("../evil", {"txt": b"x"})
    assert writer.paths == []  # the check comes before the first shard is opened


# -- pipe: sources are opt-in --------------------------------------------------------------


def test_pipe_sources_are_refused_without_the_opt_in(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MCM_ALLOW_PIPE", raising=False)
    marker = tmp_path / "ran"
    source = f"pipe:touch {marker}; cat {tmp_path}/x.tar"
    with pytest.raises(ValueError, match="set the environment variable MCM_ALLOW_PIPE=1"):
        build_video_dataset(VideoDataConfig(source=source, **SMALL))
    with pytest.raises(ValueError, match="MCM_ALLOW_PIPE=1"), open_stream(source):
        pass
    assert main(["data", "check", source, *FLAGS]) == 2
    err = capsys.readouterr().err
    assert "would run the shell command" in err and "MCM_ALLOW_PIPE=1" in err
    monkeypatch.setenv("MCM_ALLOW_PIPE", "yes")  # only "1" opts in
    with pytest.raises(ValueError, match="MCM_ALLOW_PIPE=1"):
        build_video_dataset(VideoDataConfig(source=source, **SMALL))
    assert not marker.exists()


def test_pipe_sources_run_with_the_opt_in(tmp_path, monkeypatch, video_bytes):
    with ShardWriter(str(tmp_path)) as writer:
        writer.write("k0", {"mp4": video_bytes, "txt": b"through a pipe"})
    monkeypatch.setenv("MCM_ALLOW_PIPE", "1")
    marker = tmp_path / "ran"
    dataset = build_video_dataset(
        VideoDataConfig(source=f"pipe:touch {marker}; cat {writer.paths[0]}", **SMALL)
    )
    (batch,) = [b for b, _ in zip(make_dataloader(dataset, 1, 0), range(1))]
    assert batch["caption"] == ["through a pipe"] and marker.exists()


# -- small shuffled webdataset sources: the seen count -------------------------------------


@pytest.fixture(scope="module")
def shards(tmp_path_factory, video_bytes) -> str:
    """12 samples in 3 shards; every third one (k00, k03, k06, k09) is not a video."""
    out = tmp_path_factory.mktemp("shards")
    with ShardWriter(str(out), max_count=4) as writer:
        for i in range(12):
            media = b"not a video" if i % 3 == 0 else video_bytes
            writer.write(f"k{i:02d}", {"mp4": media, "txt": f"clip {i}".encode()})
    return str(out)


def test_a_shuffled_stream_is_a_permutation_per_epoch(tmp_path):
    with ShardWriter(str(tmp_path), max_count=3) as writer:
        for i in range(6):
            writer.write(f"k{i}", {"txt": b"x"})
    stream = webdataset_stream(writer.paths, 0, True, False, 1000, 0, 1, 0, 1)
    items = [next(stream) for _ in range(12)]
    keys = [item.payload[1] for item in items]
    assert sorted(keys[:6]) == sorted(keys[6:]) == [f"k{i}" for i in range(6)]
    assert keys[:6] != keys[6:]  # each epoch its own order
    assert [item.first_pass for item in items] == [True] * 6 + [False] * 6


@pytest.mark.parametrize("num_workers", [0, 2])
def test_small_shuffled_webdataset_counts_every_sample_seen(shards, num_workers):
    cfg = VideoDataConfig(source=shards, max_bad_fraction=0.5, min_samples_before_abort=6, **SMALL)
    assert cfg.shuffle and cfg.shuffle_buffer > 12  # the case that counted "0 seen"
    loader = make_dataloader(build_video_dataset(cfg), 2, num_workers)
    it = iter(loader)
    for _ in range(10):  # 20 good samples: the first epoch (8 good) of every stream is over
        next(it)
    log = loader.bad_log
    assert (log.seen, log.bad) == (12, 4)
    assert log.bad_counts == {"undecodable": 4}


def test_small_shuffled_webdataset_stops_past_max_bad_fraction(shards):
    cfg = VideoDataConfig(source=shards, max_bad_fraction=0.2, min_samples_before_abort=6, **SMALL)
    loader = make_dataloader(build_video_dataset(cfg), 2, 0)
    with pytest.raises(BadDataError, match="max_bad_fraction=0.2"):
        for _, _ in zip(loader, range(10)):
            pass
