"""Atomic, prunable training checkpoints.

A checkpoint is a directory ``checkpoint-<step>`` holding safetensors weights and a
``state.pt`` of optimiser/scheduler/RNG states (tensors and plain Python values only, so it
loads with ``weights_only=True``). It is written to a temporary sibling directory
(``.checkpoint-<step>-*``) and renamed into place, so a crash never leaves a half-written
checkpoint under the final name (:func:`write_directory`, which the export uses too);
temporaries a crash left behind are removed when the next run starts.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mcm.errors import ConfigError, UserError

log = logging.getLogger("mcm.train")
_NAME = re.compile(r"^checkpoint-(\d+)$")
_TEMPORARY = re.compile(r"^\.(checkpoint-\d+|export)-")  # what write_directory leaves


class CheckpointError(UserError, RuntimeError):
    """A checkpoint cannot be resumed from; the message names it and the fix."""


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def remove_stale_temporaries(root: str | Path) -> list[Path]:
    """Delete the temporaries (``.checkpoint-*``, ``.export-*``) an interrupted
    :func:`write_directory` left under ``root``."""
    root = Path(root)
    stale = [p for p in root.iterdir() if p.is_dir() and _TEMPORARY.match(p.name)]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def resume(root: str | Path, which: str, load: Callable[[Path], None]) -> Path | None:
    """``load`` the checkpoint ``--resume which`` names; returns it, or None when ``which``
    is ``latest`` and ``root`` holds no checkpoint yet (a warning: the run starts afresh).

    ``latest`` tries the checkpoints newest first and skips one that does not load (with a
    warning that names it and why); a ConfigError (the config, not the checkpoint, is
    wrong: no older one would do) stops at once."""
    if which == "latest" and not list_checkpoints(root):
        log.warning("--resume latest: no checkpoint under %s yet; starting afresh.", root)
        return None
    candidates = resume_candidates(root, which)
    failures = []
    for path in candidates:
        try:
            load(path)
            return path
        except ConfigError:
            raise
        except Exception as e:  # a corrupt or partial checkpoint: try the one before
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if len(candidates) == 1:
                raise CheckpointError(f"Cannot resume from {path}: {reason}") from e
            failures.append(f"{path.name} ({reason})")
            log.warning("Skipping %s, which does not load: %s", path, reason)
    raise CheckpointError(
        f"No checkpoint under {root} loads ({'; '.join(failures)}); "
        "pass one with --resume PATH or train without --resume."
    )


def resume_candidates(root: str | Path, which: str) -> list[Path]:
    """What ``--resume which`` may load, in order: ``latest`` -> every checkpoint under
    ``root``, newest first (a newer one that does not load is skipped); a path -> it."""
    if which == "latest":
        resolve_checkpoint(root, which)  # the error when there is none
        return list(reversed(list_checkpoints(root)))
    return [resolve_checkpoint(root, which)]


def resolve_checkpoint(root: str | Path, which: str) -> Path:
    """``latest`` -> the newest checkpoint under root; anything else is a checkpoint path."""
    if which == "latest":
        found = list_checkpoints(root)
        if not found:
            raise FileNotFoundError(
                f"--resume latest: no checkpoint-<step> directory under {str(root)!r}; "
                "train without --resume first, or pass a checkpoint path."
            )
        return found[-1]
    path = Path(which)
    if not (path / "state.pt").is_file():
        raise FileNotFoundError(
            f"--resume {which!r} is not a checkpoint directory (no state.pt inside); "
            "pass a checkpoint-<step> directory or 'latest'."
        )
    return path


def write_directory(final: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary sibling of ``final``, then rename it to ``final``.

    A ``final`` that exists already is first renamed aside, so ``final`` always holds a
    complete directory but for the moment between two renames; a failed write leaves
    nothing behind."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        write(tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_checkpoint(root: str | Path, step: int, write: Callable[[Path], None], keep: int) -> Path:
    """:func:`write_directory` ``root/checkpoint-<step>``, then delete all but the newest
    ``keep`` checkpoints."""
    final = write_directory(Path(root) / f"checkpoint-{step}", write)
    for old in list_checkpoints(root)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


def _named(path: Path, load):
    """``load(path)``, or a CheckpointError that names the file when it does not load."""
    try:
        return load(path)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path} does not load ({type(e).__name__}: {first})") from e


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    return _named(path, lambda p: load_file(str(p)))


def save_state(state: dict, path: Path) -> None:
    torch.save(state, path)


def load_state(path: Path) -> dict:
    return _named(path, lambda p: torch.load(p, map_location="cpu", weights_only=True))
