"""The direction of imports: the command line and the composition root are imported by nobody below them."""

from __future__ import annotations

import ast
from pathlib import Path

WORKER = Path(__file__).resolve().parents[1] / "worker"
# the entry points built by worker/runtime.py besides the command line: the `dramatiq` command's module
RUNTIME_USERS = {"worker/pipeline/workers.py"}


def imported(path: Path) -> set[str]:
    """Every module a file imports (at the top or inside a function)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def modules() -> dict[str, set[str]]:
    return {str(p.relative_to(WORKER.parent)): imported(p) for p in sorted(WORKER.rglob("*.py"))}


def test_only_the_command_line_imports_the_command_line():
    offenders = [name for name, imports in modules().items()
                 if not name.startswith("worker/cli/") and any(i == "worker.cli" or i.startswith("worker.cli.")
                                                               for i in imports)]
    assert offenders == []


def test_only_the_entry_points_import_the_composition_root():
    offenders = [name for name, imports in modules().items()
                 if "worker.runtime" in imports and not name.startswith("worker/cli/") and name not in RUNTIME_USERS]
    assert offenders == []


def test_the_database_boundary_imports_no_layer_of_the_project():
    project = {i for i in imported(WORKER / "db.py") if i.startswith("worker")}
    assert project <= {"worker.errors", "worker.errors.ConfigError", "worker.errors.RetryableError"}
