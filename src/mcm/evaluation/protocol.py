"""The protocol recorded next to every metric value: which feature network, which weights
(path and sha256), how many videos and frames, at what resolution, resized how.

FVD, FID and CLIPSIM numbers are only comparable under the same protocol (two I3D weight
sets are in use for FVD, and sample counts bias Frechet distances), so nothing is reported
without it.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def weights_record(location: str | Path | None, model_id: str | None = None) -> dict:
    """Where a network's weights came from: {"path", "sha256"} (+ "files" for a directory).

    Args:
        location: a weights file, a model directory (its weight files are hashed; several
            shards give "files" {name: sha256} and a "sha256" over that listing), or None for
            random weights.
        model_id: a hub id the weights were resolved from, recorded as "id" when given.
    """
    record: dict = {"path": None, "sha256": None}
    if model_id is not None:
        record["id"] = model_id
    if location is None:
        record["note"] = "random initialisation (tests only): the numbers mean nothing"
        return record
    path = Path(location)
    record["path"] = str(path.resolve())
    if path.is_file():
        record["sha256"] = sha256_file(path)
        return record
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"No weight file ({', '.join(WEIGHT_SUFFIXES)}) in {str(path)!r}.")
    hashes = {p.name: sha256_file(p) for p in files}
    if len(hashes) == 1:
        record["sha256"] = next(iter(hashes.values()))
    else:
        listing = "\n".join(f"{name} {h}" for name, h in hashes.items())
        record["sha256"] = hashlib.sha256(listing.encode()).hexdigest()
    record["files"] = hashes
    return record


def resolve_pretrained(name_or_path: str) -> tuple[str, str | None]:
    """A local directory/file path, or a hub id -> (local path, hub id or None).

    Hub ids are resolved from the local cache only (this library never downloads
    evaluation networks behind the user's back).
    """
    if Path(name_or_path).exists():
        return str(name_or_path), None
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name_or_path, local_files_only=True), name_or_path
    except Exception as e:
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a local path nor a hub id in the local cache ({e}). "
            "Give a directory saved with save_pretrained, or download the model first."
        ) from e


def metric_record(
    value: float,
    feature_network: str,
    weights: dict,
    num_videos: int,
    num_frames: int,
    resolution: str,
    resize_policy: str,
    **extra,
) -> dict:
    """One metric value with its protocol: the dict stored per metric in metrics.json.

    Args:
        value: the number (NaN, e.g. an accuracy over no eligible video, is stored as None).
        feature_network: what computed the features (architecture and which output).
        weights: :func:`weights_record` of that network.
        num_videos: how many generated videos went in.
        num_frames: frames per generated video as read from the files.
        resolution: the network input size, e.g. "224x224x16" or "224x224".
        resize_policy: how frames were brought to that size (and clips to that length).
        extra: anything else that changes the number (reference set size, input range, ...).
    """
    value = float(value)
    return {
        "value": None if math.isnan(value) else value,  # JSON has no NaN: undefined -> null
        "feature_network": feature_network,
        "weights": weights,
        "num_videos": int(num_videos),
        "num_frames": int(num_frames),
        "resolution": resolution,
        "resize_policy": resize_policy,
        **extra,
    }
