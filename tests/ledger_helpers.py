"""Reading the ledger back in tests: balances, entries, orders, exceptions."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from tests.factories import MERCHANTS
from worker.iotpay.body import NotifyBody
from worker.ledger.intake import verify_and_post
from worker.ledger.outcome import PostResult

TZ = ZoneInfo("America/Vancouver")


def post(conn: psycopg.Connection, params: dict[str, Any], source: str = "notify") -> PostResult:
    """Verify and post one signed notify through the production path."""
    return verify_and_post(conn, NotifyBody.from_params(params), MERCHANTS, TZ, source=source)


def balances(conn: psycopg.Connection, mch: str, currency: str = "CAD") -> dict[str, int]:
    """Account balances (debit positive) of one merchant and currency."""
    rows = conn.execute(
        """SELECT a.kind, coalesce(sum(p.amount), 0) FROM accounts a LEFT JOIN postings p ON p.account_id = a.id
           WHERE a.mch_id = %s AND a.currency = %s GROUP BY a.kind""", (mch, currency)).fetchall()
    conn.rollback()
    return {k: int(v) for k, v in rows}


def entries(db: psycopg.Connection | str) -> list[tuple[str, str, int, str | None]]:
    """(pay_order_id, kind, amount, original) of every journal entry, in posting order.

    db is an open connection (left idle) or a database URL (read on a connection of its own).
    """
    if isinstance(db, str):
        with psycopg.connect(db) as conn:
            return entries(conn)
    rows = db.execute("SELECT pay_order_id, kind, amount, original_order_id FROM journal_entries ORDER BY id").fetchall()
    db.rollback()
    return [tuple(r) for r in rows]


def by_order(rows: list[tuple[str, str, int, str | None]]) -> dict[str, list[tuple[str, int]]]:
    """entries() grouped by pay_order_id: {pay_order_id: [(kind, amount), ...]}, each in posting order."""
    out: dict[str, list[tuple[str, int]]] = {}
    for pay_order_id, kind, amount, _ in rows:
        out.setdefault(pay_order_id, []).append((kind, amount))
    return out


def refundable(conn: psycopg.Connection, pay_order_id: str) -> tuple[int, int] | None:
    """(refunded, refundable) of a posted pay."""
    row = conn.execute("SELECT refunded, refundable FROM pay_balances WHERE pay_order_id = %s", (pay_order_id,)).fetchone()
    conn.rollback()
    return tuple(row) if row else None


def order_state(conn: psycopg.Connection, pay_order_id: str) -> tuple[str, int, str | None]:
    """(state, status, reason) of an order."""
    row = conn.execute("SELECT state, status, reason FROM orders WHERE pay_order_id = %s", (pay_order_id,)).fetchone()
    conn.rollback()
    return tuple(row)


def exceptions(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    """(pay_order_id, kind, reason) of every recorded exception."""
    rows = conn.execute("SELECT pay_order_id, kind, reason FROM ledger_exceptions ORDER BY id").fetchall()
    conn.rollback()
    return [tuple(r) for r in rows]
