"""Reconciliation: each mismatch class produced once, stored, alerted once, and the CLI's exit code."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.test_reconcile_seed import MCH, TORONTO, at, expect, post
from worker.ledger.outcome import Outcome
from worker.reports.alerts import AlertSink
from worker.reports.reconcile import reconcile

DAY = date(2026, 11, 21)
LEDGER_CLASSES = {
    "paid_not_in_ledger", "parked_without_original", "stuck_pending", "duplicate_merchant_order",
    "refund_beyond_original", "refundable_mismatch", "conflict", "currency_mismatch", "ledger_exception",
    "notify_not_posted", "status_regression", "content_changed",
}
EXPECTED_CLASSES = {"expected_not_paid", "amount_mismatch", "unknown_to_merchant"}


def lost_notify(conn: psycopg.Connection, pay_order_id: str, when, state: str = "dead") -> int:
    """A notify we acknowledged (in the inbox) that died (or still waits) before reaching the ledger."""
    body = json.dumps({"payOrderId": pay_order_id, "mchId": MCH, "amount": 700, "status": 2}).encode()
    reason = "PostgreSQL unavailable (retries exhausted)" if state == "dead" else None
    with conn.transaction():
        return conn.execute(
            "INSERT INTO inbox (body_sha256, body, family, mch_id, pay_order_id, received_at, updated_at, state,"
            " reason, attempts) VALUES (%s, %s, 'v3', %s, %s, %s, %s, %s, %s, 20) RETURNING id",
            (hashlib.sha256(body).digest(), body, MCH, pay_order_id, when, when, state, reason),
        ).fetchone()[0]


def seed_every_class(conn: psycopg.Connection) -> None:
    """One instance of each mismatch class on DAY, plus clean traffic that must not be reported."""
    t = lambda hms: at(f"2026-11-21 {hms}")  # noqa: E731
    clean = [("PC-OK1", 1000, "09:00:00"), ("PC-OK2", 2500, "23:59:59")]
    for oid, amount, hms in clean:
        assert post(conn, oid, amount, t(hms)).outcome is Outcome.POSTED
    assert post(conn, "RP-OK1", 400, t("10:00:00"), pay_type="refund", original="PC-OK1").outcome is Outcome.POSTED
    # next day's first second: belongs to 2026-11-22, must not show up
    post(conn, "PC-NEXT", 100, at("2026-11-22 00:00:00"), status=0)

    lost_notify(conn, "PC-LOST", t("11:00:00"))  # notify_not_posted
    lost_notify(conn, "PC-WAIT", t("11:01:00"), state="queued")  # paid_not_in_ledger
    post(conn, "PC-REG", 1000, t("20:00:00"))
    assert post(conn, "PC-REG", 1000, t("20:00:00"), status=9).outcome is Outcome.STATUS_REGRESSION
    assert post(conn, "PC-CHG", 1000, t("20:10:00"), status=0).outcome is Outcome.PENDING
    assert post(conn, "PC-CHG", 1150, t("20:10:00")).outcome is Outcome.POSTED  # content_changed (a tip)
    assert post(conn, "RP-PARK", 300, t("11:05:00"), pay_type="refund", original="PC-NEVER").outcome is Outcome.PARKED
    assert post(conn, "PC-PEND", 900, t("11:10:00"), status=0).outcome is Outcome.PENDING  # stuck_pending
    post(conn, "PC-D1", 1500, t("12:00:00"), mch_order_no="MO-DUP")  # duplicate_merchant_order
    post(conn, "PC-D2", 1500, t("12:01:00"), mch_order_no="MO-DUP")
    post(conn, "PC-R", 1000, t("13:00:00"))
    post(conn, "RP-R1", 800, t("13:10:00"), pay_type="refund", original="PC-R")
    assert post(conn, "RP-R2", 500, t("13:20:00"), pay_type="refund", original="PC-R").outcome is Outcome.REJECTED
    post(conn, "PC-RM", 1000, t("14:00:00"), refundable=990)  # refundable_mismatch
    post(conn, "PC-C", 1200, t("15:00:00"))
    assert post(conn, "PC-C", 1300, t("15:00:00")).outcome is Outcome.CONFLICT
    post(conn, "PC-CU", 2000, t("16:00:00"))
    assert post(conn, "RU-CU", 500, t("16:30:00"), pay_type="refund", original="PC-CU",
                currency="USD").outcome is Outcome.REJECTED  # currency_mismatch (ledger)
    assert post(conn, "PC-Z", 0, t("17:00:00")).outcome is Outcome.REJECTED  # ledger_exception (non-positive)
    for oid, amount in [("PC-OK1", 1000), ("PC-OK2", 2500), ("PC-D1", 1500), ("PC-D2", 1500), ("PC-R", 1000),
                        ("PC-RM", 1000), ("PC-C", 1200), ("PC-CU", 2000), ("PC-PEND", 900), ("PC-LOST", 700),
                        ("PC-WAIT", 700), ("PC-REG", 1000), ("PC-CHG", 1150)]:
        expect(conn, f"MO-{oid}", amount, t("08:00:00"), pay_order_id=oid)
    expect(conn, "MO-NEVER-PAID", 4200, t("18:00:00"))  # expected_not_paid
    expect(conn, "MO-PC-AM", 1000, t("18:30:00"))  # amount_mismatch: the gateway charged 1100
    post(conn, "PC-AM", 1100, t("18:31:00"), mch_order_no="MO-PC-AM")
    post(conn, "PC-UNK", 3300, t("19:00:00"))  # unknown_to_merchant


def test_every_class_is_found_once_and_alerted_once(conn: psycopg.Connection) -> None:
    seed_every_class(conn)
    calls: list[dict] = []

    def hook(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(200, text="ok")

    sink = AlertSink("https://hooks.example.test/T1", transport=httpx.MockTransport(hook), sleep=lambda s: None)
    first = reconcile(conn, DAY, TORONTO, sink)
    classes = LEDGER_CLASSES | EXPECTED_CLASSES
    assert first.counts == {c: 1 for c in classes}, first.counts
    by_class = {m.cls: m for m in first.mismatches}
    assert by_class["paid_not_in_ledger"].subject == "PC-WAIT"
    lost = by_class["notify_not_posted"]
    assert lost.subject.startswith("inbox/") and lost.pay_order_id == "PC-LOST"
    assert lost.details["reason"] == "PostgreSQL unavailable (retries exhausted)"
    assert by_class["status_regression"].subject == "PC-REG"
    assert by_class["status_regression"].details["received_status"] == 9
    assert by_class["content_changed"].subject == "PC-CHG"
    assert by_class["content_changed"].details["recorded"]["amount"] == 1000
    assert by_class["parked_without_original"].subject == "RP-PARK"
    assert by_class["stuck_pending"].subject == "PC-PEND"
    assert by_class["duplicate_merchant_order"].subject == f"{MCH}/MO-DUP"
    assert by_class["duplicate_merchant_order"].details["pay_order_ids"] == ["PC-D1", "PC-D2"]
    assert by_class["refund_beyond_original"].subject == "RP-R2"
    assert by_class["refundable_mismatch"].subject == "PC-RM"
    assert by_class["conflict"].subject == "PC-C"
    assert by_class["currency_mismatch"].subject == "RU-CU"
    assert by_class["ledger_exception"].subject == "PC-Z"
    assert first.to_json()["expected_orders_checked"] is True
    assert by_class["expected_not_paid"].subject == f"{MCH}/MO-NEVER-PAID"
    assert by_class["expected_not_paid"].expected_amount == 4200
    am = by_class["amount_mismatch"]
    assert (am.subject, am.expected_amount, am.gateway_amount, am.ledger_amount) == ("PC-AM", 1000, 1100, 1100)
    assert by_class["unknown_to_merchant"].subject == "PC-UNK"
    assert first.new_alerts == len(classes)

    # stored, and the webhook got each one once
    (stored,) = conn.execute("SELECT count(*) FROM reconcile_mismatches WHERE run_id = %s", (first.run_id,)).fetchone()
    conn.commit()
    assert stored == len(classes)
    assert sink.deliver_pending(conn) == (len(classes), 0)
    assert sorted(c["dedup_key"].rsplit(":", 1)[0] for c in calls) == \
        sorted(f"mismatch:{m.cls}:{m.subject}" for m in first.mismatches)
    assert all(c["text"].startswith("[2026-11-21] ") for c in calls)
    texts = {c["dedup_key"].rsplit(":", 1)[0]: c["text"] for c in calls}
    assert f"(merchant {MCH}, CAD 10.00)" in texts["mismatch:status_regression:PC-REG"]

    # a re-run on the same data: same result, nothing alerted or sent again
    second = reconcile(conn, DAY, TORONTO, sink)
    assert second.run_id != first.run_id
    assert second.fingerprint == first.fingerprint
    assert [m.to_json() for m in second.mismatches] == [m.to_json() for m in first.mismatches]
    assert second.new_alerts == 0
    assert sink.deliver_pending(conn) == (0, 0)
    assert len(calls) == len(classes)


def test_a_clean_day_matches_and_the_neighbours_stay_apart(conn: psycopg.Connection) -> None:
    post(conn, "PC-A", 1000, at("2026-11-21 00:00:00"))
    post(conn, "PC-B", 2000, at("2026-11-21 23:59:59"))
    post(conn, "PC-C", 100, at("2026-11-22 00:00:00"), status=0)  # next day, pending
    post(conn, "PC-D", 100, at("2026-11-20 23:59:59"), status=0)  # previous day, pending
    expect(conn, "MO-PC-A", 1000, at("2026-11-21 00:00:00"), pay_order_id="PC-A")
    expect(conn, "MO-PC-B", 2000, at("2026-11-21 23:59:58"))
    result = reconcile(conn, DAY, TORONTO)
    assert result.ok, result.counts
    assert reconcile(conn, DAY + timedelta(days=1), TORONTO).counts == {"stuck_pending": 1}
    assert [m.subject for m in reconcile(conn, DAY - timedelta(days=1), TORONTO).mismatches] == ["PC-D"]


def test_webhook_down_then_up_delivers_each_alert_once(conn: psycopg.Connection) -> None:
    post(conn, "PC-PEND", 900, at("2026-11-21 11:10:00"), status=0)
    state = {"up": False, "calls": 0}

    def hook(request: httpx.Request) -> httpx.Response:
        state["calls"] += 1
        if not state["up"]:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200)

    sink = AlertSink("https://hooks.example.test/T1", transport=httpx.MockTransport(hook), sleep=lambda s: None)
    reconcile(conn, DAY, TORONTO, sink)
    pending = sum(1 for _ in conn.execute("SELECT 1 FROM alerts WHERE kind = 'mismatch'"))
    conn.commit()
    assert sink.deliver_pending(conn) == (0, pending)
    assert state["calls"] == 3 * pending  # retried within the send
    (st, attempts) = conn.execute("SELECT webhook_state, attempts FROM alerts LIMIT 1").fetchone()
    conn.commit()
    assert (st, attempts) == ("pending", 3)
    state["up"] = True
    assert sink.deliver_pending(conn) == (pending, 0)
    assert sink.deliver_pending(conn) == (0, 0)


def test_webhook_4xx_is_not_retried(conn: psycopg.Connection) -> None:
    post(conn, "PC-PEND", 900, at("2026-11-21 11:10:00"), status=0)
    calls = []
    sink = AlertSink("https://hooks.example.test/T1", sleep=lambda s: None,
                     transport=httpx.MockTransport(lambda r: calls.append(r) or httpx.Response(404, text="no_service")))
    reconcile(conn, DAY, TORONTO, sink)
    assert sink.deliver_pending(conn) == (0, 1)
    assert len(calls) == 1
    row = conn.execute("SELECT webhook_state, last_error FROM alerts").fetchone()
    assert row == ("failed", "HTTP 404: no_service")


@pytest.mark.slow
def test_cli_exit_codes_and_json(db_url: str, conn: psycopg.Connection, redis_url: str) -> None:
    post(conn, "PC-PEND", 900, at("2026-11-21 11:10:00"), status=0)
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_SETTLEMENT_TZ="America/Toronto")
    env.pop("IOTLEDGER_ALERT_WEBHOOK_URL", None)
    cmd = [str(Path(sys.executable).parent / "iotledger")]
    bad = subprocess.run([*cmd, "reconcile", "--date", "2026-11-21", "--json"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    out = json.loads(bad.stdout)
    assert out["ok"] is False and out["counts"] == {"stuck_pending": 1} and out["hours"] == 24
    assert out["mismatches"][0]["pay_order_id"] == "PC-PEND"
    good = subprocess.run([*cmd, "reconcile", "--date", "2026-11-20"], env=env, capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    assert "everything matches" in good.stdout
    usage = subprocess.run([*cmd, "reconcile", "--date", "21/11/2026"], env=env, capture_output=True, text=True)
    assert usage.returncode == 2 and "--date" in usage.stderr
