"""`iotledger check`: every invariant of the ledger, over the whole ledger.

The books' identity, per merchant and currency (debit balances; fees an expense):

    clearing + in_transit + bank + fees = paid - refunded (net)

what was sold, net of refunds, is either still owed by IOTPay (clearing), kept by it as fees, paid
out and on its way (in_transit), or in the bank. Equivalently clearing = net - fees - in_transit -
bank. It holds because every entry balances, the gateway's entries touch only clearing, sales and
refunds, and the books' entries (fee, payout, deposit, adjustment) only these four accounts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker import money
from worker.sqlfiles import q

MONEY = ("paid", "refunded", "net", "clearing", "fees", "in_transit", "bank", "amount")
BOOKS = ("clearing", "fees", "in_transit", "bank")


@dataclass(frozen=True)
class CheckReport:
    """Violations found (empty when the ledger is sound) and the totals per currency."""

    violations: list[dict[str, Any]] = field(default_factory=list)
    currencies: dict[str, dict[str, int]] = field(default_factory=dict)
    parked_too_long: list[dict[str, Any]] = field(default_factory=list)
    merchants: list[dict[str, Any]] = field(default_factory=list)  # per merchant and currency, whole ledger
    day: dict[str, Any] | None = None  # per merchant and currency of one business day, when asked

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_json(self) -> dict[str, Any]:
        """snake_case; every amount as `X_cents` and `X` (decimal string)."""
        def amounts(t: dict[str, Any]) -> dict[str, Any]:
            out = {k: v for k, v in t.items() if k not in MONEY}
            for k in MONEY:
                if k in t:
                    out.update(money.fields(k, t[k]))
            return out

        day = None if self.day is None else {**self.day, "merchants": [amounts(m) for m in self.day["merchants"]]}
        return {
            "ok": self.ok,
            "violations": self.violations,
            "currencies": {c: amounts(t) for c, t in self.currencies.items()},
            "parked_too_long": [amounts(p) for p in self.parked_too_long],
            "merchants": [amounts(m) for m in self.merchants],
            **({"day": day} if day is not None else {}),
        }


def _merchant_totals(cur: psycopg.Cursor, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
    rows = cur.execute(q("totals_by_merchant"), {"start": start, "end": end}).fetchall()
    return [{"mch_id": r["mch_id"], "currency": r["currency"], "paid": int(r["paid"]), "refunded": int(r["refunded"]),
             "net": int(r["paid"]) - int(r["refunded"]), "pay_count": int(r["pays"]), "refund_count": int(r["refunds"])}
            for r in rows]


def merchant_day_totals(cur: psycopg.Cursor, tz: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Paid, refunded, net and counts per business day (in zone `tz`), merchant and currency of the
    entries dated in [start, end), net of reversals: what `check --date D` gives for a day and the
    console's overview charts, from one query (totals_by_merchant_day). `cur` yields dict rows.
    Raises psycopg errors."""
    rows = cur.execute(q("totals_by_merchant_day"), {"tz": tz, "start": start, "end": end}).fetchall()
    out = []
    for r in rows:
        out.append({"business_date": r["business_date"], "mch_id": r["mch_id"], "currency": r["currency"],
                    "paid": int(r["paid"]), "refunded": int(r["refunded"]),
                    "net": int(r["paid"]) - int(r["refunded"]), "pay_count": int(r["pays"]),
                    "refund_count": int(r["refunds"])})
    return out


def _with_books(merchants: list[dict[str, Any]], balances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each merchant and currency's sales totals with its books balances (zeros where one side has none)."""
    zero = {"paid": 0, "refunded": 0, "net": 0, "pay_count": 0, "refund_count": 0}
    out = {(m["mch_id"], m["currency"]): {**m, **dict.fromkeys(BOOKS, 0)} for m in merchants}
    for b in balances:
        m = out.setdefault((b["mch_id"], b["currency"]), {"mch_id": b["mch_id"], "currency": b["currency"], **zero})
        m.update({k: int(b[k]) for k in BOOKS})
    return [out[k] for k in sorted(out)]


def _identity(t: dict[str, Any]) -> str:
    total = sum(t[k] for k in BOOKS)
    return (f"clearing {t['clearing']} + in_transit {t['in_transit']} + bank {t['bank']} + fees {t['fees']} = {total} "
            f"but paid - refunded = {t['net']}")


def run_checks(conn: psycopg.Connection, *, parked_before: datetime | None = None,
               day: tuple[str, datetime, datetime] | None = None, tz: str = "UTC") -> CheckReport:
    """Run every invariant check in one read-only snapshot. Raises psycopg errors on DB failure.

    `day` = (business date, window start, window end) adds that day's totals per merchant and
    currency; `tz` is the settlement zone the window was computed in.
    """
    violations: list[dict[str, Any]] = []
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        if idle:  # one consistent snapshot for every check
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for row in cur.execute(q("check_unbalanced_entries")).fetchall():
            violations.append({"rule": "entry_balanced", "entry_id": row["id"], "pay_order_id": row["pay_order_id"],
                               "detail": f"{row['legs']} leg(s) summing to {row['total']}"})
        for row in cur.execute(q("check_currency_totals")).fetchall():
            if row["total"] != 0:
                violations.append({"rule": "currency_sums_to_zero", "currency": row["currency"],
                                   "detail": f"postings sum to {row['total']}"})
        for row in cur.execute(q("check_refundable")).fetchall():
            violations.append({"rule": "refundable_is_amount_minus_refunds", "pay_order_id": row["pay_order_id"],
                               "detail": f"amount {row['amount']}, refunded {row['refunded']} in balance but "
                                         f"{row['journal_refunded']} in the journal"})
        for row in cur.execute(q("check_orphan_refunds")).fetchall():
            violations.append({"rule": "refund_has_original", "pay_order_id": row["pay_order_id"],
                               "detail": f"original {row['original_order_id']} has no posted pay"})
        for row in cur.execute(q("check_posted_without_entry")).fetchall():
            violations.append({"rule": "posted_order_has_entry", "pay_order_id": row["pay_order_id"],
                               "detail": "order is marked posted but has no journal entry"})
        for row in cur.execute(q("check_books_documents")).fetchall():
            violations.append({"rule": row["rule"], "subject": row["subject"], "detail": row["detail"]})
        merchants = _with_books(_merchant_totals(cur, None, None), cur.execute(q("books_balances")).fetchall())
        for m in merchants:
            if sum(m[k] for k in BOOKS) != m["net"]:
                violations.append({"rule": "books_add_up", "mch_id": m["mch_id"], "currency": m["currency"],
                                   "detail": _identity(m)})
        totals: dict[str, dict[str, int]] = {}
        for m in merchants:
            t = totals.setdefault(m["currency"], {"paid": 0, "refunded": 0, "pay_count": 0, "refund_count": 0,
                                                  "fees": 0, "in_transit": 0, "bank": 0})
            for k in t:
                t[k] += m[k]
        clearing = {r["currency"]: r["clearing"] for r in cur.execute(q("clearing_by_currency")).fetchall()}
        currencies = {}
        for cur_code in sorted(set(totals) | set(clearing)):
            t = totals.get(cur_code, {"paid": 0, "refunded": 0, "pay_count": 0, "refund_count": 0,
                                      "fees": 0, "in_transit": 0, "bank": 0})
            c = currencies[cur_code] = {**{k: int(v) for k, v in t.items()},
                                        "net": int(t["paid"]) - int(t["refunded"]),
                                        "clearing": int(clearing.get(cur_code, 0))}
            # clearing = paid - refunded on a ledger without the books' entries, as before them
            if sum(c[k] for k in BOOKS) != c["net"]:
                violations.append({"rule": "clearing_equals_net", "currency": cur_code, "detail": _identity(c)})
        parked = []
        if parked_before is not None:
            parked = [
                {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
                for r in cur.execute(q("parked_older_than"), {"before": parked_before}).fetchall()
            ]
        day_totals = None
        if day is not None:
            label, start, end = day
            merchants_of_day = [{k: v for k, v in m.items() if k != "business_date"}
                                for m in merchant_day_totals(cur, tz, start, end)]
            day_totals = {"date": label, "window_start": start.isoformat(), "window_end": end.isoformat(),
                          "merchants": merchants_of_day}
    return CheckReport(violations, currencies, parked, merchants, day_totals)
