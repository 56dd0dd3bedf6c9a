"""`iotledger export` from the command line: files, output, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.test_reconcile_seed import at, post


def run(args: list[str], db_url: str, redis_url: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_SETTLEMENT_TZ="America/Toronto")
    return subprocess.run([str(Path(sys.executable).parent / "iotledger"), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_export_command(db_url: str, redis_url: str, conn: psycopg.Connection, tmp_path: Path) -> None:
    post(conn, "PC-1", 12345, at("2026-11-20 23:59:59"))
    post(conn, "RP-1", 345, at("2026-11-20 23:59:59"), pay_type="refund", original="PC-1")
    first = run(["export", "--date", "2026-11-20"], db_url, redis_url, tmp_path)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "reports" / "2026-11-20"
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest-2026-11-20.json", "settlement-2026-11-20.csv", "settlement-2026-11-20.xlsx", "summary-2026-11-20.csv"]
    assert first.stdout.startswith("final settlement files for 2026-11-20 (America/Toronto, version 1)")
    assert "CAD: gross 123.45, refunds 3.45, net 120.00" in first.stdout
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = run(["export", "--date", "2026-11-20", "--out", "reports"], db_url, redis_url, tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("unchanged settlement files")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    same = run(["export", "--date", "2026-11-20", "--restate"], db_url, redis_url, tmp_path)
    assert same.returncode == 0 and same.stdout.startswith("nothing to restate for 2026-11-20")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    with conn.transaction():  # the gateway's word on the order changed: a restatement has something to say
        conn.execute("UPDATE orders SET channel = 'UPI_EX' WHERE pay_order_id = 'PC-1'")
    restated = run(["export", "--date", "2026-11-20", "--restate"], db_url, redis_url, tmp_path)
    assert restated.returncode == 0 and "restated settlement files for 2026-11-20 (America/Toronto, version 2)" \
        in restated.stdout
    assert "supersedes version 1: 0 row(s) added, 0 removed, 1 changed" in restated.stdout
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.name in before} == before  # version 1 stays
    bad = run(["export", "--date", "2026-13-01"], db_url, redis_url, tmp_path)
    assert bad.returncode == 2 and "--date" in bad.stderr
