"""The ceilings the benchmarks print their figures next to, measured in the same run.

- `insert_commits`: single-row INSERT commits per second into a bare table on the same
  PostgreSQL, from processes x threads connections (one INSERT, one commit per row): what the
  database allows a path that commits once per notify (bench_ledger, bench_drain).
- `bare_app`: a WSGI app that reads the body and answers 200 with no work; served by the same
  gunicorn stack it is the ceiling of the HTTP layer (bench_ingress).
- `gateway_queries`: the sweep's gateway queries from the same client with no database work
  (bench_sweep).

`ratio` formats the figure beside its ceiling.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from psycopg import sql

CEILING_TIMEOUT_S = 600.0  # a ceiling process that has not reported by then has failed


def insert_commits(db_url: str, rows: int, *, processes: int, threads: int = 1) -> float:
    """Single-row INSERT commits per second into a bare table of db_url's database, at the
    concurrency of processes x threads connections (each commits every row it inserts).

    The table is created for the measurement and dropped after it. Raises psycopg.Error when
    PostgreSQL refuses, RuntimeError when a measuring process fails.
    """
    table = f"bench_ceiling_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, payload text)").format(sql.Identifier(table)))
    try:
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(processes * threads), ctx.Queue()
        procs = [ctx.Process(target=_insert_process, args=(db_url, table, range(p, rows, processes), threads, barrier, out))
                 for p in range(processes)]
        for p in procs:
            p.start()
        try:
            spans = [out.get(timeout=CEILING_TIMEOUT_S) for _ in range(processes * threads)]
        except Exception as exc:
            raise RuntimeError(f"a ceiling process failed: exit codes {[p.exitcode for p in procs]}") from exc
        finally:
            for p in procs:
                p.join(timeout=CEILING_TIMEOUT_S)
        return rows / (max(end for _, end in spans) - min(start for start, _ in spans))
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


def _insert_process(db_url: str, table: str, ids: range, threads: int, barrier: Any, out: Any) -> None:
    insert = sql.SQL("INSERT INTO {} (id, payload) VALUES (%s, %s)").format(sql.Identifier(table))

    def one(part: range) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            barrier.wait()
            start = time.monotonic()  # CLOCK_MONOTONIC: comparable across the processes of the machine
            for i in part:
                conn.execute(insert, (i, f"O{i}"))
            out.put((start, time.monotonic()))

    workers = [threading.Thread(target=one, args=(ids[t::threads],)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def bare_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The HTTP layer's ceiling: read the body, answer 200 SUCCESS, nothing else."""
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
    return [b"SUCCESS"]


BARE_APP = "tests.benchmarks.ceilings:bare_app"  # what `start_web(app=...)` serves for the ceiling


def gateway_queries(client: Any, targets: Sequence[tuple[str, str]], concurrency: int) -> float:
    """Queries per second from the sweep's GatewayClient with no database work: (mch_id,
    payOrderId) pairs, at the concurrency of the sweep. Raises what the client raises."""
    families = {oid: ("v3" if oid.startswith("PC") else "v1") for _, oid in targets}
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        list(ex.map(lambda t: client.query(families[t[1]], t[0], pay_order_id=t[1]), targets))
    return len(targets) / (time.perf_counter() - started)


def ratio(value: float, ceiling: float) -> str:
    """`value / ceiling` as `0.42x`."""
    return f"{value / ceiling:.2f}x" if ceiling else "n/a"
