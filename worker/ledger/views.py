"""Read models of the ledger: one order with its refunds, entries, legs and exceptions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker.sqlfiles import q


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def order_view(conn: psycopg.Connection, pay_order_id: str) -> dict[str, Any] | None:
    """Everything the ledger knows about one gateway order, or None when it never heard of it.

    Amounts are integer cents. `refunded`/`refundable` are the pay's balance (for a refund
    order: refunded 0, refundable 0).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("order_view"), {"pay_order_id": pay_order_id}).fetchone()
        if row is None:
            return None
        refunds = cur.execute(q("order_refunds"), {"pay_order_id": pay_order_id}).fetchall()
        legs = cur.execute(q("order_entries"), {"pay_order_id": pay_order_id}).fetchall()
        exceptions = cur.execute(q("order_exceptions"), {"pay_order_id": pay_order_id}).fetchall()
    conn.rollback()
    entries: dict[int, dict[str, Any]] = {}
    for leg in legs:
        e = entries.setdefault(leg["id"], {
            "id": leg["id"], "kind": leg["kind"], "payOrderId": leg["pay_order_id"],
            "originalOrderId": leg["original_order_id"], "amount": leg["amount"], "currency": leg["currency"],
            "occurredAt": _plain(leg["occurred_at"]), "postedAt": _plain(leg["posted_at"]), "legs": [],
        })
        e["legs"].append({"account": leg["account"], "debit": max(leg["leg"], 0), "credit": max(-leg["leg"], 0)})
    is_pay = row["pay_type"] == "pay"
    return {
        "payOrderId": row["pay_order_id"],
        "mchId": row["mch_id"],
        "mchOrderNo": row["mch_order_no"],
        "payType": row["pay_type"],
        "originalOrderId": row["original_order_id"],
        "state": row["state"],
        "reason": row["reason"],
        "status": row["status"],
        "currency": row["currency"],
        "amount": row["amount"],
        "refunded": (row["refunded"] or 0) if is_pay else 0,
        "refundable": (row["refundable"] or 0) if is_pay else 0,
        "gatewayRefundable": row["gateway_refundable"],
        "channel": row["channel"],
        "cardType": row["card_type"],
        "cardNum": row["card_num"],
        "authNum": row["auth_num"],
        "transNum": row["trans_num"],
        "paySuccTime": _plain(row["pay_succ_time"]),
        "firstSeenAt": _plain(row["first_seen_at"]),
        "postedAt": _plain(row["posted_at"]),
        "refunds": [
            {"payOrderId": r["pay_order_id"], "payType": r["pay_type"], "amount": r["amount"],
             "currency": r["currency"], "status": r["status"], "state": r["state"], "reason": r["reason"],
             "paySuccTime": _plain(r["pay_succ_time"])}
            for r in refunds
        ],
        "entries": list(entries.values()),
        "exceptions": [
            {"kind": x["kind"], "reason": x["reason"], "details": x["details"], "createdAt": _plain(x["created_at"])}
            for x in exceptions
        ],
    }
