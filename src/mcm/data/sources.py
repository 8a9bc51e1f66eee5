"""Indexable sources: a folder of media with captions, CSV and JSONL manifests.

Each becomes a list of ``Record``s (what to read, not the media itself); decoding happens
later, in the workers. Problems with one row or one file are carried by its record and
reported when the sample is visited, so listing never fails on bad data; problems with the
source as a whole (nothing there, no path or caption column) raise ``ValueError`` naming
the fix.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mcm.errors import InputError

VIDEO_EXTS = ("mp4", "webm", "mkv", "mov", "avi", "m4v", "gif")
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp")
CAPTIONS_FILES = ("captions.jsonl", "captions.csv", "captions.json")

PATH_COLUMNS = (
    "path",
    "file",
    "filepath",
    "file_name",
    "filename",
    "video",
    "video_path",
    "image",
    "image_path",
    "url",
    "contentUrl",
    "URL",
)
CAPTION_COLUMNS = ("caption", "text", "prompt", "name", "TEXT", "title")
KEY_COLUMNS = ("key", "videoid", "id")


@dataclass(frozen=True)
class Record:
    """One sample to read.

    Attributes:
        key: stable sample id (relative path without extension, or the manifest's key column).
        location: file path or http(s) URL of the media.
        caption: the caption text when the manifest carries it.
        caption_path: a ``.txt`` file to read the caption from (folder sources).
        meta: the other manifest columns (scores, width, height, ...).
        meta_path: a same-name ``.json`` of metadata (folder sources, as img2dataset writes);
            read only when a score filter needs it.
        error: ``(reason, detail)`` when the row itself is unusable.
    """

    key: str
    location: str
    caption: str | None = None
    caption_path: str | None = None
    meta: dict = field(default_factory=dict)
    meta_path: str | None = None
    error: tuple[str, str] | None = None


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def detect_format(source: str) -> str:
    """The source format ``auto`` resolves to (see ``VideoDataConfig.format``)."""
    if source.startswith("pipe:") or "{" in source or "::" in source:
        return "webdataset"
    lower = source.lower().split("?")[0]
    if lower.endswith((".tar", ".tar.gz", ".tgz")):
        return "webdataset"
    if lower.endswith(".csv"):
        return "csv"
    if lower.endswith((".jsonl", ".json")):
        return "jsonl"
    path = Path(source)
    if path.is_dir():
        names = os.listdir(path)
        if any(n.endswith(".tar") for n in names) and not any(
            n.lower().rsplit(".", 1)[-1] in VIDEO_EXTS + IMAGE_EXTS for n in names
        ):
            return "webdataset"
        return "folder"
    if is_url(source):
        raise InputError(
            f"cannot tell the format of {source!r}: set format to webdataset, csv or jsonl."
        )
    raise FileNotFoundError(f"data source {source!r} does not exist: check the path.")


def list_records(config, media_exts: tuple[str, ...]) -> list[Record]:
    """The records of a folder/CSV/JSONL source described by ``config`` (a data config)."""
    fmt = config.format if config.format != "auto" else detect_format(config.source)
    if fmt == "folder":
        return folder_records(config, media_exts)
    if fmt in ("csv", "jsonl"):
        path = Path(config.source)
        if not path.is_file():
            raise FileNotFoundError(f"manifest {config.source!r} does not exist.")
        rows = read_manifest(path, fmt)
        root = Path(config.media_root) if config.media_root else path.parent
        return manifest_records(
            rows, root, config.path_column, config.caption_column, path, bool(config.media_root)
        )
    raise InputError(f"{fmt!r} is not an indexable source format (folder, csv, jsonl).")


def folder_records(config, media_exts: tuple[str, ...]) -> list[Record]:
    """Media files under ``config.source`` (recursively, sorted) with their captions."""
    root = Path(config.source)
    if not root.is_dir():
        raise FileNotFoundError(f"folder {config.source!r} does not exist.")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().rsplit(".", 1)[-1] in media_exts:
                files.append(Path(dirpath) / name)
    if not files:
        raise InputError(
            f"no media files ({', '.join(media_exts)}) under {root}: check the source folder."
        )
    captions = _captions_mapping(root, config)
    records = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        key = rel.rsplit(".", 1)[0]
        if captions is None:
            txt, meta = f.with_suffix(".txt"), f.with_suffix(".json")
            meta_path = str(meta) if meta.is_file() else None
            records.append(Record(key, str(f), caption_path=str(txt), meta_path=meta_path))
            continue
        caption = captions.get(rel, captions.get(key, captions.get(f.name)))
        error = None if caption is not None else ("missing_caption", "not in the captions file")
        records.append(Record(key, str(f), caption=caption, error=error))
    return records


def _captions_mapping(root: Path, config) -> dict[str, str] | None:
    """``{relative path, key or file name: caption}`` from a captions file, or None when
    captions are same-name ``.txt`` files."""
    path = Path(config.captions_file) if config.captions_file else None
    if path is None:
        path = next((root / n for n in CAPTIONS_FILES if (root / n).is_file()), None)
        if path is None:
            return None
    elif not path.is_file():
        raise FileNotFoundError(f"captions_file {str(path)!r} does not exist.")
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):
            return {str(k): str(v) for k, v in data.items()}
        rows = data
    else:
        rows = read_manifest(path, "csv" if path.suffix == ".csv" else "jsonl")
    records = manifest_records(rows, root, config.path_column, config.caption_column, path)
    mapping = {}
    for rec in records:
        if rec.caption is None:
            continue
        loc = Path(rec.location)
        rel = loc.relative_to(root).as_posix() if loc.is_relative_to(root) else loc.as_posix()
        mapping[rel] = rec.caption
    return mapping


def read_manifest(path: Path, fmt: str) -> list[dict | tuple[str, str]]:
    """Rows of a CSV or JSONL (or JSON list) manifest as dicts; an unparsable JSONL line is
    kept as ``("bad_record", message)`` so it is counted, not lost."""
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return list(json.loads(text))
    rows: list[dict | tuple[str, str]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            rows.append(row)
        except ValueError as e:
            rows.append(("bad_record", f"{path.name} line {lineno}: {e}"))
    return rows


def _pick(columns, wanted: str | None, candidates: tuple[str, ...], what: str, path: Path):
    if wanted is not None:
        if wanted not in columns:
            raise InputError(
                f"{path.name} has no column {wanted!r} ({what}); its columns are {sorted(columns)}."
            )
        return wanted
    return next((c for c in candidates if c in columns), None)


def manifest_records(
    rows: list,
    root: Path,
    path_column: str | None,
    caption_column: str | None,
    manifest: Path,
    local_webvid: bool = False,
) -> list[Record]:
    """Records from manifest rows. Relative paths are joined to ``root``.

    A WebVid CSV (``videoid``, ``page_dir``, ``contentUrl``, ``name``) reads the local files
    ``{root}/{page_dir}/{videoid}.mp4`` when ``local_webvid`` (a ``media_root`` was given) or
    when it has no ``contentUrl``, else streams ``contentUrl``.
    """
    columns: set[str] = set()
    for row in rows:
        if isinstance(row, dict):
            columns |= set(row)
    if not columns:
        raise InputError(f"manifest {manifest} has no rows.")
    path_col = _pick(columns, path_column, PATH_COLUMNS, "path_column", manifest)
    webvid = path_column is None and {"videoid", "page_dir"} <= columns
    webvid = webvid and (local_webvid or path_col is None)
    if path_col is None and not webvid:
        raise InputError(
            f"{manifest.name}: no path column among {sorted(columns)}; set path_column to the "
            f"column holding file paths or URLs (looked for {list(PATH_COLUMNS)})."
        )
    cap_col = _pick(columns, caption_column, CAPTION_COLUMNS, "caption_column", manifest)
    if cap_col is None:
        raise InputError(
            f"{manifest.name}: no caption column among {sorted(columns)}; set caption_column "
            f"(looked for {list(CAPTION_COLUMNS)})."
        )
    key_col = next((c for c in KEY_COLUMNS if c in columns), None)
    records = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            records.append(Record(f"row{i:08d}", f"{manifest}#{i}", error=row))
            continue
        loc = (
            f"{row.get('page_dir', '')}/{row.get('videoid', '')}.mp4"
            if webvid
            else row.get(path_col)
        )
        loc = "" if loc is None else str(loc).strip()
        if not loc:
            records.append(
                Record(f"row{i:08d}", f"{manifest}#{i}", error=("bad_record", f"row {i}: no path"))
            )
            continue
        if not is_url(loc) and not os.path.isabs(loc):
            loc = str(root / loc)
        if key_col is not None and str(row.get(key_col, "")).strip():
            key = str(row[key_col]).strip()
        elif is_url(loc):
            key = f"row{i:08d}"
        else:
            p = Path(loc)
            rel = p.relative_to(root).as_posix() if p.is_relative_to(root) else p.name
            key = rel.rsplit(".", 1)[0]
        caption = row.get(cap_col)
        caption = None if caption is None else str(caption)
        meta = {k: v for k, v in row.items() if k != cap_col and (webvid or k != path_col)}
        error = ("missing_caption", f"row {i}: empty {cap_col!r}") if not caption else None
        records.append(Record(key, loc, caption=caption, meta=meta, error=error))
    return records
