"""Typed configs from YAML, with validation and `--set a.b=value` overrides.

A config is a tree of config dataclasses (:func:`mcm.schema.config_dataclass`: standard
dataclasses that pydantic validates); they are the single home of defaults and their
documentation. YAML files set only what differs. The file and the overrides are read with
:func:`mcm.schema.read_yaml` / :func:`~mcm.schema.parse_value`, which leave every scalar a
string for the schema to type (``--set train.mixed_precision=no`` is ``"no"``), and the tree
is validated as a whole before anything uses it: every problem is reported, a line each,
with the dotted key, the value and what the key accepts (:class:`ConfigError`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mcm.errors import ConfigError
from mcm.schema import from_dict, parse_value, read_yaml

T = TypeVar("T")


def to_dict(cfg) -> dict:
    """A plain dict (YAML-safe: tuples become lists)."""

    def plain(v):
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def parse_override(text: str) -> tuple[list[str], Any]:
    """'a.b=value' -> (['a', 'b'], value read as YAML by the schema's rules: strings, lists,
    mappings, null; the config's field types then decide what a string means)."""
    if "=" not in text:
        raise ConfigError(
            f"Override {text!r} must look like section.key=value (e.g. train.lr=1e-5)."
        )
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"Override {text!r}: {key!r} is not a dotted key; write section.key=value "
            "(e.g. train.lr=1e-5)."
        )
    return key.split("."), parse_value(raw, key)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b=value` overrides to a nested dict (before validation)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            if node.get(part) is None:  # absent or null: the override starts the section
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                section = ".".join(path[: i + 1])
                raise ConfigError(
                    f"Override {text!r}: {section} is a value, not a section with keys."
                )
        node[path[-1]] = value
    return data


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] = ()) -> T:
    """Load ``cls`` from a YAML file (optional), apply overrides, validate the whole tree."""
    data: Any = {}
    if path is not None:
        data = read_yaml(path)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}: the top level of a config must be a mapping of sections "
                "(e.g. 'train:' with its keys indented below)."
            )
    return from_dict(cls, apply_overrides(data, list(overrides)))


def save_config(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config dict as flat ``section/key`` scalars (what trackers take)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


__all__ = [
    "ConfigError",
    "apply_overrides",
    "flatten",
    "from_dict",
    "load_config",
    "parse_override",
    "save_config",
    "to_dict",
]
