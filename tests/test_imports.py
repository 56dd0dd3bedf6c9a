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


# the layers, lowest first (README, Architecture): a module imports only its own layer or lower ones
LAYERS: dict[str, int] = {
    "errors": 0, "db": 0, "sqlfiles": 0, "money": 0,
    "iotpay": 1, "config": 1, "merchants": 1, "fees": 1, "logs": 1, "services": 1, "migrations": 1,
    "ledger": 2, "books": 2,
    "pipeline": 3, "gateway": 3, "broker": 3, "simulator": 3,
    "reports": 4,
    "clock": 5, "demo": 5, "processes": 5, "runtime": 5, "pipeline.workers": 5, "console": 5,
    "cli": 6,
}


def layer(dotted: str) -> int | None:
    """The layer of worker.X[.Y...] (None for names outside the project)."""
    parts = dotted.split(".")
    if parts[0] != "worker" or len(parts) < 2:
        return None
    return LAYERS.get(".".join(parts[1:3]), LAYERS.get(parts[1]))


def test_imports_run_one_way():
    upward = []
    for name, imports in modules().items():
        dotted = name[:-3].replace("/", ".").removesuffix(".__init__")
        mine = layer(dotted)
        if mine is None:
            continue
        upward += [(name, i) for i in imports if (theirs := layer(i)) is not None and theirs > mine]
    assert upward == []
    assert layer("worker.ledger.posting") == 2 and layer("worker.pipeline.workers") == 5  # the table still applies
    assert layer("worker.console.app") == 5 and layer("worker.reports.views") == 4
