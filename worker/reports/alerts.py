"""Alerts: every mismatch, every sweep give-up and one daily summary, to the log and a webhook.

An alert is a row of `alerts` with a unique dedup key, inserted with ON CONFLICT DO NOTHING:
the same mismatch seen by a re-run, a second clock or after a restart raises nothing new. The
row is logged when it is first inserted; when a webhook is configured it is also POSTed as
JSON with a Slack-compatible `text`, retried with backoff on network errors, 429 and 5xx,
and, if still undelivered, retried by the next clock tick until `max_attempts`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from worker import logs
from worker.errors import IotLedgerError
from worker.money import decimal as money
from worker.reports.businessday import BusinessDay
from worker.sqlfiles import q

log = logs.get("worker.reports.alerts")

DEFAULT_ATTEMPTS_PER_SEND = 3
DEFAULT_MAX_ATTEMPTS = 12
DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_BACKOFF_SECONDS = 0.5
DEFAULT_PER_CLASS = 20  # new mismatch alerts of one class per run before one summary alert replaces the rest


class WebhookError(IotLedgerError):
    """The webhook refused the alert (permanent: a 4xx other than 429) or stayed unreachable."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        self.permanent = permanent
        super().__init__(message)


@dataclass
class AlertSink:
    """Where alerts go: always the log, and the webhook at `webhook_url` when one is configured.

    `transport` is injected in tests (httpx.MockTransport); `sleep` too, so retries cost no time.
    """

    webhook_url: str | None = None
    transport: httpx.BaseTransport | None = None
    attempts_per_send: int = DEFAULT_ATTEMPTS_PER_SEND
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    backoff: float = DEFAULT_BACKOFF_SECONDS
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    per_class: int = DEFAULT_PER_CLASS

    @property
    def webhook_state(self) -> str:
        """The state a new alert starts in: 'pending' (to send) or 'none' (log only)."""
        return "pending" if self.webhook_url else "none"

    def announce(self, rows: Iterable[dict[str, Any]]) -> int:
        """Log newly raised alerts (one line each); return how many."""
        n = 0
        for row in rows:
            n += 1
            level = log.info if row["kind"] == "daily_summary" else log.warning
            level("alert", dedup_key=row["dedup_key"], kind=row["kind"], text=row["text"])
        return n

    def send(self, client: httpx.Client, alert: dict[str, Any]) -> int:
        """POST one alert; return the number of attempts it took.

        Raises WebhookError (permanent for a 4xx other than 429) when it could not be delivered.
        """
        body = {"text": alert["text"], "dedup_key": alert["dedup_key"], "kind": alert["kind"],
                "details": alert["details"]}
        last = ""
        for attempt in range(1, self.attempts_per_send + 1):
            try:
                resp = client.post(self.webhook_url or "", json=body,
                                   headers={"Idempotency-Key": alert["dedup_key"]})
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.is_success:
                    return attempt
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code != 429 and resp.status_code < 500:
                    raise WebhookError(last, permanent=True)
            if attempt < self.attempts_per_send:
                self.sleep(self.backoff * 2 ** (attempt - 1))
        raise WebhookError(last, permanent=False)

    def deliver_pending(self, conn: psycopg.Connection, limit: int = 50) -> tuple[int, int]:
        """Send alerts still pending; return (sent, not sent). Locks rows so two clocks never both send one.

        Raises psycopg errors when the database is unavailable (the caller is the clock: it logs and retries).
        """
        if not self.webhook_url:
            return 0, 0
        sent = failed = 0
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cur, httpx.Client(
            transport=self.transport, timeout=self.timeout
        ) as client:
            cur.execute(q("alerts_claim_pending"), {"limit": limit})
            claimed = cur.fetchall()
            for i, alert in enumerate(claimed):
                try:
                    attempts = self.send(client, alert)
                except WebhookError as exc:
                    failed += 1
                    cur.execute(q("alert_mark_failed"), {
                        "id": alert["id"], "attempts": self.attempts_per_send if not exc.permanent else 1,
                        "error": str(exc), "permanent": exc.permanent, "max_attempts": self.max_attempts})
                    log.error("alert.webhook_failed", dedup_key=alert["dedup_key"], error=str(exc),
                              permanent=exc.permanent)
                    if not exc.permanent:
                        # the webhook is down: the rest stay pending for the next tick instead of
                        # each waiting through its own retries while these rows are locked
                        failed += len(claimed) - i - 1
                        break
                else:
                    sent += 1
                    cur.execute(q("alert_mark_sent"), {"id": alert["id"], "attempts": attempts})
        return sent, failed


def raise_rows(cur: psycopg.Cursor, sink: AlertSink, query: str, params: dict[str, Any]) -> int:
    """Run an alert-inserting named query (ON CONFLICT DO NOTHING ... RETURNING); log the new ones."""
    cur.execute(q(query), {**params, "webhook_state": sink.webhook_state})
    cols = [d.name for d in cur.description or ()]
    rows = cur.fetchall()
    return sink.announce(row if isinstance(row, dict) else dict(zip(cols, row)) for row in rows)


def raise_alert(conn: psycopg.Connection, sink: AlertSink, dedup_key: str, kind: str, text: str,
                details: dict[str, Any] | None = None) -> bool:
    """Raise one alert unless its dedup key was raised before; True when it is new."""
    with conn.transaction(), conn.cursor() as cur:
        return raise_rows(cur, sink, "alert_insert", {"dedup_key": dedup_key, "kind": kind, "text": text,
                                                       "details": Jsonb(details or {})}) == 1


def alert_give_ups(conn: psycopg.Connection, sink: AlertSink) -> int:
    """Alert every expected order (and parked refund) the sweep gave up on, once each; return how many are new."""
    with conn.transaction(), conn.cursor() as cur:
        return raise_rows(cur, sink, "alerts_from_give_ups", {}) + raise_rows(cur, sink, "alerts_from_parked_give_ups", {})


def alert_exceptions(conn: psycopg.Connection, sink: AlertSink) -> int:
    """Alert every ledger exception a person must see at once (status_regression), once each."""
    with conn.transaction(), conn.cursor() as cur:
        return raise_rows(cur, sink, "alerts_from_ledger_exceptions", {})


def summary_text(day: BusinessDay, facts: dict[str, Any], totals: list[dict[str, Any]], files: str | None = None) -> str:
    """The daily summary a human reads in the alert channel: the day's file per merchant and currency."""
    parts = [f"IOTPay ledger, business day {day.day} ({day.tz_name}):"]
    rows = [t for t in totals if t["section"] == "total"]
    if not rows:
        parts.append("no transactions.")
    for t in rows:
        parts.append(f"merchant {t['mch_id']} {t['currency']}: {t['count']} transaction(s), gross "
                     f"{money(t['gross_cents'])}, refunds {money(t['refunds_cents'])}, net {money(t['net_cents'])}.")
    run = facts.get("run")
    if run is None:
        parts.append("Not reconciled yet.")
    elif not run["mismatch_count"]:
        parts.append("Reconciliation: everything matches.")
    else:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(run["counts"].items()))
        parts.append(f"Reconciliation: {run['mismatch_count']} mismatch(es) ({detail}).")
    if files:
        parts.append(f"Settlement files: {files}")
    return " ".join(parts)


def daily_summary(conn: psycopg.Connection, sink: AlertSink, day: BusinessDay, totals: list[dict[str, Any]],
                  files: str | None = None) -> bool:
    """Raise the day's summary alert (once per business day); True when it is new.

    `totals` are the rows of the day's summary CSV (worker.reports.export.summary_rows), so the
    alert and the file cannot disagree.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q("summary_facts"), {"day": day.day})
        facts = cur.fetchone() or {}
    conn.commit()
    text = summary_text(day, facts, totals, files)
    return raise_alert(conn, sink, f"summary:{day.day}", "daily_summary",
                       text, {"business_date": str(day.day), **facts, "totals": totals})
