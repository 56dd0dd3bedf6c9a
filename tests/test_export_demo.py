"""`iotledger demo` end to end: real simulator, gunicorn ingress, dramatiq workers; its files and exit code."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest


@pytest.mark.slow
def test_a_short_demo_runs_end_to_end(db_url: str, redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_DATA_DIR=str(tmp_path / "data"),
               IOTLEDGER_SETTLEMENT_TZ="America/Toronto")
    out = tmp_path / "reports"
    proc = subprocess.run([str(Path(sys.executable).parent / "iotledger"), "demo", "--in-place", "--orders", "10",
                           "--out", str(out), "--json"], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["ok"] and result["problems"] == []
    assert result["reconcile"]["counts"] == {"amount_mismatch": 1, "expected_not_paid": 1}
    assert result["forged_status"] in (401, 403)
    # the summary a newcomer reads names the files and the findings
    assert "settlement files ... final" in proc.stderr and "lost notify" in proc.stderr  # the prose, on stderr
    assert len(proc.stdout.strip().splitlines()) == 1  # --json: stdout is one JSON object
    assert "demo" in proc.stderr and "11/11" in proc.stderr  # the progress bar ran to the end

    day = result["business_date"]
    folder = out / day
    manifest = json.loads((folder / f"manifest-{day}.json").read_text())
    assert manifest["status"] == "final"
    for name, meta in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == meta["sha256"]
    with open(folder / f"settlement-{day}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with psycopg.connect(db_url) as conn:
        (entries,) = conn.execute("SELECT count(*) FROM journal_entries").fetchone()
        (net,) = conn.execute(
            "SELECT sum(p.amount) FROM postings p JOIN accounts a ON a.id = p.account_id"
            " WHERE a.kind = 'clearing' AND a.currency = 'CAD'").fetchone()
        (lost_source,) = conn.execute("SELECT source FROM orders WHERE pay_order_id = %s",
                                      (result["lost_order"],)).fetchone()
        (inbox_refused,) = conn.execute("SELECT count(*) FROM inbox WHERE state = 'failed'").fetchone()
    assert len(rows) == entries == result["entries"] >= 10 + 4 + 1
    assert {r["pay_type"] for r in rows} == {"pay", "refund"}  # IOTPay notifies a void as a full refund
    assert manifest["totals"]["CAD"]["net_cents"] == net
    cad = [r for r in rows if r["currency"] == "CAD"]
    signed = sum(int(r["amount_cents"]) * (1 if r["direction"] == "in" else -1) for r in cad)
    assert signed == net
    assert lost_source == "query"  # recovered by the sweep
    assert inbox_refused == 0  # the forged notify never reached the inbox
    # the audit finance runs passes on the demo's series, and names a deleted file
    verify = [str(Path(sys.executable).parent / "iotledger"), "files", "verify", "--out", str(out)]
    ok = subprocess.run(verify, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("ok"), ok.stdout + ok.stderr
    (folder / f"summary-{day}.csv").unlink()
    bad = subprocess.run(verify, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and f"summary-{day}.csv is missing" in bad.stdout
