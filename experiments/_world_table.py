"""``benchmarks/world_table.py`` as a module, for the experiments that train, export and score
one student of the demo's recipe with its machinery (``world_variant.py``,
``world_trajectory.py``, ``sampling_seeds.py``).

It is loaded from its file, once per process (as the module ``world_table``): the
benchmark stays a plain script in benchmarks/, and nothing is added to ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "world_table.py"


def load() -> ModuleType:
    """The module of ``benchmarks/world_table.py`` (imported on the first call)."""
    if "world_table" not in sys.modules:
        spec = importlib.util.spec_from_file_location("world_table", PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["world_table"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["world_table"]
            raise
    return sys.modules["world_table"]
