"""The test suite's own layout: tests mirror the package, and test modules share fakes through tests/fakes.py and
fixtures through conftest.py, never by importing one another (a test module imported elsewhere runs its tests'
module-level code twice and ties unrelated files together)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "rlaif"


def imported_test_modules(path: Path) -> set[str]:
    """The test modules (`test_*`) that the file at `path` imports anywhere in it, function-level imports too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from .test_x import y`, `from . import test_x`
                names = [f"{node.module or ''}.{alias.name}" for alias in node.names]
            else:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.strip(".").split(".")
            if (getattr(node, "level", 0) or parts[0] == "tests") and any(part.startswith("test_") for part in parts):
                found.add(name.strip("."))
    return found


def test_no_test_module_imports_another():
    offenders = {str(p.relative_to(TESTS)): sorted(imported_test_modules(p)) for p in sorted(TESTS.rglob("*.py"))}
    assert not {p: names for p, names in offenders.items() if names}, "move shared helpers to tests/fakes.py or conftest.py"


def test_the_check_sees_every_spelling(tmp_path):
    """The rule above would pass on any suite if it missed an import form: each one is caught here."""
    for source in ("from tests.stages.test_judge import BiasedJudge", "import tests.test_resume",
                   "def f():\n    from tests.report.test_report import synthetic_run", "from .test_openai import Handler",
                   "from tests.stages import test_judge"):
        path = tmp_path / "m.py"
        path.write_text(source + "\n")
        assert imported_test_modules(path), source
    path = tmp_path / "ok.py"
    path.write_text("from tests.fakes import BiasedJudge\nfrom tests.conftest import write_pipeline\nimport testing_lib\n")
    assert imported_test_modules(path) == set()


def test_every_room_of_the_package_has_its_tests():
    rooms = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert len(rooms) >= 8, rooms  # spec, rundir, backends, stages, export, human, train, evaluate, report
    missing = [room for room in rooms if not list((TESTS / room).glob("test_*.py"))]
    assert not missing, f"rlaif/<room>/ without tests/<room>/test_*.py: {missing}"
