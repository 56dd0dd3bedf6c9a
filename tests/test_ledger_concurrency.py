"""Several processes posting the same notifies at once: one entry each, balances right."""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter

import psycopg

from tests.factories import v3_pay, v3_refund
from worker.ledger.checks import run_checks


def _worker(db_url: str, messages: list[dict], seed: int, barrier, out) -> None:
    from tests.ledger_helpers import post

    random.Random(seed).shuffle(messages)
    outcomes: Counter[str] = Counter()
    with psycopg.connect(db_url) as conn:
        barrier.wait(30)
        for msg in messages:
            outcomes[post(conn, msg).outcome.value] += 1
    out.put(dict(outcomes))


def _run(db_url: str, messages: list, processes: int, target=_worker) -> list:
    """Run target(db_url, messages, seed, barrier, out) in several processes at once; what each put in out."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [ctx.Process(target=target, args=(db_url, list(messages), seed, barrier, out)) for seed in range(processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return results


def test_the_same_notify_fifty_times_at_once_from_several_processes_posts_once(db_url):
    results = _run(db_url, [v3_pay("PC1", 1234)] * 13, processes=4)  # 52 deliveries
    assert sum(r.get("posted", 0) for r in results) == 1
    assert sum(r.get("duplicate", 0) for r in results) == 51
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM journal_entries").fetchone()[0] == 1
        assert conn.execute("SELECT sum(amount) FROM postings WHERE amount > 0").fetchone()[0] == 1234


def test_pays_and_refunds_racing_in_every_order_post_exactly_once(db_url):
    messages = []
    for i in range(20):
        messages.append(v3_pay(f"PC{i}", 1000 + i))
        messages.append(v3_refund(f"RPa{i}", f"PC{i}", 300))
        messages.append(v3_refund(f"RPb{i}", f"PC{i}", 500))
    _run(db_url, messages, processes=4)
    with psycopg.connect(db_url) as conn:
        per_order = conn.execute("SELECT pay_order_id, count(*) FROM journal_entries GROUP BY 1").fetchall()
        assert len(per_order) == 60 and {c for _, c in per_order} == {1}
        refundables = dict(conn.execute("SELECT pay_order_id, refundable FROM pay_balances").fetchall())
        assert refundables == {f"PC{i}": 200 + i for i in range(20)}
        assert conn.execute("SELECT count(*) FROM orders WHERE state <> 'posted'").fetchone()[0] == 0
        report = run_checks(conn)
    assert report.ok and report.currencies["CAD"]["net"] == sum(200 + i for i in range(20))
