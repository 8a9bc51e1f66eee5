"""Sources: folders with captions, CSV/JSONL manifests (WebVid columns), webdataset shards."""

import csv
import io
import json
import tarfile

import pytest
import torch

from mcm.data import ImageDataConfig, VideoDataConfig
from mcm.data.check import pack_source
from mcm.data.datasets import ImageDataset, VideoDataset
from mcm.data.sources import detect_format, list_records
from mcm.data.streams import webdataset_stream
from mcm.data.webdataset import ShardWriter, expand_braces, expand_urls, iter_tar_samples
from mcm.media import write_image, write_video

SMALL = {"num_frames": 4, "frame_stride": 1, "resolution": 16, "num_workers": 0}


def clip(seed: int, frames: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, frames, 16, 16, generator=g) * 2 - 1


def first_batch(dataset, n: int):
    dataset.spec.batch_size = n
    return next(iter(dataset))


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder of 4 clips with .txt captions, in two sub-folders."""
    d = tmp_path_factory.mktemp("clips")
    for i in range(4):
        sub = d / ("a" if i < 2 else "b")
        sub.mkdir(exist_ok=True)
        write_video(sub / f"c{i}.mp4", clip(i))
        (sub / f"c{i}.txt").write_text(f"caption {i}\n")
    return d


def test_detect_format(tmp_path, clips):
    assert detect_format(str(clips)) == "folder"
    assert detect_format("x/{000..009}.tar") == "webdataset"
    assert detect_format("pipe:cat x.tar") == "webdataset"
    assert detect_format("list.csv") == "csv"
    assert detect_format("list.jsonl") == "jsonl"
    (tmp_path / "s-0.tar").write_bytes(b"")
    assert detect_format(str(tmp_path)) == "webdataset"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_format(str(tmp_path / "nope"))


def test_folder_with_txt_captions(clips):
    ds = VideoDataset(VideoDataConfig(source=str(clips), shuffle=False, **SMALL))
    assert [r.key for r in ds.records] == ["a/c0", "a/c1", "b/c2", "b/c3"]
    batch = first_batch(ds, 4)
    assert batch["video"].shape == (4, 3, 4, 16, 16)
    assert batch["caption"] == ["caption 0", "caption 1", "caption 2", "caption 3"]
    assert batch["key"] == ["a/c0", "a/c1", "b/c2", "b/c3"]


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv"])
def test_folder_with_a_captions_file(tmp_path, kind):
    for i in range(3):
        write_video(tmp_path / f"v{i}.mp4", clip(i))
    caps = {f"v{i}.mp4": f"from file {i}" for i in range(2)}  # v2 has no caption
    if kind == "json":
        (tmp_path / "captions.json").write_text(json.dumps(caps))
    elif kind == "jsonl":
        lines = [json.dumps({"file": k, "caption": v}) for k, v in caps.items()]
        (tmp_path / "captions.jsonl").write_text("\n".join(lines))
    else:
        with open(tmp_path / "captions.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["filename", "text"])
            w.writerows(caps.items())
    ds = VideoDataset(VideoDataConfig(source=str(tmp_path), shuffle=False, **SMALL))
    assert [r.caption for r in ds.records] == ["from file 0", "from file 1", None]
    assert ds.records[2].error[0] == "missing_caption"


def test_csv_and_jsonl_manifests_with_relative_and_absolute_paths(tmp_path, clips):
    rows = [
        {"path": "a/c0.mp4", "caption": "zero", "aesthetic": "6.5"},
        {"path": str(clips / "b" / "c2.mp4"), "caption": "two", "aesthetic": "4.0"},
    ]
    with open(clips / "list.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "caption", "aesthetic"])
        w.writeheader()
        w.writerows(rows)
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    csv_ds = VideoDataset(VideoDataConfig(source=str(clips / "list.csv"), shuffle=False, **SMALL))
    assert [r.key for r in csv_ds.records] == ["a/c0", "b/c2"]
    assert csv_ds.records[0].meta == {"aesthetic": "6.5"}
    assert first_batch(csv_ds, 2)["caption"] == ["zero", "two"]
    cfg = VideoDataConfig(
        source=str(tmp_path / "list.jsonl"), media_root=str(clips), shuffle=False, **SMALL
    )
    jsonl_ds = VideoDataset(cfg)
    assert jsonl_ds.records[0].location == str(clips / "a" / "c0.mp4")
    assert jsonl_ds.records[2].error[0] == "bad_record"  # the broken line is kept, as bad
    batch = first_batch(jsonl_ds, 3)  # bad row skipped, stream wraps to the next epoch
    assert batch["caption"] == ["zero", "two", "zero"]
    assert batch["_events"][0][1] == "bad_record"


def test_webvid_csv_columns_work_out_of_the_box(tmp_path):
    (tmp_path / "0001").mkdir()
    write_video(tmp_path / "0001" / "31353427.mp4", clip(0))
    header = ["videoid", "contentUrl", "duration", "page_dir", "name"]
    row = ["31353427", "https://example.com/31353427.mp4", "PT00H00M15S", "0001", "Aerial view"]
    with open(tmp_path / "results_2M_val.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([header, row])
    remote = list_records(VideoDataConfig(source=str(tmp_path / "results_2M_val.csv")), ("mp4",))
    assert remote[0].location == row[1] and remote[0].caption == "Aerial view"
    assert remote[0].key == "31353427"
    cfg = VideoDataConfig(
        source=str(tmp_path / "results_2M_val.csv"), media_root=str(tmp_path), **SMALL
    )
    local = VideoDataset(cfg)
    assert local.records[0].location == str(tmp_path / "0001" / "31353427.mp4")
    assert first_batch(local, 1)["key"] == ["31353427"]


def test_manifest_errors_name_the_fix(tmp_path):
    (tmp_path / "x.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="path_column"):
        VideoDataset(VideoDataConfig(source=str(tmp_path / "x.csv")))
    (tmp_path / "y.csv").write_text("path,bar\na.mp4,2\n")
    with pytest.raises(ValueError, match="caption_column"):
        VideoDataset(VideoDataConfig(source=str(tmp_path / "y.csv")))
    with pytest.raises(ValueError, match="no column 'clip'"):
        VideoDataset(VideoDataConfig(source=str(tmp_path / "y.csv"), path_column="clip"))
    with pytest.raises(ValueError, match="no media files"):
        VideoDataset(VideoDataConfig(source=str(tmp_path)))


def test_brace_expansion(monkeypatch):
    monkeypatch.setenv("MCM_ALLOW_PIPE", "1")  # pipe: URLs are opt-in
    assert expand_braces("s-{00..02}.tar") == ["s-00.tar", "s-01.tar", "s-02.tar"]
    assert expand_braces("{a,b}/{8..10}.tar") == [
        "a/8.tar", "a/9.tar", "a/10.tar", "b/8.tar", "b/9.tar", "b/10.tar",
    ]  # fmt: skip
    assert expand_urls("x-{0..1}.tar::pipe:cat y.tar") == ["x-0.tar", "x-1.tar", "pipe:cat y.tar"]


def _tar(samples: dict[str, dict[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for key, fields in samples.items():
            for ext, data in fields.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_tar_samples_group_by_key():
    data = _tar({"d/0001": {"mp4": b"v", "txt": b"t"}, "d/0002": {"seg.mp4": b"w", "json": b"{}"}})
    samples = list(iter_tar_samples(io.BytesIO(data)))
    assert samples == [
        ("d/0001", {"mp4": b"v", "txt": b"t"}),
        ("d/0002", {"seg.mp4": b"w", "json": b"{}"}),
    ]


def test_pack_then_read_shards_locally_and_through_pipe(tmp_path, clips, monkeypatch):
    monkeypatch.setenv("MCM_ALLOW_PIPE", "1")  # pipe: URLs are opt-in
    cfg = VideoDataConfig(source=str(clips), **SMALL)
    writer, report = pack_source(cfg, tmp_path / "shards", shard_size=3)
    assert report.good == 4 and len(writer.paths) == 2
    pattern = writer.pattern()
    assert pattern.endswith("shard-{000000..000001}.tar")
    expected = {f"{'a' if i < 2 else 'b'}/c{i}": f"caption {i}" for i in range(4)}
    for source in (
        pattern,
        str(tmp_path / "shards"),
        f"pipe:cat {writer.paths[0]}::{writer.paths[1]}",
    ):
        ds = VideoDataset(VideoDataConfig(source=source, shuffle=False, **SMALL))
        assert ds.format == "webdataset"
        batch = first_batch(ds, 4)
        assert dict(zip(batch["key"], batch["caption"])) == expected
        assert batch["video"].shape == (4, 3, 4, 16, 16)
    # packed clips decode to the same tensors as the folder they came from
    folder = first_batch(
        VideoDataset(
            VideoDataConfig(source=str(clips), shuffle=False, crop="center", start="first", **SMALL)
        ),
        4,
    )
    shards = first_batch(
        VideoDataset(
            VideoDataConfig(source=pattern, shuffle=False, crop="center", start="first", **SMALL)
        ),
        4,
    )
    assert torch.equal(folder["video"], shards["video"])


def test_webdataset_bad_members_and_truncated_shard(tmp_path):
    good = io.BytesIO()
    write_video(tmp_path / "g.mp4", clip(0))
    samples = {
        "k0": {"mp4": (tmp_path / "g.mp4").read_bytes(), "txt": b"fine"},
        "k1": {"mp4": b"not a video", "txt": b"broken"},
        "k2": {"txt": b"no media"},
        "k3": {
            "mp4": (tmp_path / "g.mp4").read_bytes(),
            "json": json.dumps({"caption": "from json"}).encode(),
        },
        "k4": {"mp4": (tmp_path / "g.mp4").read_bytes()},
    }
    (tmp_path / "s0.tar").write_bytes(_tar(samples))
    data = _tar({"k5": {"mp4": (tmp_path / "g.mp4").read_bytes() * 3, "txt": b"cut"}})
    (tmp_path / "s1.tar").write_bytes(data[:2000])
    del good
    ds = VideoDataset(VideoDataConfig(source=str(tmp_path / "s{0..1}.tar"), shuffle=False, **SMALL))
    ds.spec.one_pass, ds.spec.batch_size = True, 8
    batches = list(ds)
    assert [b for batch in batches for b in batch["caption"]] == ["fine", "from json"]
    reasons = {
        name.rsplit("/", 1)[-1]: reason
        for batch in batches
        for name, reason, _, _ in batch["_events"]
    }
    assert reasons == {
        "s0.tar:k1": "undecodable",
        "s0.tar:k2": "no_media",
        "s0.tar:k4": "missing_caption",
        "s1.tar": "bad_shard",
    }


def test_resampled_shards_and_rank_split(tmp_path):
    with ShardWriter(str(tmp_path), max_count=2) as w:
        for i in range(8):
            w.write(f"k{i}", {"txt": f"{i}".encode()})
    urls = w.paths
    assert len(urls) == 4

    def keys(rank, world, resampled=False, n=6, shuffle=False):
        it = webdataset_stream(urls, 0, shuffle, resampled, 4, rank, world, 0, 1)
        return [next(it).payload[1] for _ in range(n)]

    r0, r1 = keys(0, 2, n=4), keys(1, 2, n=4)
    assert sorted(r0 + r1) == [f"k{i}" for i in range(8)]  # the first epoch splits exactly
    shuffled = keys(0, 1, n=8, shuffle=True)
    assert shuffled == keys(0, 1, n=8, shuffle=True) != keys(0, 1, n=8)  # seeded shuffle
    assert keys(0, 2, resampled=True) == keys(0, 2, resampled=True)  # seeded
    assert keys(0, 2, resampled=True, n=30) != keys(1, 2, resampled=True, n=30)


def test_image_folder_with_filters_from_json(tmp_path):
    img = torch.zeros(3, 24, 24)
    for i, (aes, wm) in enumerate([(6.0, 0.1), (4.0, 0.1), (7.0, 0.9), (None, None)]):
        write_image(tmp_path / f"{i}.png", img)
        (tmp_path / f"{i}.txt").write_text(f"image {i}")
        meta = {k: v for k, v in (("aesthetic", aes), ("pwatermark", wm)) if v is not None}
        (tmp_path / f"{i}.json").write_text(json.dumps(meta))
    write_image(tmp_path / "small.png", torch.zeros(3, 4, 4))
    (tmp_path / "small.txt").write_text("tiny")
    cfg = ImageDataConfig(
        source=str(tmp_path),
        resolution=16,
        shuffle=False,
        min_aesthetic=5.0,
        max_watermark_prob=0.5,
    )
    ds = ImageDataset(cfg)
    ds.spec.one_pass, ds.spec.batch_size = True, 8
    (batch,) = list(ds)
    assert batch["image"].shape == (2, 3, 16, 16)
    assert batch["caption"] == ["image 0", "image 3"]
    reasons = sorted(r for _, r, _, _ in batch["_events"])
    assert reasons == ["filtered_aesthetic", "filtered_watermark", "too_small"]
