"""rlaif's modules import each other without cycles, and only down the flow.

Every import statement counts, the ones inside functions too: a function-level import only hides a cycle until
the function runs (or until someone hoists it). `from pkg import name` counts as an import of the module
`pkg.name` when that is a module, else of `pkg`; a package's `__init__` importing its own submodules is fine
only while those do not import it back.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "rlaif"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (a package is its `__init__.py`)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module `name` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                parent = ".".join(base + ([node.module] if node.module else []))
            else:
                parent = node.module
            targets = [f"{parent}.{a.name}" if f"{parent}.{a.name}" in modules else parent for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import rlaif.x.y` names rlaif.x.y; an attribute: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = module_names()
    return {name: imports(name, path, modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every import cycle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_relative_and_function_level_imports():
    """The walker itself: relative imports resolved, `from . import x` a module, function-level imports counted."""
    edges = graph()
    assert "rlaif.errors" in edges["rlaif.cli"]  # from .errors import UserError
    assert "rlaif.rundir.atomic" in edges["rlaif.train"]  # from ..rundir import atomic (a module, not the package)
    assert "rlaif.evaluate.commands" in edges["rlaif.cli"]  # at the end of cli.py
    assert "rlaif.pipeline" in edges["rlaif.cli"]  # inside `run`
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    """No module imports, directly or through others, a module that imports it back (each cycle listed)."""
    edges = graph()
    found = [" <-> ".join(c) + ": " + "; ".join(f"{m} -> {', '.join(sorted(edges[m] & set(c)))}" for m in c)
             for c in cycles(edges)]
    assert not found, "import cycles:\n" + "\n".join(found)


# The rooms of the package from the top of the flow to the bottom (docs/architecture.md). A module may import its own
# room and the rooms below it. The base modules (errors, terminal output, the run log, key redaction, statistics, the
# bf16 check) are at the bottom: everything may use them, they use nothing above.
ROOMS = ["cli", "pipeline", "report", "evaluate", "train", "human", "export", "stages", "backends", "rundir", "spec"]
BASE = {"rlaif", "rlaif.errors", "rlaif.progress", "rlaif.runlog", "rlaif.redact", "rlaif.stats", "rlaif.hardware"}


def rank(module: str) -> int:
    """Height of a module's room: 0 for the base, len(ROOMS) for cli. An unknown room is an error (add it to ROOMS)."""
    if module in BASE:
        return 0
    room = module.split(".")[1]
    assert room in ROOMS, f"{module}: room {room!r} is not in tests/test_imports.py ROOMS; place it in the flow"
    return len(ROOMS) - ROOMS.index(room)


def upward(edges: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a room above its own (`__main__` entry points excepted: nothing imports them)."""
    return [f"{m} ({m.split('.')[1] if rank(m) else 'base'}) imports {d} ({d.split('.')[1] if rank(d) else 'base'})"
            for m, deps in sorted(edges.items()) if not m.endswith(".__main__")
            for d in sorted(deps) if rank(d) > rank(m)]


def test_the_rank_check_sees_an_upward_import():
    """The check itself: an import from a higher room is listed, one from a lower room or the base is not."""
    assert upward({"rlaif.stages.judge": {"rlaif.train.stage", "rlaif.backends.base", "rlaif.errors"}}) == [
        "rlaif.stages.judge (stages) imports rlaif.train.stage (train)"]
    assert upward({"rlaif.errors": {"rlaif.spec.config"}}) == ["rlaif.errors (base) imports rlaif.spec.config (spec)"]
    assert upward({"rlaif.cli": {"rlaif.pipeline"}, "rlaif.train.__main__": {"rlaif.cli"}}) == []


def test_imports_point_down_the_flow():
    """cli -> pipeline -> report -> evaluate -> train -> human -> export -> stages -> backends -> rundir -> spec -> base."""
    found = upward(graph())
    assert not found, "upward imports (move the shared helper into the lower room):\n" + "\n".join(found)
