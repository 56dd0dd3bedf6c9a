"""The `deposit` entry of a bank transaction: money that reached the bank from a merchant's payouts.

Posted once the bank transaction is matched to the payouts it covers (the matching, not an
import, decides that a credit is IOTPay's): Dr bank, Cr in_transit by its amount (a bank debit:
the other way round), dated when the bank posted it. One entry per bank transaction, keyed by the
statement's account and the transaction's own id.
"""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from worker import db, logs
from worker.books import entries
from worker.books.errors import ContradictionError, InputError
from worker.books.imports import lock
from worker.sqlfiles import q

log = logs.get("worker.books")


def post_deposit(conn: psycopg.Connection, bank_transaction_id: int, mch_id: str, *, tz: ZoneInfo) -> int:
    """Post the deposit of one imported bank transaction to a merchant; returns its entry id (the existing one
    when it was posted to this merchant before). Runs in its own transaction, or in a savepoint of the caller's.

    Raises InputError for an unknown bank transaction, ContradictionError when it was posted to another
    merchant, RetryableError when PostgreSQL is unavailable.
    """
    with db.translated("while posting a deposit"), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        lock(cur)
        txn = cur.execute(q("books_bank_transaction"), {"id": bank_transaction_id}).fetchone()
        if txn is None:
            raise InputError(f"no bank transaction {bank_transaction_id}")
        if txn["deposit_entry_id"] is not None:
            if txn["deposit_mch_id"] != mch_id:
                raise ContradictionError(f"the deposit of bank transaction {bank_transaction_id}", [
                    f"posted to merchant {txn['deposit_mch_id']} (entry {txn['deposit_entry_id']}), not {mch_id}"])
            return int(txn["deposit_entry_id"])
        occurred = txn["posted_at"] or datetime.combine(txn["posted_on"], time(0), tzinfo=tz)
        key = entries.doc_key("deposit", txn["account"], txn["txn_id"])
        ids = entries.post_entries(cur, "deposit", mch_id, txn["currency"], occurred, [(key, int(txn["amount"]))])
        cur.execute(q("books_insert_deposit"), {"entry_id": ids[key], "bank_transaction_id": bank_transaction_id,
                                                "mch_id": mch_id, "currency": txn["currency"]})
    log.info("books.deposit_posted", bank_transaction_id=bank_transaction_id, mch_id=mch_id, entry_id=ids[key])
    return ids[key]
