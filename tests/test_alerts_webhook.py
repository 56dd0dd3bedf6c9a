"""Alerts: sweep give-ups and the daily summary, once each, to the log and a Slack-compatible webhook."""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import httpx
import psycopg
import pytest
from structlog.testing import capture_logs

from tests.test_reconcile_seed import TORONTO, at, expect, post
from worker.money import decimal as money
from worker.reports.alerts import AlertSink, alert_give_ups, daily_summary, raise_alert
from worker.reports.export import export_day, summary_rows
from worker.reports.businessday import business_day
from worker.reports.reconcile import reconcile

UTC = timezone.utc


class Hook:
    """A fake Slack incoming webhook: a plain callable behind httpx.MockTransport."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        self.headers: list[httpx.Headers] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        self.headers.append(request.headers)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200, text="ok")

    def sink(self) -> AlertSink:
        return AlertSink("https://hooks.slack.test/services/T/B/X", transport=httpx.MockTransport(self),
                         sleep=lambda s: None)


@pytest.mark.parametrize("cents,text", [(0, "0.00"), (5, "0.05"), (123456, "1234.56"), (-5, "-0.05"), (-100, "-1.00")])
def test_money_is_exact(cents: int, text: str) -> None:
    assert money(cents) == text


def test_sweep_give_ups_are_alerted_once(conn: psycopg.Connection) -> None:
    expect(conn, "MO-POS-1", 1999, at("2026-11-21 10:00:00"), pay_order_id="CP001", channel="CC_PAX",
           gave_up_at=datetime(2026, 11, 23, 15, 0, tzinfo=UTC))
    expect(conn, "MO-OK", 500, at("2026-11-21 10:00:00"))
    with conn.transaction():
        conn.execute("INSERT INTO parked_queries (original_order_id, mch_id, family, first_parked_at, gave_up_at)"
                     " VALUES ('PC-GONE', '10000701', 'v3', %s, %s)", (at("2026-11-21 09:00:00"), at("2026-11-23 09:00:00")))
    hook = Hook(503, 200)  # the first POST fails: retried within the same send
    sink = hook.sink()
    with capture_logs() as logs:
        assert alert_give_ups(conn, sink) == 2
        assert alert_give_ups(conn, sink) == 0  # the clock runs it every minute: nothing new
    warned = [entry for entry in logs if entry["event"] == "alert"]
    assert [w["dedup_key"] for w in warned] == ["give_up:10000701/MO-POS-1", "give_up_parked:PC-GONE"]
    assert "MO-POS-1" in warned[0]["text"] and "1999 cents" in warned[0]["text"]
    assert sink.deliver_pending(conn) == (2, 0)
    assert sink.deliver_pending(conn) == (0, 0)
    assert len(hook.bodies) == 3  # 503, then 200, then 200
    assert hook.bodies[0] == hook.bodies[1]
    assert set(hook.bodies[0]) >= {"text", "dedup_key"}  # Slack reads `text`
    assert hook.headers[0]["idempotency-key"] == "give_up:10000701/MO-POS-1"
    rows = conn.execute("SELECT dedup_key, webhook_state, attempts FROM alerts ORDER BY id").fetchall()
    assert rows == [("give_up:10000701/MO-POS-1", "sent", 2), ("give_up_parked:PC-GONE", "sent", 1)]


def test_without_a_webhook_alerts_only_go_to_the_log(conn: psycopg.Connection) -> None:
    sink = AlertSink(None)
    with capture_logs() as logs:
        assert raise_alert(conn, sink, "k1", "test", "something happened")
        assert not raise_alert(conn, sink, "k1", "test", "something happened")
    assert [e["dedup_key"] for e in logs if e["event"] == "alert"] == ["k1"]
    assert conn.execute("SELECT webhook_state FROM alerts").fetchall() == [("none",)]
    assert sink.deliver_pending(conn) == (0, 0)


def test_daily_summary_once_per_day_in_plain_words(conn: psycopg.Connection, tmp_path) -> None:
    post(conn, "PC-1", 10000, at("2026-11-21 09:00:00"))
    post(conn, "RP-1", 2550, at("2026-11-21 10:00:00"), pay_type="refund", original="PC-1")
    post(conn, "P-2", 700, at("2026-11-21 11:00:00"), currency="USD")
    post(conn, "PC-P", 100, at("2026-11-21 12:00:00"), status=0)
    for oid, amount, cur in (("PC-1", 10000, "CAD"), ("P-2", 700, "USD"), ("PC-P", 100, "CAD")):
        expect(conn, f"MO-{oid}", amount, at("2026-11-21 08:00:00"), pay_order_id=oid, currency=cur)
    hook = Hook()
    sink = hook.sink()
    day = business_day(date(2026, 11, 21), TORONTO)
    reconcile(conn, day.day, TORONTO, sink)
    export_day(conn, day.day, TORONTO, tmp_path, now=day.end)
    with conn.cursor() as cur:
        totals = summary_rows(cur, day.day)
    conn.commit()
    assert daily_summary(conn, sink, day, totals, files="reports/2026-11-21")
    assert not daily_summary(conn, sink, day, totals, files="reports/2026-11-21")
    sink.deliver_pending(conn)
    summary = [b for b in hook.bodies if b["kind"] == "daily_summary"]
    assert len(summary) == 1
    text = summary[0]["text"]
    assert text.startswith("IOTPay ledger, business day 2026-11-21 (America/Toronto):")
    assert "merchant 10000701 CAD: 2 transaction(s), gross 100.00, refunds 25.50, net 74.50." in text
    assert "merchant 10000701 USD: 1 transaction(s), gross 7.00, refunds 0.00, net 7.00." in text
    assert "Reconciliation: 1 mismatch(es) (stuck_pending 1)." in text
    assert text.endswith("Settlement files: reports/2026-11-21")
