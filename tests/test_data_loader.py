"""The loader: parallel, deterministic per seed and rank, resumable, loud about bad files."""

import logging
import shutil

import pytest
import torch

from mcm.data import BadDataError, VideoDataConfig, build_video_dataset, make_dataloader
from mcm.data.check import check_source, pack_source
from mcm.media import write_video

SMALL = {"num_frames": 4, "frame_stride": 2, "resolution": 16}
BROKEN = {"truncated.mp4", "empty.mp4", "text.mp4", "one_frame.mp4"}


def clip(seed: int, frames: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, frames, 24, 24, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    for i in range(12):
        write_video(d / f"clip{i:02d}.mp4", clip(i))
        (d / f"clip{i:02d}.txt").write_text(f"clip number {i}")
    return d


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, good_folder):
    """12 good clips and the broken files of the acceptance check, all with captions."""
    d = tmp_path_factory.mktemp("mixed")
    for f in good_folder.iterdir():
        shutil.copy(f, d / f.name)
    data = (good_folder / "clip00.mp4").read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("I am a text file with a video name\n")
    write_video(d / "one_frame.mp4", clip(99, frames=1))
    for name in BROKEN:
        (d / name).with_suffix(".txt").write_text("a caption")
    write_video(d / "no_caption.mp4", clip(98))
    return d


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def same(a, b):
    return (
        a["key"] == b["key"]
        and a["caption"] == b["caption"]
        and torch.equal(a["video"], b["video"])
    )


def loader_for(source, batch_size=3, num_workers=0, seed=0, rank=0, world_size=1, **overrides):
    cfg = VideoDataConfig(source=str(source), **{**SMALL, **overrides})
    return make_dataloader(
        build_video_dataset(cfg), batch_size, num_workers, seed, rank, world_size
    )


def test_batches_have_the_documented_layout(good_folder):
    (batch,) = take(loader_for(good_folder), 1)
    assert set(batch) == {"video", "caption", "key"}
    assert batch["video"].shape == (3, 3, 4, 16, 16) and batch["video"].dtype == torch.float32
    assert batch["video"].min() >= -1 and batch["video"].max() <= 1
    assert all(c.startswith("clip number") for c in batch["caption"])


def test_deterministic_per_seed_and_does_not_touch_the_global_rng(good_folder):
    state = torch.get_rng_state()
    a, b = take(loader_for(good_folder, seed=1), 5), take(loader_for(good_folder, seed=1), 5)
    assert torch.equal(state, torch.get_rng_state())
    assert all(same(x, y) for x, y in zip(a, b))
    c = take(loader_for(good_folder, seed=2), 5)
    assert [x["key"] for x in a] != [x["key"] for x in c]


def test_each_epoch_visits_every_clip_once(good_folder):
    keys = [k for b in take(loader_for(good_folder, batch_size=4), 6) for k in b["key"]]
    assert sorted(keys[:12]) == sorted(keys[12:]) == [f"clip{i:02d}" for i in range(12)]
    assert keys[:12] != keys[12:]  # reshuffled each epoch


def test_ranks_split_the_data(good_folder):
    r0 = [k for b in take(loader_for(good_folder, 2, rank=0, world_size=2), 3) for k in b["key"]]
    r1 = [k for b in take(loader_for(good_folder, 2, rank=1, world_size=2), 3) for k in b["key"]]
    assert sorted(r0 + r1) == [f"clip{i:02d}" for i in range(12)]


def test_parallel_workers_are_deterministic(good_folder):
    a = take(loader_for(good_folder, num_workers=2, seed=3), 6)
    b = take(loader_for(good_folder, num_workers=2, seed=3), 6)
    assert all(same(x, y) for x, y in zip(a, b))
    keys = [k for x in a[:4] for k in x["key"]]
    assert sorted(keys) == [f"clip{i:02d}" for i in range(12)]  # workers share one epoch


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_the_stream_exactly(mixed_folder, num_workers):
    full = take(loader_for(mixed_folder, num_workers=num_workers, seed=5), 9)
    first = loader_for(mixed_folder, num_workers=num_workers, seed=5)
    take(first, 5)
    state = first.state_dict()
    assert state["samples_consumed"] == 15
    resumed = loader_for(mixed_folder, num_workers=num_workers, seed=5)
    resumed.load_state_dict(state)
    rest = take(resumed, 4)
    assert all(same(x, y) for x, y in zip(full[5:], rest))
    assert resumed.state_dict()["samples_consumed"] == 27


def test_resume_on_webdataset_shards(tmp_path, good_folder):
    writer, _ = pack_source(
        VideoDataConfig(source=str(good_folder), **SMALL), tmp_path, shard_size=2
    )
    kw = {"num_workers": 2, "seed": 1, "shuffle_buffer": 3}
    full = take(loader_for(writer.pattern(), **kw), 7)
    first = loader_for(writer.pattern(), **kw)
    take(first, 3)
    resumed = loader_for(writer.pattern(), **kw)
    resumed.load_state_dict(first.state_dict())
    assert all(same(x, y) for x, y in zip(full[3:], take(resumed, 4)))


def test_resume_with_other_workers_is_refused(good_folder):
    a = loader_for(good_folder, num_workers=0)
    take(a, 1)
    with pytest.raises(ValueError, match="num_workers"):
        loader_for(good_folder, num_workers=2).load_state_dict(a.state_dict())


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_files_are_skipped_named_and_counted_like_check(mixed_folder, caplog, num_workers):
    caplog.set_level(logging.WARNING, logger="mcm.data")
    loader = loader_for(mixed_folder, batch_size=4, num_workers=num_workers)
    take(loader, 8)  # 32 samples: more than one pass over the 17 files
    log = loader.bad_log
    expected = {
        "truncated": 1,
        "empty_file": 1,
        "undecodable": 1,
        "too_short": 1,
        "missing_caption": 1,
    }
    assert log.bad_counts == expected
    assert log.seen == 17 and log.bad == 5
    warned = [r.getMessage() for r in caplog.records if r.name == "mcm.data"]
    for name in [*BROKEN, "no_caption.mp4"]:
        assert sum(f"{mixed_folder / name} " in m for m in warned) == 1, name  # once, by path
    assert "bad (29.4%)" in log.summary()
    report = check_source(
        VideoDataConfig(source=str(mixed_folder), **SMALL), num_workers=num_workers
    )
    assert report.bad == expected and report.seen == 17 and report.good == 12
    assert not report.ok  # 29% bad is above the default 5% limit


def test_too_much_bad_data_stops_the_run(mixed_folder):
    loader = loader_for(mixed_folder, max_bad_fraction=0.2, min_samples_before_abort=10)
    with pytest.raises(BadDataError, match="max_bad_fraction=0.2"):
        take(loader, 10)
    ok = loader_for(mixed_folder, max_bad_fraction=0.5, min_samples_before_abort=10)
    take(ok, 10)


def test_a_source_with_no_usable_sample_stops(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.mp4").write_text("nope")
        (tmp_path / f"{i}.txt").write_text("caption")
    with pytest.raises(BadDataError, match="in a row"):
        take(loader_for(tmp_path, max_bad_fraction=1.0), 1)
