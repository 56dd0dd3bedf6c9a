"""Property: any reordering with duplicates of a stream whose refunds fit gives the same ledger.

The same stream is posted twice into one database under two merchant ids: once in order and
de-duplicated ("A"), once shuffled with duplicates ("B"). Entries, balances and refundables
must be equal, and every invariant of `check` must hold.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.iotpay.notify import Notify
from worker.ledger.checks import run_checks
from worker.ledger.posting import post_notify

_run = itertools.count()


def _notify(mch: str, order: str, pay_type: str, amount: int, original: str | None, currency: str) -> Notify:
    return Notify(family="v3", mch_id=mch, pay_order_id=f"{mch}-{order}", mch_order_no=order,
                  original_order_id=f"{mch}-{original}" if original else None, pay_type=pay_type, amount=amount,
                  currency=currency, status=2, refundable=None, pay_succ_time=datetime(2025, 6, 1, tzinfo=timezone.utc),
                  channel="PF_CC", card_type="V", card_num=None, auth_num=None, trans_num=None, invoice_num=None,
                  sign=None, fields={})


@st.composite
def streams(draw):
    """(ordered events, shuffled-with-duplicates events), events = (order, pay_type, amount, original, currency)."""
    events = []
    for p in range(draw(st.integers(1, 4))):
        amount = draw(st.integers(1, 100_000))
        currency = draw(st.sampled_from(["CAD", "USD"]))
        events.append((f"P{p}", "pay", amount, None, currency))
        if draw(st.booleans()) and draw(st.booleans()):
            events.append((f"V{p}", "void", amount, f"P{p}", currency))
            continue
        left = amount
        for r in range(draw(st.integers(0, 3))):
            if left == 0:
                break
            part = draw(st.integers(1, left))
            left -= part
            events.append((f"R{p}.{r}", "refund", part, f"P{p}", currency))
    shuffled = draw(st.permutations(events))
    dups = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    mixed = list(shuffled)
    for d in dups:
        mixed.insert(draw(st.integers(0, len(mixed))), d)
    return events, mixed


def _snapshot(conn: psycopg.Connection, mch: str):
    cut = len(mch) + 1
    entries = sorted(
        (oid[cut:], kind, amount, (orig or "")[cut:])
        for oid, kind, amount, orig in conn.execute(
            "SELECT pay_order_id, kind, amount, original_order_id FROM journal_entries WHERE mch_id = %s", (mch,))
    )
    balances = sorted(conn.execute(
        "SELECT a.kind, a.currency, sum(p.amount) FROM postings p JOIN accounts a ON a.id = p.account_id "
        "WHERE a.mch_id = %s GROUP BY 1, 2", (mch,)).fetchall())
    refundables = sorted((oid[cut:], r) for oid, r in conn.execute(
        "SELECT pay_order_id, refundable FROM pay_balances WHERE mch_id = %s", (mch,)))
    states = sorted((oid[cut:], s) for oid, s in conn.execute("SELECT pay_order_id, state FROM orders WHERE mch_id = %s", (mch,)))
    conn.rollback()
    return entries, balances, refundables, states


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(streams())
def test_reordered_duplicated_stream_gives_the_ordered_ledger(conn, stream):
    ordered, mixed = stream
    n = next(_run)
    a, b = f"A{n}", f"B{n}"
    for e in ordered:
        post_notify(conn, _notify(a, *e))
    for e in mixed:
        post_notify(conn, _notify(b, *e))
    snap_a, snap_b = _snapshot(conn, a), _snapshot(conn, b)
    assert snap_a == snap_b
    assert all(state == "posted" for _, state in snap_a[3])
    assert len(snap_a[0]) == len(ordered)
    assert run_checks(conn).ok
