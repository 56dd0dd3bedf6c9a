"""Read models of the ledger: one order with its refunds, entries, legs and exceptions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker import money
from worker.sqlfiles import q


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def order_view(conn: psycopg.Connection, pay_order_id: str) -> dict[str, Any] | None:
    """Everything the ledger knows about one gateway order, or None when it never heard of it.

    Keys are snake_case; every amount is given twice, `X_cents` (integer) and `X` (decimal
    string). `refunded`/`refundable` are the pay's balance (for a refund order: 0 and 0).
    """
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("order_view"), {"pay_order_id": pay_order_id}).fetchone()
        notifies = [{k: _plain(v) for k, v in r.items()}
                    for r in cur.execute(q("order_inbox_rows"), {"pay_order_id": pay_order_id}).fetchall()]
        if row is None:
            conn.rollback()
            if not notifies:
                return None
            waiting = all(n["state"] in ("received", "queued") for n in notifies)
            reason = ("acknowledged, waiting for a worker to post it (see notifies)" if waiting else
                      "acknowledged notifies for this id did not reach the ledger (see notifies and their reasons)")
            return {"pay_order_id": pay_order_id, "state": "not_in_ledger", "reason": reason, "notifies": notifies}
        refunds = cur.execute(q("order_refunds"), {"pay_order_id": pay_order_id}).fetchall()
        legs = cur.execute(q("order_entries"), {"pay_order_id": pay_order_id}).fetchall()
        exceptions = cur.execute(q("order_exceptions"), {"pay_order_id": pay_order_id}).fetchall()
    conn.rollback()
    entries: dict[int, dict[str, Any]] = {}
    for leg in legs:
        e = entries.setdefault(leg["id"], {
            "id": leg["id"], "kind": leg["kind"], "pay_order_id": leg["pay_order_id"],
            "original_order_id": leg["original_order_id"], **money.fields("amount", leg["amount"]),
            "currency": leg["currency"], "occurred_at": _plain(leg["occurred_at"]), "posted_at": _plain(leg["posted_at"]),
            "legs": [],
        })
        e["legs"].append({"account": leg["account"], **money.fields("debit", max(leg["leg"], 0)),
                          **money.fields("credit", max(-leg["leg"], 0))})
    is_pay = row["pay_type"] == "pay"
    return {
        "pay_order_id": row["pay_order_id"],
        "mch_id": row["mch_id"],
        "mch_order_no": row["mch_order_no"],
        "pay_type": row["pay_type"],
        "original_order_id": row["original_order_id"],
        "state": row["state"],
        "reason": row["reason"],
        "status": row["status"],
        "currency": row["currency"],
        **money.fields("amount", row["amount"]),
        **money.fields("refunded", (row["refunded"] or 0) if is_pay else 0),
        **money.fields("refundable", (row["refundable"] or 0) if is_pay else 0),
        **money.fields("gateway_refundable", row["gateway_refundable"]),
        "channel": row["channel"],
        "card_type": row["card_type"],
        "card_num": row["card_num"],
        "auth_num": row["auth_num"],
        "trans_num": row["trans_num"],
        "pay_succ_time": _plain(row["pay_succ_time"]),
        "first_seen_at": _plain(row["first_seen_at"]),
        "posted_at": _plain(row["posted_at"]),
        "refunds": [
            {"pay_order_id": r["pay_order_id"], "pay_type": r["pay_type"], **money.fields("amount", r["amount"]),
             "currency": r["currency"], "status": r["status"], "state": r["state"], "reason": r["reason"],
             "pay_succ_time": _plain(r["pay_succ_time"])}
            for r in refunds
        ],
        "entries": list(entries.values()),
        "exceptions": [
            {"kind": x["kind"], "reason": x["reason"], "details": x["details"], "created_at": _plain(x["created_at"])}
            for x in exceptions
        ],
        "notifies": notifies,
    }
