"""Benchmark: notifies posted per second end to end while real dramatiq workers drain a backlog.

    python -m tests.benchmarks.bench_drain [--rows 100000] [--processes 2] [--threads 4]

The inbox is filled with signed V3 notifies (four pays for each refund of one of them), as the
ingress would have stored them, and every inbox id is queued in Redis; then `iotledger worker`
starts and the clock runs until every row is done: each message loads its row, verifies the
sign again, posts through the ledger code and marks the row. It creates (and drops) its own
database on TEST_DATABASE_URL's server and uses a unique queue on TEST_REDIS_URL / REDIS_URL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import redis

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()

    server = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    q = f"bench{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench_drain_"))
    name = create_database(server, "bench_drain")
    db_url = with_dbname(server, name)
    worker = None
    try:
        migrate(db_url)
        t0 = time.perf_counter()
        fill(db_url, args.rows)
        t1 = time.perf_counter()
        broker = sender_broker(redis_url)
        with psycopg.connect(db_url) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM inbox ORDER BY id")]
        for inbox_id in ids:
            messages.send(broker, q, inbox_id)
        t2 = time.perf_counter()
        print(f"backlog: {args.rows} inbox rows stored in {t1 - t0:.1f}s, queued in {t2 - t1:.1f}s "
              f"({args.rows / (t2 - t1):.0f} enqueues/s)")
        env = service_env(db_url, redis_url, q, MERCHANTS_JSON, tmp)
        start = time.perf_counter()
        worker = start_worker(env, processes=args.processes, threads=args.threads)
        last, first_at = 0, None
        while True:
            time.sleep(1.0)
            n = done(db_url)
            if n and first_at is None:
                first_at = time.perf_counter() - 1.0
            if n >= args.rows:
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
        print(f"drained {args.rows} notifies with {args.processes} processes x {args.threads} threads "
              f"({os.cpu_count()} CPUs) in {end - start:.1f}s from worker start: "
              f"{args.rows / (end - start):.0f} notifies/s ({args.rows / (end - (first_at or start)):.0f}/s after startup)")
        print(f"  outcomes {outcomes}; journal entries {entries}")
    finally:
        if worker is not None:
            stop(worker)
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"dramatiq:{q}*"):
            client.delete(key)
        drop_database(server, name)


if __name__ == "__main__":
    main()
