"""Nightly reconciliation of one business day: expected orders vs the gateway vs the ledger.

Every difference is classified (see `mismatch_classes` in sql/004_reports.sql) by two
set-based statements in sql/queries/reports.sql, run in one REPEATABLE READ transaction so
they see one snapshot. Each run and its mismatches are stored; alerts are raised from the
stored rows with a dedup key per (class, subject), so a mismatch already alerted is not
alerted again by a re-run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from worker import db, money
from worker.reports.alerts import AlertSink, raise_rows
from worker.reports.businessday import BusinessDay, business_day
from worker.sqlfiles import q


@dataclass(frozen=True)
class Mismatch:
    """One difference found by a run."""

    cls: str
    subject: str
    description: str
    mch_id: str | None
    pay_order_id: str | None
    mch_order_no: str | None
    currency: str | None
    expected_amount: int | None
    gateway_amount: int | None
    ledger_amount: int | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """snake_case keys; every amount as `X_cents` and `X` (decimal string)."""
        return {"class": self.cls, "subject": self.subject, "description": self.description,
                "mch_id": self.mch_id, "pay_order_id": self.pay_order_id, "mch_order_no": self.mch_order_no,
                "currency": self.currency, **money.fields("expected_amount", self.expected_amount),
                **money.fields("gateway_amount", self.gateway_amount),
                **money.fields("ledger_amount", self.ledger_amount), "details": self.details}


@dataclass(frozen=True)
class ReconcileResult:
    """A stored run: its mismatches, counts per class, fingerprint, and how many alerts were new."""

    run_id: int
    day: BusinessDay
    mismatches: tuple[Mismatch, ...]
    counts: dict[str, int]
    fingerprint: str
    new_alerts: int
    skipped: tuple[dict[str, str], ...] = ()
    totals: tuple[dict[str, Any], ...] = ()
    matched: int = 0
    expected: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing differs."""
        return not self.mismatches

    def to_json(self) -> dict[str, Any]:
        """The run as one JSON-ready object."""
        return {"ok": self.ok, "run_id": self.run_id, "business_date": str(self.day.day), "timezone": self.day.tz_name,
                "window_start": self.day.start.isoformat(), "window_end": self.day.end.isoformat(),
                "hours": self.day.hours, "mismatch_count": len(self.mismatches), "counts": self.counts,
                "fingerprint": self.fingerprint, "new_alerts": self.new_alerts,
                "expected_orders_checked": True,  # expected_orders is part of the schema (sql/003_gateway.sql)
                "skipped": list(self.skipped), "totals": [
                    {"mch_id": t["mch_id"], "currency": t["currency"], "entries": t["entries"],
                     **money.fields("paid", t["paid_cents"]), **money.fields("refunded", t["refunded_cents"]),
                     **money.fields("net", int(t["paid_cents"]) - int(t["refunded_cents"]))} for t in self.totals],
                "expected_orders": self.expected, "matched": self.matched,
                "mismatches": [m.to_json() for m in self.mismatches]}


def reconcile(conn: psycopg.Connection, day: date, tz: ZoneInfo, sink: AlertSink | None = None) -> ReconcileResult:
    """Reconcile one business day, store the run, raise alerts for mismatches not alerted before.

    `conn` must be idle (autocommit off). Raises RetryableError when PostgreSQL is unavailable.
    """
    sink = sink or AlertSink()
    bd = business_day(day, tz)
    window = {"day": bd.day, "tz": bd.tz_name, "start": bd.start, "end": bd.end}
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with db.translated(f"while reconciling {day}"), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            cur.execute(q("reconcile_start_run"), window)
            run_id = cur.fetchone()["id"]
            params = {**window, "run_id": run_id}
            cur.execute(q("reconcile_gateway_vs_ledger"), params)
            cur.execute(q("reconcile_expected_vs_gateway"), params)
            cur.execute(q("reconcile_finish_run"), {"run_id": run_id})
            run = cur.fetchone()
            cur.execute(q("reconcile_mismatches_of_run"), {"run_id": run_id})
            rows = cur.fetchall()
            skipped = tuple(dict(r) for r in cur.execute(q("reconcile_skipped"), window).fetchall())
            facts = cur.execute(q("reconcile_day_facts"), window).fetchone()
            new_alerts = raise_rows(cur, sink, "alerts_from_run", {"run_id": run_id, "per_class": sink.per_class})
    finally:
        conn.isolation_level = None
    mismatches = tuple(
        Mismatch(r["class"], r["subject"], r["description"], r["mch_id"], r["pay_order_id"], r["mch_order_no"],
                 r["currency"], r["expected_amount"], r["gateway_amount"], r["ledger_amount"], r["details"])
        for r in rows
    )
    return ReconcileResult(run_id, bd, mismatches, dict(run["counts"]), run["fingerprint"], new_alerts, skipped,
                           tuple(facts["totals"]), int(facts["matched"]), int(facts["expected"]))
