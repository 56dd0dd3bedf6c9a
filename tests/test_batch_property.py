"""Property: a stream posted in batches gives exactly what it gives posted one notify at a time.

Random streams over a few orders (statuses moving both ways, content changing while pending,
refunds before their pays, refunds beyond the refundable, voids, duplicates, notifies and sweep
answers) are posted twice into one database under two merchant ids: one notify a transaction
(`post_notify`, merchant "A"), and in batches of random sizes (`worker/ledger/batch.py`, the
worker's way, merchant "B"), each batch one transaction. Each notify's outcome and reason, and
every row the ledger writes (orders, entries, legs, refundables, exceptions), must be the same;
`check` must hold. Both merchants' accounts exist beforehand, so the set path is taken.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import KEY, v3_pay, v3_refund
from tests.ledger_helpers import TZ
from worker.iotpay.notify import Notify, parse_params
from worker.iotpay.signature import signed
from worker.ledger.batch import post_batch
from worker.ledger.checks import run_checks
from worker.ledger.outcome import PostResult
from worker.ledger.posting import post_notify

_run = itertools.count()
# order key -> (pay type, original key, amounts it may carry)
ORDERS = {"P1": ("pay", None, (1000, 1150)), "P2": ("pay", None, (500, 500)), "P3": ("pay", None, (700, 700)),
          "R1": ("refund", "P1", (300, 400)), "R2": ("refund", "P1", (700, 800)), "R3": ("refund", "P2", (200, 250)),
          "V3": ("void", "P3", (700, 100))}
STATUSES = st.sampled_from([2, 2, 2, 2, 3, 0, 1, 9, 4, 7])
EVENTS = st.tuples(st.sampled_from(sorted(ORDERS)), STATUSES, st.integers(0, 1), st.sampled_from(["notify", "query"]),
                   st.sampled_from([None, None, 0, 1]))


def _notify(mch: str, key: str, status: int, variant: int, refundable_shift: int | None) -> Notify:
    kind, original, amounts = ORDERS[key]
    oid, amount = f"{mch}-{key}", amounts[variant]
    if kind == "pay":
        refundable = None if refundable_shift is None else amount - refundable_shift
        params: dict[str, Any] = v3_pay(oid, amount, mch=mch, status=status, mch_order_no=oid, refundable=refundable)
    else:
        params = v3_refund(oid, f"{mch}-{original}", amount, mch=mch, status=status, pay_type=kind)
        if refundable_shift:
            params = signed({**{k: v for k, v in params.items() if k != "sign"}, "refundable": refundable_shift}, KEY)
    return parse_params(params, TZ)


def _snapshot(conn: psycopg.Connection, mch: str) -> dict[str, list[str]]:
    """Every row the ledger wrote for one merchant, as text with the merchant's name taken out."""
    queries = {
        "orders": """SELECT pay_order_id, pay_type, original_order_id, amount, currency, status, state, reason,
                            gateway_refundable, source, posted_at IS NOT NULL FROM orders WHERE mch_id = %s""",
        "entries": """SELECT pay_order_id, kind, original_order_id, amount, currency, occurred_at FROM journal_entries
                      WHERE mch_id = %s""",
        "legs": """SELECT e.pay_order_id, a.kind, p.amount FROM postings p JOIN journal_entries e ON e.id = p.entry_id
                   JOIN accounts a ON a.id = p.account_id WHERE p.mch_id = %s""",
        "balances": "SELECT pay_order_id, amount, refunded, refundable FROM pay_balances WHERE mch_id = %s",
        "exceptions": """SELECT pay_order_id, kind, reason, dedup_key, details - 'at' FROM ledger_exceptions
                         WHERE pay_order_id LIKE %s || '-%%'""",
        "awaiting": """SELECT e.pay_order_id FROM entries_awaiting_file f JOIN journal_entries e ON e.id = f.entry_id
                       WHERE e.mch_id = %s""",
    }
    # fingerprints (in conflict keys) hash the merchant too
    out = {name: sorted(re.sub(r"\b[0-9a-f]{32}\b", "F", repr(row).replace(mch, "M"))
                        for row in conn.execute(sql, (mch,)).fetchall())
           for name, sql in queries.items()}
    conn.rollback()
    return out


def _said(result: PostResult | Exception, mch: str) -> tuple[str, str | None]:
    if isinstance(result, Exception):
        return type(result).__name__, str(result).replace(mch, "M")
    return result.outcome.value, (result.reason or "").replace(mch, "M")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(EVENTS, min_size=1, max_size=18), st.lists(st.integers(1, 9), min_size=1, max_size=18))
def test_a_stream_posted_in_batches_gives_what_it_gives_one_at_a_time(conn, events, sizes):
    run = next(_run)
    alone, batched = f"alone{run}", f"batched{run}"  # names no other text contains
    for mch in (alone, batched):  # their accounts exist before: the batches take the set path
        post_notify(conn, parse_params(v3_pay(f"{mch}-W", 100, mch=mch), TZ))

    said_alone = []
    for key, status, variant, source, shift in events:
        try:
            said_alone.append(_said(post_notify(conn, _notify(alone, key, status, variant, shift), source=source), alone))
        except Exception as exc:  # noqa: BLE001 - compared with what the batch says
            conn.rollback()
            said_alone.append(_said(exc, alone))

    said_batched = []
    chunks, i = [], 0
    for size in itertools.cycle(sizes):
        if i >= len(events):
            break
        chunk = events[i:i + size]
        source = chunk[0][3]
        chunk = list(itertools.takewhile(lambda e: e[3] == source, chunk))  # one source a batch
        chunks.append((source, chunk))
        i += len(chunk)
    for source, chunk in chunks:
        with conn.transaction():
            results = post_batch(conn, [_notify(batched, k, s, v, sh) for k, s, v, _, sh in chunk], source=source)
        said_batched += [_said(r, batched) for r in results]

    assert said_batched == said_alone
    a, b = _snapshot(conn, alone), _snapshot(conn, batched)
    for table in a:
        assert b[table] == a[table], table
    assert run_checks(conn).ok
    conn.rollback()


def test_the_property_reaches_the_set_path(conn):
    """The stream above does take the set path: a plain pay and refund in one batch are one statement."""
    for mch in ("S1",):
        post_notify(conn, parse_params(v3_pay(f"{mch}-W", 100, mch=mch), TZ))
    sent: list[str] = []

    class Counting(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):  # type: ignore[no-untyped-def]
            sent.append(query if isinstance(query, str) else query.decode())
            return super().execute(query, params, **kwargs)

    conn.cursor_factory = Counting
    with conn.transaction():
        results = post_batch(conn, [_notify("S1", "P1", 2, 0, None), _notify("S1", "R1", 2, 0, None),
                                    _notify("S1", "P2", 1, 0, None)], source="notify")
    conn.cursor_factory = psycopg.Cursor
    assert [r.outcome.value for r in results] == ["posted", "posted", "pending"]  # type: ignore[union-attr]
    assert sum("INSERT INTO orders" in s for s in sent) == 2  # two rounds: P1 and P2, then R1
    assert conn.execute("SELECT refundable FROM pay_balances WHERE pay_order_id = 'S1-P1'").fetchone() == (700,)
    conn.rollback()
