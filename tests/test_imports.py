"""rlaif's modules import each other without cycles.

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
    assert "rlaif.atomic" in edges["rlaif.train"]  # from .. import atomic (a module, not the package)
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
