"""Benchmark: the ingress's requests per second, p50 and p99 latency at a fixed concurrency,
next to the same server stack (gunicorn, uvicorn workers, same config) answering a bare 200 with
no work: the ceiling of the HTTP layer.

    python -m tests.benchmarks.bench_ingress [--requests 5000] [--concurrency 8] [--workers 2]

Every request is a distinct signed V3 notify (so each one is screened, stored and committed,
and enqueued after the answer). It creates (and drops) its own database on the server of
TEST_DATABASE_URL and uses a unique queue on TEST_REDIS_URL / REDIS_URL (deleted at the end).
The client runs on the same machine, in threads; its cost is in both figures alike.
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
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis

from tests.factories import MERCHANTS_JSON, v3_pay
from tests.fix_db import DEFAULT_TEST_DATABASE_URL, create_database, drop_database, with_dbname
from tests.fix_redis import DEFAULT_TEST_REDIS_URL
from tests.pipeline_procs import encode
from worker.migrations import migrate
from worker.processes import service_env, start_web, stop


def bare_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The ceiling: read the body, answer 200 SUCCESS, nothing else."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
    return [b"SUCCESS"]


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    args = ap.parse_args()

    server = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    queue = f"bench{uuid.uuid4().hex[:8]}"
    name = create_database(server, "bench_ingress")
    db_url = with_dbname(server, name)
    tmp = Path(tempfile.mkdtemp(prefix="bench_ingress_"))
    try:
        migrate(db_url)
        total = args.requests + args.concurrency * 4
        bodies = [encode(v3_pay(f"PCB{i:08d}", 1000 + i), form=False)[0] for i in range(total)]
        env = service_env(db_url, redis_url, queue, MERCHANTS_JSON, tmp)
        results = {}
        for label, app in (("bare 200 (ceiling)", "tests.benchmarks.bench_ingress:bare_app"), ("ingress", None)):
            proc, url = start_web(env, workers=args.workers, app=app)
            try:
                results[label] = drive(url, bodies, args.concurrency)
            finally:
                stop(proc)
        with psycopg.connect(db_url) as conn:
            stored = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
        print(f"gunicorn + uvicorn workers (front.py), {args.workers} workers x 4 threads; concurrency {args.concurrency}; "
              f"{args.requests} requests each; {os.cpu_count()} CPUs")
        for label, r in results.items():
            print(f"  {label:<20} {r['rps']:8.0f} req/s   p50 {r['p50']:6.2f} ms   p99 {r['p99']:6.2f} ms   "
                  f"errors {r['errors']}")
        print(f"  inbox rows stored by the ingress run: {stored}")
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"dramatiq:{queue}*"):
            client.delete(key)
        drop_database(server, name)


if __name__ == "__main__":
    main()
