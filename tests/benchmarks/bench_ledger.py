"""Benchmark: notifies posted per second through the posting code, next to the ceiling.

The ceiling is plain single-row INSERT commits into a bare table of the same PostgreSQL from the
same client library, at the same concurrency (processes), measured in the same run
(tests/benchmarks/ceilings.py). The notifies are posted twice over (other order ids): one notify
a transaction (posting.post_notify), then in batches of 50 a transaction, as the worker posts them
(worker/ledger/batch.py: the plain ones as a set, the rest one at a time). Run:

    python -m tests.benchmarks.bench_ledger [--notifies 20000] [--concurrency 4] [--database-url URL]

It creates (and drops) its own database on the server of --database-url / TEST_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from datetime import datetime, timezone

import psycopg

from tests.benchmarks.ceilings import insert_commits, ratio
from tests.fix_db import DEFAULT_TEST_DATABASE_URL, create_database, drop_database, with_dbname
from worker.migrations import migrate

GOAL = 0.5  # posting through the ledger code, as a share of the single-row INSERT ceiling


def _notify(i: int):
    from worker.iotpay.notify import Notify

    refund = i % 4 == 3  # every fourth notify refunds a quarter of the pay before it
    pay = i - 1 if refund else i
    return Notify(family="v3", mch_id=f"M{i % 8}" if not refund else f"M{pay % 8}", pay_order_id=f"O{i}",
                  mch_order_no=f"N{i}", original_order_id=f"O{pay}" if refund else None,
                  pay_type="refund" if refund else "pay", amount=250 if refund else 1000, currency="CAD", status=2,
                  refundable=None if refund else 1000, pay_succ_time=datetime.now(timezone.utc), channel="PF_CC",
                  card_type="V", card_num="432567******2266", auth_num="A", trans_num="T", invoice_num="I", sign=None,
                  fields={})


def _post_worker(url: str, ids: list[int], barrier, out) -> None:
    import logging

    import structlog

    from worker.ledger.posting import post_notify

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with psycopg.connect(url) as conn:
        notifies = [_notify(i) for i in ids]
        barrier.wait()
        t0 = time.perf_counter()
        for n in notifies:
            post_notify(conn, n, source="ingest")
        out.put(time.perf_counter() - t0)


def _batch_worker(url: str, ids: list[int], barrier, out, size: int = 50) -> None:
    """Post the notifies in batches of `size`, each batch one transaction (worker/ledger/batch.py)."""
    import logging

    import structlog

    from worker.ledger.batch import post_batch

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with psycopg.connect(url) as conn:
        notifies = [_notify(i) for i in ids]
        barrier.wait()
        t0 = time.perf_counter()
        for start in range(0, len(notifies), size):
            with conn.transaction():
                post_batch(conn, notifies[start:start + size], source="ingest")
        out.put(time.perf_counter() - t0)


def _run(target, url: str, n: int, concurrency: int, offset: int = 0) -> float:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(concurrency), ctx.Queue()
    # pays and their refunds go to the same process, in order, so every refund finds its pay
    chunks = [[i for i in range(n) if (i // 4) % concurrency == c] for c in range(concurrency)]
    procs = [ctx.Process(target=target, args=(url, [offset + i for i in chunk], barrier, out)) for chunk in chunks]
    for p in procs:
        p.start()
    wall = max(out.get() for _ in procs)
    for p in procs:
        p.join()
    return n / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notifies", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL))
    args = ap.parse_args()
    name = create_database(args.database_url, "iotledger_bench")
    url = with_dbname(args.database_url, name)
    try:
        migrate(url)
        ceiling = insert_commits(url, args.notifies, processes=args.concurrency)
        posted = _run(_post_worker, url, args.notifies, args.concurrency)
        batched = _run(_batch_worker, url, args.notifies, args.concurrency, offset=args.notifies)
        with psycopg.connect(url) as conn:
            entries = conn.execute("SELECT count(*) FROM journal_entries").fetchone()[0]
            from worker.ledger.checks import run_checks

            ok = run_checks(conn).ok
    finally:
        drop_database(args.database_url, name)
    print(f"notifies: {args.notifies} twice  concurrency: {args.concurrency} processes  entries posted: {entries}  "
          f"check ok: {ok}")
    print(f"ceiling (1-row INSERT+commit): {ceiling:8.0f} inserts/s at {args.concurrency} connections")
    print(f"one notify a transaction:      {posted:8.0f} notifies/s  {ratio(posted, ceiling):>6} of the ceiling")
    print(f"batches of 50 (the worker's):  {batched:8.0f} notifies/s  {ratio(batched, ceiling):>6} of the ceiling "
          f"(goal >= {GOAL:.1f}x)")


if __name__ == "__main__":
    main()
