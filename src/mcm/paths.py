"""Where the package's shipped assets live (no heavy imports; any layer may use it)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
WORLD_ASSETS = PACKAGE_DIR / "world" / "assets"
WORLD_TEACHER = WORLD_ASSETS / "teacher"  # a stock diffusers TextToVideoSDPipeline directory
WORLD_WAN_TEACHER = WORLD_ASSETS / "wan_teacher"  # a stock WanPipeline (flow matching)
WORLD_PROBES = WORLD_ASSETS / "probes"
CONFIGS = PACKAGE_DIR / "configs"  # the demo's recipes (configs/world*.yaml link here)


def resolve_teacher(name_or_path: str) -> str:
    """`world` -> the shipped world teacher directory, `world-wan` -> the flow-matching one;
    anything else is returned unchanged.

    Raises:
        FileNotFoundError: `world-wan` while no flow-matching world teacher is shipped.
    """
    if name_or_path == "world-wan":
        if not (WORLD_WAN_TEACHER / "model_index.json").is_file():
            raise FileNotFoundError(
                "No flow-matching world teacher is shipped yet: build one with `mcm world "
                "build --family wan --out DIR` and pass its folder (--teacher DIR)."
            )
        return str(WORLD_WAN_TEACHER)
    return str(WORLD_TEACHER) if name_or_path == "world" else name_or_path
