"""Benchmark (not a test): the sweep's queries per second over 10,000 pending orders.

    python -m tests.benchmarks.bench_sweep [--orders 10000] [--concurrency 8,32] [--paid 0.5]

Against `iotledger simulate` (gunicorn, its own process, real HTTP with keep-alive) and real
PostgreSQL (TEST_DATABASE_URL or 127.0.0.1:5432; a scratch database, dropped at the end).
Each order is expected and due; a `--paid` share has succeeded at the gateway (notify lost),
the rest are still pending. For each concurrency it prints the sweep pass's queries per
second (query + verify + post through the ledger + reschedule), next to the ceiling measured in
the same run (ceilings.py): the same queries from the same client with no database work, and
the ratio. No per-merchant rate limit is applied here (it would measure the limit, not the sweep).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone

import httpx
import psycopg

from tests.benchmarks.ceilings import gateway_queries, ratio
from tests.factories import merchants_json
from tests.fix_db import DEFAULT_TEST_DATABASE_URL, create_database, drop_database, with_dbname
from worker import logs, processes
from worker.gateway.client import GatewayClient
from worker.gateway.expected import ExpectedOrder, record
from worker.gateway.sweep import open_pool, sweep_once
from worker.merchants import Merchant, Merchants
from worker.migrations import migrate

MERCHANT_COUNT = 10
GOAL = 0.8  # the sweep's queries/s, as a share of the same queries without the database
BENCH_MERCHANTS = Merchants({f"B{i}": Merchant(f"B{i}", (f"bench-key-{i:02d}-0123456789",), "bench") for i in range(MERCHANT_COUNT)})


def start_simulator(threads: int) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, IOTPAY_MERCHANTS=merchants_json(BENCH_MERCHANTS),
               IOTLEDGER_DATA_DIR=tempfile.mkdtemp(prefix="bench-sweep-"))
    return processes.start_simulator(env, "--threads", str(threads))


def seed_orders(base: str, db_url: str, tag: str, n: int, paid_share: float, now: datetime) -> list[tuple[str, str]]:
    """Create n orders at the simulator (no notifyUrl: their notifies are 'lost') and expect them."""
    specs = []
    paid_every = round(1 / paid_share) if paid_share > 0 else 0
    for i in range(n):
        status = 2 if paid_every and i % paid_every == 0 else 0
        channel = "PF_CC" if i % 2 else "WX_APP"
        specs.append({"mchId": f"B{i % MERCHANT_COUNT}", "mchOrderNo": f"{tag}-{i}", "amount": 100 + i % 5000,
                      "channel": channel, "status": status})
    with httpx.Client(base_url=base, timeout=120) as c:
        ids = []
        for chunk in range(0, n, 2000):
            r = c.post("/_sim/orders/bulk", json={"orders": specs[chunk:chunk + 2000]})
            r.raise_for_status()
            ids += r.json()["created"]
    created = now - timedelta(minutes=5)
    with psycopg.connect(db_url) as conn:
        for spec in specs:
            record(conn, ExpectedOrder.from_dict({**{k: spec[k] for k in ("mchId", "mchOrderNo", "amount", "channel")},
                                                  "createdAt": created.isoformat()}))
    return [(s["mchId"], oid) for s, oid in zip(specs, ids)]


def transactions(server: str, name: str) -> int:
    """Transactions committed or rolled back in database `name` so far, once the count is steady
    (a backend reports its counts when idle or when it exits)."""
    last = -1
    with psycopg.connect(server, autocommit=True) as conn:
        for _ in range(30):
            n = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                             (name,)).fetchone()[0]
            if n == last:
                return n
            last = n
            time.sleep(0.2)
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--concurrency", default="8,32", help="comma-separated levels")
    parser.add_argument("--paid", type=float, default=0.5, help="share of orders paid at the gateway (notify lost)")
    parser.add_argument("--sim-threads", type=int, default=32)
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    logs.configure(level="WARNING")  # one log line per posted order would measure the terminal

    server = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    name = create_database(server, "iotledger_bench_sweep")
    db_url = with_dbname(server, name)
    proc, base = start_simulator(args.sim_threads)
    print(f"sweep benchmark: {args.orders} expected orders per run, {args.paid:.0%} paid at the gateway "
          f"(notify lost), the rest pending; {MERCHANT_COUNT} merchants; simulator: gunicorn 1 process x "
          f"{args.sim_threads} threads; {os.cpu_count()} CPUs")
    try:
        migrate(db_url)
        now = datetime.now(timezone.utc)  # one instant for every run: a run's rescheduled orders are not due again
        for level in levels:
            targets = seed_orders(base, db_url, f"c{level}", args.orders, args.paid, now)
            before = transactions(server, name)
            pool = open_pool(db_url)
            with GatewayClient(BENCH_MERCHANTS, v3_base_url=f"{base}/v3", v1_base_url=f"{base}/v1",
                               max_connections=level) as client:
                report = sweep_once(pool, client, now=now, concurrency=level, limiter=None)
                qps = report.queried / report.seconds
                top = gateway_queries(client, targets, level)
            pool.close()
            per_query = (transactions(server, name) - before) / max(report.queried, 1)
            print(f"concurrency {level:>3}: swept {report.queried} orders in {report.seconds:6.2f} s = "
                  f"{qps:7.1f} queries/s (paid {report.paid}, pending {report.pending}, errors {report.errors}; "
                  f"{per_query:.2f} database transactions per query); ceiling, same queries without the "
                  f"database: {top:7.1f} queries/s; sweep / ceiling {ratio(qps, top)} (goal >= {GOAL:.1f}x)")
    finally:
        processes.stop(proc, timeout=10)
        drop_database(server, name)


if __name__ == "__main__":
    main()
