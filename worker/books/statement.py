"""One transaction of a bank statement, whatever the format it came in."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime


@dataclass(frozen=True)
class BankLine:
    """A bank transaction: `amount` in cents, positive for money in (a credit). `txn_id` is the document's own
    id (OFX FITID, BAI2 bank reference, the CSV's id column), or one derived from its content (`txn_id_derived`)."""

    account: str
    txn_id: str
    posted_on: date
    amount: int
    currency: str
    posted_at: datetime | None = None
    bank_id: str | None = None
    type: str | None = None
    description: str | None = None
    reference: str | None = None
    line: int | None = None
    txn_id_derived: bool = False


def with_derived_ids(lines: Iterable[BankLine]) -> list[BankLine]:
    """Give each line without an id of its own one derived from its content: its account, date, amount,
    description and reference, and how many identical lines came before it in the file (so two identical
    transactions on one day stay two). The same statement, or one overlapping it, derives the same ids."""
    seen: Counter[tuple[object, ...]] = Counter()
    out = []
    for ln in lines:
        if ln.txn_id:
            out.append(ln)
            continue
        content = (ln.account, ln.posted_on.isoformat(), ln.amount, ln.currency, ln.description or "",
                   ln.reference or "")
        seen[content] += 1
        digest = hashlib.sha256("\x1f".join(map(str, (*content, seen[content]))).encode()).hexdigest()[:24]
        out.append(replace(ln, txn_id=f"derived:{digest}", txn_id_derived=True))
    return out
