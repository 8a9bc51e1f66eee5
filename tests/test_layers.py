"""The package's floors (docs/ARCHITECTURE.md): no module imports from a floor above its own,
the packages of one floor import each other without a cycle, and imports sit at the top of
a module except for heavy optional dependencies and the CLI's lazy loading of its commands.

The test reads the source with ``ast``; nothing is imported.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Bottom to top. A module belongs to the floor of the longest prefix that names it.
FLOORS = (
    ("mcm.diffusion", "mcm.paths", "mcm.errors", "mcm.schema", "mcm.cpus"),
    ("mcm.motion", "mcm.adversarial"),
    ("mcm.models",),
    ("mcm.data", "mcm.media"),
    ("mcm.training",),
    ("mcm.world", "mcm.evaluation", "mcm.evaluate", "mcm.report"),
    ("mcm.commands", "mcm.demo", "mcm.app"),
    ("mcm.cli", "mcm.__main__", "mcm"),
)
# Modules that may import inside functions: the CLI loads each command's module when the
# command runs, and a command loads the library only then, so `mcm --help` stays fast.
LAZY = ("mcm.cli", "mcm.commands")
# Third-party packages that are optional or heavy enough to load only when a feature needs them.
OPTIONAL = {"bitsandbytes", "wandb", "huggingface_hub", "transformers", "torch.distributed"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "mcm").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _unit(module: str) -> str:
    """The unit a module belongs to: the longest floor member that is a prefix of it."""
    members = [m for floor in FLOORS for m in floor]
    found = [m for m in members if module == m or (m != "mcm" and module.startswith(m + "."))]
    if not found:
        raise AssertionError(f"{module} is on no floor: add it to FLOORS in {__file__}.")
    return max(found, key=len)


def _floor(module: str) -> int:
    unit = _unit(module)
    return next(i for i, floor in enumerate(FLOORS) if unit in floor)


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path):
    """(imported module, line, whether at module level) for every import in the file.

    ``from a import b`` counts as importing ``a.b`` when that is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set()
    for node in tree.body:
        top.add(node)
        if isinstance(node, ast.If | ast.Try):  # TYPE_CHECKING guards, optional imports
            top.update(ast.walk(node))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, node in top
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, path, node)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full if full in MODULES else base), node.lineno, node in top


def _mcm_edges():
    for module, path in MODULES.items():
        for target, line, at_top in _imports(module, path):
            if target == "mcm" or target.startswith("mcm."):
                yield module, target, line, at_top


def test_every_module_is_on_a_floor():
    for module in MODULES:
        _floor(module)


def test_no_module_imports_from_a_floor_above_its_own():
    violations = [
        f"{path_of(m)}:{line}: {m} (floor {_floor(m)}) imports {t} (floor {_floor(t)})"
        for m, t, line, _ in _mcm_edges()
        if _floor(t) > _floor(m)
    ]
    assert not violations, "\n".join(violations)


def test_the_units_of_a_floor_form_no_cycle():
    graph: dict[str, set[str]] = {}
    for m, t, _, _ in _mcm_edges():
        a, b = _unit(m), _unit(t)
        if a != b and _floor(a) == _floor(b):
            graph.setdefault(a, set()).add(b)
    assert _cycles(graph) == []


def test_the_modules_form_no_cycle():
    graph: dict[str, set[str]] = {}
    for m, t, _, _ in _mcm_edges():
        if t != m and t in MODULES and MODULES[t].name != "__init__.py":
            graph.setdefault(m, set()).add(t)
    assert _cycles(graph) == []


def test_imports_are_at_the_top_of_a_module():
    late = []
    for module, path in MODULES.items():
        if module.startswith(LAZY):
            continue
        for target, line, at_top in _imports(module, path):
            optional = any(target == o or target.startswith(o + ".") for o in OPTIONAL)
            if not at_top and not optional:
                late.append(f"{path_of(module)}:{line}: {module} imports {target} in a function")
    assert not late, "\n".join(late)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search (one per back edge)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def path_of(module: str) -> str:
    return str(MODULES[module].relative_to(SRC.parent))
