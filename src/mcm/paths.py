"""Where the package's shipped assets live (no heavy imports; any layer may use it)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WORLD_ASSETS = PACKAGE_DIR / "world" / "assets"
WORLD_TEACHER = WORLD_ASSETS / "teacher"  # a stock diffusers TextToVideoSDPipeline directory
WORLD_PROBES = WORLD_ASSETS / "probes"
CONFIGS = PACKAGE_DIR / "configs"  # the demo's recipes (configs/world*.yaml link here)


def resolve_teacher(name_or_path: str) -> str:
    """`world` -> the shipped world teacher directory; anything else is returned unchanged."""
    return str(WORLD_TEACHER) if name_or_path == "world" else name_or_path
