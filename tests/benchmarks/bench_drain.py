"""Benchmark: notifies posted per second end to end while real dramatiq workers drain a backlog,
next to the single-row INSERT commit ceiling at the same concurrency, measured in the same run.

    python -m tests.benchmarks.bench_drain [--rows 100000] [--processes 2] [--threads 4]
    python -m tests.benchmarks.bench_drain --rows 30000 --scaling 1,2,4    # the cost of growth

The inbox is filled with signed V3 notifies (four pays for each refund of one of them), as the
ingress would have stored them, and every inbox id is queued in Redis as redrive queues a
backlog (`messages.send_many`: 50 ids a message); then `iotledger worker` starts and the clock
runs until every row is done: each message claims its rows and others waiting, verifies each
sign again, posts them through the ledger code and marks the rows, a batch a transaction. The ceiling (ceilings.py) is plain
single-row INSERT + COMMIT into a bare table of the same database from as many connections as
the drain has worker threads (processes x threads), measured just before the workers start.
`--scaling` repeats the whole run (a fresh backlog each time) for each number of worker
processes, the same threads each, and prints a table. It creates (and drops) its own database
on TEST_DATABASE_URL's server and uses a unique queue on TEST_REDIS_URL / REDIS_URL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import redis

from tests.benchmarks.ceilings import insert_commits, ratio
from tests.factories import MERCHANTS_JSON, v3_pay, v3_refund
from tests.fix_db import DEFAULT_TEST_DATABASE_URL, create_database, drop_database, with_dbname
from tests.fix_redis import DEFAULT_TEST_REDIS_URL
from worker.broker import sender_broker
from worker.migrations import migrate
from worker.pipeline import messages
from worker.processes import service_env, start_worker, stop


def bodies(n: int):
    """n notify bodies: every fifth one refunds part of the pay before it."""
    for i in range(n):
        if i % 5 == 4:
            params = v3_refund(f"RPD{i:08d}", f"PCD{i - 1:08d}", 250)
        else:
            params = v3_pay(f"PCD{i:08d}", 1000 + i % 997)
        yield params["payOrderId"], json.dumps(params).encode()


def fill(db_url: str, n: int) -> None:
    """COPY n rows into the inbox, state queued, as the ingress stores them."""
    now = datetime.now(timezone.utc)
    with psycopg.connect(db_url) as conn, conn.cursor() as cur:
        with cur.copy("COPY inbox (body_sha256, body, content_type, family, remote_addr, mch_id, pay_order_id, "
                      "received_at, verified_at, state, queued_at) FROM STDIN") as copy:
            for oid, body in bodies(n):
                copy.write_row((hashlib.sha256(body).digest(), body, "application/json", "v3", "127.0.0.1",
                                "10000701", oid, now, now, "queued", now))
        conn.commit()


def done(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM inbox WHERE state = 'done'").fetchone()[0]


GOAL = 0.3  # the drain end to end, as a share of the single-row INSERT ceiling


@dataclass(frozen=True)
class Drain:
    """One drain and its ceiling."""

    processes: int
    threads: int
    rows: int
    seconds: float  # from worker start to the last row done
    warm_seconds: float  # from the first row processed to the last (inbox.processed_at): without startup
    ceiling: float  # single-row INSERT commits/s at processes x threads connections

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    @property
    def warm_rate(self) -> float:
        return self.rows / self.warm_seconds


def drain(server: str, redis_url: str, rows: int, processes: int, threads: int, ceiling_rows: int) -> Drain:
    """Fill a backlog in a scratch database, measure the ceiling, drain it; return the figures.

    Raises SystemExit when the workers exit or stop making progress.
    """
    q = f"bench{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench_drain_"))
    name = create_database(server, "bench_drain")
    db_url = with_dbname(server, name)
    worker = None
    try:
        migrate(db_url)
        t0 = time.perf_counter()
        fill(db_url, rows)
        t1 = time.perf_counter()
        broker = sender_broker(redis_url)
        with psycopg.connect(db_url) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM inbox ORDER BY id")]
        for start in range(0, len(ids), 500):  # as redrive queues a backlog: 500 rows a round trip
            messages.send_many(broker, q, ids[start:start + 500])
        t2 = time.perf_counter()
        print(f"backlog: {rows} inbox rows stored in {t1 - t0:.1f}s, queued in {t2 - t1:.1f}s "
              f"({rows / (t2 - t1):.0f} enqueues/s)")
        ceiling = insert_commits(db_url, ceiling_rows, processes=processes, threads=threads)
        env = service_env(db_url, redis_url, q, MERCHANTS_JSON, tmp)
        start = time.perf_counter()
        worker = start_worker(env, processes=processes, threads=threads)
        last = 0
        while True:
            time.sleep(1.0)
            n = done(db_url)
            if n >= rows:
                break
            if worker.poll() is not None:
                raise SystemExit(f"worker exited with {worker.returncode}; see {tmp / 'worker.log'}")
            if n == last and time.perf_counter() - start > 60:
                raise SystemExit(f"no progress at {n} rows; see {tmp / 'worker.log'}")
            last = n
        end = time.perf_counter()
        with psycopg.connect(db_url) as conn:
            outcomes = dict(conn.execute("SELECT outcome, count(*) FROM inbox GROUP BY outcome").fetchall())
            entries = conn.execute("SELECT count(*) FROM journal_entries").fetchone()[0]
            first, last_done = conn.execute("SELECT min(processed_at), max(processed_at) FROM inbox").fetchone()
        result = Drain(processes, threads, rows, end - start, (last_done - first).total_seconds(), ceiling)
        print(f"drained {rows} notifies with {processes} processes x {threads} threads ({os.cpu_count()} CPUs) in "
              f"{result.seconds:.1f}s from worker start: {result.rate:.0f} notifies/s "
              f"({result.warm_rate:.0f}/s after startup)")
        print(f"  ceiling (1-row INSERT+commit, {processes * threads} connections): {ceiling:.0f} inserts/s; "
              f"drain / ceiling {ratio(result.rate, ceiling)} ({ratio(result.warm_rate, ceiling)} after startup; "
              f"goal >= {GOAL:.1f}x)")
        print(f"  outcomes {outcomes}; journal entries {entries}")
        return result
    finally:
        if worker is not None:
            stop(worker)
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"dramatiq:{q}*"):
            client.delete(key)
        drop_database(server, name)


def print_scaling(runs: list[Drain]) -> None:
    """The drains side by side: what one more worker process buys."""
    print(f"\nscaling ({runs[0].rows} notifies each, {os.cpu_count()} CPUs):")
    print(f"  {'processes x threads':>19}  {'notifies/s':>10}  {'after startup':>13}  {'ceiling/s':>9}  "
          f"{'ratio':>6}  {'vs 1st':>6}")
    for r in runs:
        print(f"  {f'{r.processes} x {r.threads}':>19}  {r.rate:10.0f}  {r.warm_rate:13.0f}  {r.ceiling:9.0f}  "
              f"{ratio(r.rate, r.ceiling):>6}  {ratio(r.rate, runs[0].rate):>6}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--scaling", help="comma-separated worker process counts, e.g. 1,2,4 (each with --threads)")
    ap.add_argument("--ceiling-rows", type=int, default=20_000, help="rows the INSERT ceiling commits")
    args = ap.parse_args()

    server = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    counts = [int(x) for x in args.scaling.split(",")] if args.scaling else [args.processes]
    runs = [drain(server, redis_url, args.rows, n, args.threads, args.ceiling_rows) for n in counts]
    if args.scaling:
        print_scaling(runs)


if __name__ == "__main__":
    main()
