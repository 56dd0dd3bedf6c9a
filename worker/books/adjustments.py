"""Manual adjustments: a person moves money between two of a merchant's book accounts, with a reason.

An adjustment is a new `adjustment` entry (one debit, one credit, of one merchant and currency)
and a row saying who made it, why, and (when it settles one) which mismatch; history is never
edited. Its accounts are among clearing, fees, in_transit and bank, so it keeps the identity
`clearing + in_transit + bank + fees = paid - refunded` (a correction of a sale is a reversal).

Each adjustment has a key: the operator's (`--key`, so that a command run twice posts once) or a
new random one. The same key again with the same content changes nothing; with other content it
is refused, listing the differences.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker import db, logs, money
from worker.books import entries
from worker.books.errors import ContradictionError, InputError
from worker.books.imports import lock
from worker.merchants import Merchants
from worker.sqlfiles import q

log = logs.get("worker.books")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class Adjustment:
    """What an operator asks for: Dr `debit`, Cr `credit`, `amount` cents (> 0)."""

    mch_id: str
    currency: str
    debit: str
    credit: str
    amount: int
    reason: str
    author: str
    key: str | None = None
    mismatch_id: int | None = None


@dataclass(frozen=True)
class AdjustmentResult:
    """The entry of an adjustment, and whether this call posted it (`posted`) or found it (`unchanged`)."""

    status: str
    entry_id: int
    key: str
    adjustment: Adjustment

    def as_json(self) -> dict[str, Any]:
        a = self.adjustment
        return {"status": self.status, "entry_id": self.entry_id, "key": self.key, "mch_id": a.mch_id,
                "currency": a.currency, "debit": a.debit, "credit": a.credit, **money.fields("amount", a.amount),
                "reason": a.reason, "by": a.author, "mismatch_id": a.mismatch_id}


def validate(a: Adjustment, merchants: Merchants) -> Adjustment:
    """The adjustment with its currency upper-cased and texts stripped. Raises InputError naming the option."""
    if a.mch_id not in merchants:
        raise InputError(f"--mch-id: merchant {a.mch_id!r} is not configured (IOTPAY_MERCHANTS)")
    currency = a.currency.upper()
    if not _CURRENCY.match(currency):
        raise InputError(f"--currency: {a.currency!r} is not a three-letter currency code")
    for option, account in (("--debit", a.debit), ("--credit", a.credit)):
        if account not in entries.BOOK_ACCOUNTS:
            raise InputError(f"{option}: {account!r} is not one of {', '.join(entries.BOOK_ACCOUNTS)}")
    if a.debit == a.credit:
        raise InputError(f"--debit and --credit are both {a.debit}: an adjustment moves money between two accounts")
    if a.amount <= 0:
        raise InputError(f"--amount: must be more than 0, got {money.decimal(a.amount)} (swap --debit and --credit "
                         "to move money the other way)")
    reason, author = a.reason.strip(), a.author.strip()
    if not reason:
        raise InputError("--reason: say why (it stays with the entry)")
    if not author:
        raise InputError("--by: say who makes the adjustment")
    if a.key is not None and not a.key.strip():
        raise InputError("--key: empty")
    return Adjustment(a.mch_id, currency, a.debit, a.credit, a.amount, reason, author,
                      a.key.strip() if a.key else None, a.mismatch_id)


def add_adjustment(conn: psycopg.Connection, a: Adjustment, merchants: Merchants, *,
                   occurred_at: datetime) -> AdjustmentResult:
    """Post an adjustment (validated here), dated `occurred_at`, once per key.

    Raises InputError (a bad value, naming its option), ContradictionError (its key was used for another
    adjustment, with the differences), RetryableError when PostgreSQL is unavailable.
    """
    a = validate(a, merchants)
    key = a.key or uuid.uuid4().hex
    with db.translated("while posting an adjustment"), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        lock(cur)
        old = cur.execute(q("books_adjustment_by_key"), {"key": key}).fetchone()
        if old is not None:
            was = Adjustment(old["mch_id"], old["currency"], old["debit_account"], old["credit_account"],
                             int(old["amount"]), old["reason"], old["author"], key, old["mismatch_id"])
            differences = [f"{f.name} {_show(f.name, getattr(a, f.name))} here, {_show(f.name, getattr(was, f.name))} "
                           f"in entry {old['entry_id']}"
                           for f in fields(Adjustment) if f.name != "key" and getattr(a, f.name) != getattr(was, f.name)]
            if differences:
                raise ContradictionError(f"adjustment {key!r}", differences)
            return AdjustmentResult("unchanged", int(old["entry_id"]), key, was)
        doc = entries.doc_key("adjustment", key)
        ids = entries.post_entries(cur, "adjustment", a.mch_id, a.currency, occurred_at, [(doc, a.amount)],
                                   debit=a.debit, credit=a.credit, memo=a.reason)
        cur.execute(q("books_insert_adjustment"), {
            "entry_id": ids[doc], "mch_id": a.mch_id, "currency": a.currency, "debit_account": a.debit,
            "credit_account": a.credit, "amount": a.amount, "reason": a.reason, "author": a.author,
            "mismatch_id": a.mismatch_id, "key": key})
    log.info("books.adjustment_posted", entry_id=ids[doc], mch_id=a.mch_id, currency=a.currency, debit=a.debit,
             credit=a.credit, amount=a.amount, by=a.author)
    return AdjustmentResult("posted", ids[doc], key, a)


def _show(name: str, value: Any) -> str:
    return money.decimal(value) if name == "amount" else repr(value)
