"""Benchmark: the ingress's requests per second, p50 and p99 latency at a fixed concurrency,
next to the same server stack (gunicorn, uvicorn workers, same config) answering a bare 200 with
no work: the ceiling of the HTTP layer; and next to what PostgreSQL allows a path that commits
once per notify.

    python -m tests.benchmarks.bench_ingress [--requests 5000] [--concurrency 8] [--workers 2] [--runs 3]

Every request is a distinct signed V3 notify (so each one is screened, stored and committed,
and enqueued after the answer). It creates (and drops) its own database on the server of
TEST_DATABASE_URL and uses a unique queue on TEST_REDIS_URL / REDIS_URL (deleted at the end).
The client runs on the same machine, in threads; its cost is in both figures alike. Each run
measures the bare 200 (ceilings.bare_app), then the ingress, then single-row INSERT commits per
second into a bare table from as many connections as the ingress's threads
(ceilings.insert_commits), and prints them with the ratios of requests/s and of p99, and the CPU
each request cost the web processes, PostgreSQL's server processes and the client (from
/proc, Linux): on a machine whose cores they share, the ratio of requests/s follows the ratio
of CPU per request; `--runs N`
repeats that and prints the median of each figure and ratio and the worst ratios (the goals
hold steadily, not once).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from psycopg.conninfo import conninfo_to_dict

import psycopg
import redis

from tests.benchmarks.ceilings import BARE_APP, insert_commits
from tests.factories import MERCHANTS_JSON, v3_pay
from tests.fix_db import DEFAULT_TEST_DATABASE_URL, create_database, drop_database, with_dbname
from tests.fix_redis import DEFAULT_TEST_REDIS_URL
from tests.pipeline_procs import encode
from worker.migrations import migrate
from worker.pipeline.gunicorn_conf import THREADS
from worker.processes import children, service_env, start_web, stop


GOAL_RPS = 0.8  # the ingress's requests/s, as a share of the bare 200's
GOAL_P99 = 1.5  # the ingress's p99 latency, at most this multiple of the bare 200's
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far (Linux /proc); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def backends(db_url: str) -> list[int]:
    """The PostgreSQL server processes of db_url's database, but this query's own."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> "
                                           "pg_backend_pid()", (conninfo_to_dict(db_url)["dbname"],))]


def drive(url: str, bodies: list[bytes], concurrency: int) -> dict[str, float]:
    """POST every body at the given concurrency; return rps, p50, p99 (ms) and errors."""
    local = threading.local()
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    host, port = urlsplit(url).hostname, urlsplit(url).port
    headers = {"Content-Type": "application/json"}

    def one(body: bytes) -> None:
        # http.client with keep-alive: the cheapest Python client, so the figures show the server
        nonlocal errors
        conn = getattr(local, "conn", None) or http.client.HTTPConnection(host, port, timeout=30)
        local.conn = conn
        t0 = time.perf_counter()
        conn.request("POST", "/iotpay/notify", body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        dt = time.perf_counter() - t0
        if r.will_close:
            conn.close()
            local.conn = None
        with lock:
            latencies.append(dt)
            if r.status != 200:
                errors += 1

    with ThreadPoolExecutor(concurrency) as pool:  # warm-up: connections, imports, pool
        list(pool.map(one, bodies[:concurrency * 4]))
    latencies.clear()
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, bodies[concurrency * 4:]))
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {"rps": len(latencies) / elapsed, "p50": q[49] * 1000, "p99": q[98] * 1000, "errors": errors,
            "n": len(latencies)}


def one_run(env: dict[str, str], db_url: str, bodies: list[bytes], workers: int,
            concurrency: int) -> dict[str, dict[str, float]]:
    """The bare 200, the ingress (on the same stack), then PostgreSQL's commits: figures by label."""
    results = {}
    for label, app in (("bare", BARE_APP), ("ingress", None)):
        proc, url = start_web(env, workers=workers, app=app)
        try:
            # CPU per request of each part, from /proc: the web workers, the database's server
            # processes (the pools keep theirs open) and this client
            web = children(proc.pid)
            before = {pid: cpu_seconds(pid) for pid in [*web, *backends(db_url)]}
            client = time.process_time()
            results[label] = drive(url, bodies, concurrency)
            client = time.process_time() - client
            pg = backends(db_url)
            used = {pid: cpu_seconds(pid) - before.get(pid, 0.0) for pid in [*web, *pg]}
        finally:
            stop(proc)
        per_request = 1000 / len(bodies)
        results[label].update(cpu_web=sum(used[p] for p in web) * per_request,
                              cpu_pg=sum(used[p] for p in pg) * per_request, cpu_client=client * per_request)
    results["postgresql"] = {"rps": insert_commits(db_url, len(bodies), processes=workers, threads=THREADS)}
    results["ratio"] = {"rps": results["ingress"]["rps"] / results["bare"]["rps"],
                        "p99": results["ingress"]["p99"] / results["bare"]["p99"],
                        "postgresql": results["ingress"]["rps"] / results["postgresql"]["rps"],
                        "cpu": _cpu(results["bare"]) / _cpu(results["ingress"])}
    return results


def _cpu(figures: dict[str, float]) -> float:
    return figures["cpu_web"] + figures["cpu_pg"] + figures["cpu_client"]


def print_run(label: str, r: dict[str, dict[str, float]], workers: int) -> None:
    """One run: every figure and the ratios, against the goals."""
    for name, title in (("bare", "bare 200 (ceiling)"), ("ingress", "ingress")):
        f = r[name]
        print(f"  {label:<10} {title:<20} {f['rps']:8.0f} req/s   p50 {f['p50']:6.2f} ms   p99 {f['p99']:6.2f} ms"
              + (f"   errors {f['errors']:.0f}" if "errors" in f else ""))
    print(f"  {label:<10} {'PostgreSQL (ceiling)':<20} {r['postgresql']['rps']:8.0f} single-row INSERT commits/s "
          f"from {workers} x {THREADS} connections")
    rps, p99 = r["ratio"]["rps"], r["ratio"]["p99"]
    print(f"  {label:<10} {'ingress / bare':<20} {rps:7.2f}x req/s (goal >= {GOAL_RPS}x"
          f"{'' if rps >= GOAL_RPS else ', not met'})   {p99:5.2f}x p99 (goal <= {GOAL_P99}x"
          f"{'' if p99 <= GOAL_P99 else ', not met'})")
    print(f"  {label:<10} {'ingress / PostgreSQL':<20} {r['ratio']['postgresql']:7.2f}x its commits/s")
    b, i = r["bare"], r["ingress"]
    print(f"  {label:<10} {'CPU ms per request':<20} bare: web {b['cpu_web']:.2f} + client {b['cpu_client']:.2f}; "
          f"ingress: web {i['cpu_web']:.2f} + PostgreSQL {i['cpu_pg']:.2f} + client {i['cpu_client']:.2f}; "
          f"bare / ingress {r['ratio']['cpu']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    ap.add_argument("--runs", type=int, default=1, help="repeat the pair of measurements, print each and the median")
    args = ap.parse_args()

    server = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    queue = f"bench{uuid.uuid4().hex[:8]}"
    name = create_database(server, "bench_ingress")
    db_url = with_dbname(server, name)
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingress_"))
    try:
        migrate(db_url)
        env = service_env(db_url, redis_url, queue, MERCHANTS_JSON, tmp)
        total = args.requests + args.concurrency * 4
        print(f"gunicorn + uvicorn workers (front.py), {args.workers} workers x {THREADS} threads; "
              f"concurrency {args.concurrency}; {args.requests} requests each; {args.runs} run(s); "
              f"{os.cpu_count()} CPUs")
        runs = []
        for run in range(args.runs):
            # new notifies every run: a byte-identical redelivery would take the inbox's cheaper path
            bodies = [encode(v3_pay(f"PCB{run:02d}{i:08d}", 1000 + i), form=False)[0] for i in range(total)]
            runs.append(one_run(env, db_url, bodies, args.workers, args.concurrency))
            print_run(f"run {run + 1}", runs[-1], args.workers)
        if args.runs > 1:
            med = {name: {k: statistics.median(r[name][k] for r in runs) for k in runs[0][name] if k != "errors"}
                   for name in runs[0]}
            print_run("median", med, args.workers)
            print(f"  {'worst':<10} {'ingress / bare':<20} {min(r['ratio']['rps'] for r in runs):7.2f}x req/s, "
                  f"{max(r['ratio']['p99'] for r in runs):.2f}x p99 (the worst of {args.runs} runs)")
        with psycopg.connect(db_url) as conn:
            stored = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        print(f"  inbox rows stored by the ingress runs: {stored}")
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"dramatiq:{queue}*"):
            client.delete(key)
        drop_database(server, name)


if __name__ == "__main__":
    main()
