"""Helpers that put realistic data into a test database through the real posting code.

Notifies are parsed by worker.iotpay.notify and posted by worker.ledger.posting, exactly as the
worker does; expected orders are plain INSERTs (sql/003_gateway.sql). Imported by the
reconcile, export and clock tests; the one test here checks the helpers themselves.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from tests.factories import MCH
from worker.iotpay.notify import parse_params
from worker.ledger.outcome import Outcome, PostResult
from worker.ledger.posting import post_notify

GATEWAY_TZ = ZoneInfo("America/Vancouver")
TORONTO = ZoneInfo("America/Toronto")
UTC = timezone.utc
_seq = itertools.count(1)


def at(text: str, tz: ZoneInfo = TORONTO) -> datetime:
    """'2026-11-21 23:59:59' in `tz` (Toronto by default) -> aware datetime."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=tz)


def notify_params(pay_order_id: str, amount: int, when: datetime, *, pay_type: str = "pay",
                  original: str | None = None, status: int = 2, currency: str = "CAD",
                  mch_order_no: str | None = None, refundable: int | None = None, mch_id: str = MCH,
                  channel: str = "PF_CC", **extra: Any) -> dict[str, Any]:
    """A notify as IOTPay sends it: V3 (JSON numbers, local paySuccTime) for CAD, v1 (strings) for USD."""
    fields: dict[str, Any] = {
        "payOrderId": pay_order_id, "mchId": mch_id, "mchOrderNo": mch_order_no or f"MO-{pay_order_id}",
        "amount": amount, "currency": currency, "payType": pay_type, "status": status, "channel": channel,
        "cardType": "V", "cardNum": "432567******2266", "authNum": f"A{next(_seq):05d}", "transNum": f"T{pay_order_id}",
    }
    if original:
        fields["originalOrderId"] = original
    if refundable is not None:
        fields["refundable"] = refundable
    fields.update(extra)
    if currency == "CAD":
        fields["paySuccTime"] = when.astimezone(GATEWAY_TZ).strftime("%Y-%m-%d %H:%M:%S")
    else:
        fields["paySuccTime"] = str(int(when.timestamp() * 1000))
        fields = {k: str(v) for k, v in fields.items()}
    return fields


def post(conn: psycopg.Connection, pay_order_id: str, amount: int, when: datetime, *, source: str = "notify",
         **kw: Any) -> PostResult:
    """Parse and post one notify through the ledger's own code."""
    params = notify_params(pay_order_id, amount, when, **kw)
    return post_notify(conn, parse_params(params, GATEWAY_TZ), source=source)


def expect(conn: psycopg.Connection, mch_order_no: str, amount: int, created: datetime, *,
           pay_order_id: str | None = None, currency: str = "CAD", channel: str = "PF_CC", mch_id: str = MCH,
           gave_up_at: datetime | None = None) -> None:
    """The merchant's checkout registering an order (plain INSERT into expected_orders)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO expected_orders (mch_id, mch_order_no, pay_order_id, amount, currency, channel, family,"
            " created_at, gave_up_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (mch_id, mch_order_no, pay_order_id, amount, currency, channel, "v3" if currency == "CAD" else "v1",
             created, gave_up_at),
        )


def test_helpers_post_through_the_ledger(conn: psycopg.Connection) -> None:
    assert post(conn, "PC1", 1000, at("2026-11-21 12:00:00")).outcome is Outcome.POSTED
    assert post(conn, "RP1", 300, at("2026-11-21 13:00:00"), pay_type="refund", original="PC1").outcome is Outcome.POSTED
    assert post(conn, "P2", 500, at("2026-11-21 14:00:00"), currency="USD").outcome is Outcome.POSTED
    rows = conn.execute("SELECT pay_order_id, kind, amount, currency, occurred_at FROM journal_entries ORDER BY id").fetchall()
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [("PC1", "pay", 1000, "CAD"), ("RP1", "refund", 300, "CAD"),
                                                        ("P2", "pay", 500, "USD")]
    assert rows[0][4] == at("2026-11-21 12:00:00")
    assert rows[2][4] == at("2026-11-21 14:00:00")
