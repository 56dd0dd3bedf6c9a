"""The books' journal entries: fee, payout, deposit and adjustment, each keyed by its source document line.

An entry is one debit and one credit of its amount (sql/010_books.sql holds every rule). Amounts
are signed as the document gives them: a positive amount debits the first account of the kind
and credits the second, a negative one (a returned fee, a negative payout, a bank debit) the
other way round.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

import psycopg

from worker.sqlfiles import q

# kind -> (the account a positive amount debits, the account it credits)
LEGS = {"fee": ("fees", "clearing"), "payout": ("in_transit", "clearing"), "deposit": ("bank", "in_transit")}
BOOK_ACCOUNTS = ("clearing", "fees", "in_transit", "bank")  # the accounts an adjustment may move money between


def doc_key(kind: str, *parts: str) -> str:
    """The idempotency key of an entry: its kind and the document's own ids, as a JSON array (unambiguous)."""
    return json.dumps([kind, *parts], separators=(",", ":"), ensure_ascii=False)


def ensure_accounts(cur: psycopg.Cursor, mch_id: str, currency: str) -> None:
    """Create the six accounts of a merchant and currency where missing (the ledger's three and the books')."""
    cur.execute(q("books_ensure_accounts"), {"mch_id": mch_id, "currency": currency})


def post_entries(cur: psycopg.Cursor, kind: str, mch_id: str, currency: str, occurred_at: datetime,
                 items: Sequence[tuple[str, int]], *, debit: str | None = None, credit: str | None = None,
                 memo: str | None = None) -> dict[str, int]:
    """Post one entry per (doc_key, signed amount) in one statement; returns {doc_key: entry id}.

    The accounts are the kind's (LEGS) unless given (an adjustment). Amounts of 0 are the caller's
    to leave out. Raises psycopg errors (a key posted before: UniqueViolation).
    """
    if not items:
        return {}
    dr, cr = (debit, credit) if debit else LEGS[kind]
    ensure_accounts(cur, mch_id, currency)
    rows = cur.execute(q("books_post_entries"), {
        "kind": kind, "mch_id": mch_id, "currency": currency, "occurred_at": occurred_at, "memo": memo,
        "doc_keys": [k for k, _ in items], "amounts": [a for _, a in items], "debit": dr, "credit": cr,
    }).fetchall()
    return {r["doc_key"]: r["id"] for r in rows}
