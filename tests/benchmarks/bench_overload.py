"""Benchmark: the ingress past its capacity. First its capacity (closed loop, a new connection per
notify, as a gateway sends them), then an open loop at --factor times that rate for --seconds:
the share answered 503, the p99 of the notifies answered 200, the client time-outs, and how many
stored notifies belonged to clients that had already given up (work done for nobody).

    python -m tests.benchmarks.bench_overload [--factor 3] [--seconds 15] [--client-timeout 5]

The server is `iotledger web` (2 workers) on a loopback port; the client is one asyncio process
on the same machine (its cost is in both phases alike). It creates (and drops) its own database
and uses a unique queue (deleted at the end). Figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import selectors
import socket
import statistics
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from tests.factories import MERCHANTS_JSON, v3_pay
from tests.fix_db import DEFAULT_TEST_DATABASE_URL, create_database, drop_database, with_dbname
from tests.fix_redis import DEFAULT_TEST_REDIS_URL
from tests.pipeline_procs import encode
from worker.migrations import migrate
from worker.processes import service_env, start_web, stop


@dataclass
class Result:
    order_id: str
    status: int | None  # None: the client gave up (timeout) or the connection failed
    seconds: float
    timed_out: bool = False


def request_bytes(order_id: str, amount: int) -> bytes:
    body, ctype = encode(v3_pay(order_id, amount), form=False)
    return (f"POST /iotpay/notify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


async def post(port: int, order_id: str, amount: int, timeout: float) -> Result:
    started = time.perf_counter()

    async def exchange() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request_bytes(order_id, amount))
            data = await reader.read()
            return int(data.split(b" ", 2)[1])
        finally:
            writer.close()

    try:
        status = await asyncio.wait_for(exchange(), timeout)
        return Result(order_id, status, time.perf_counter() - started)
    except asyncio.TimeoutError:
        return Result(order_id, None, time.perf_counter() - started, timed_out=True)
    except (OSError, ValueError, IndexError):
        return Result(order_id, None, time.perf_counter() - started)


async def closed_loop(port: int, seconds: float, concurrency: int, prefix: str) -> list[Result]:
    deadline = time.perf_counter() + seconds
    results: list[Result] = []
    counter = iter(range(10**9))

    async def loop() -> None:
        while time.perf_counter() < deadline:
            n = next(counter)
            results.append(await post(port, f"{prefix}{n:08d}", 1000 + n, 30))

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return results


def open_loop(port: int, seconds: float, rate: float, timeout: float, prefix: str, start_at: float) -> list[Result]:
    """Send a notify every 1/rate s on a new connection, whatever the answers, on plain non-blocking
    sockets (an asyncio client could not keep up with thousands a second on this machine).

    A client gives up after `timeout` s (its connection is closed, as a gateway's would be)."""
    selector = selectors.DefaultSelector()
    total = int(seconds * rate)
    results: list[Result] = []
    live: dict[socket.socket, list] = {}  # sock -> [order id, started, request bytes, answer]
    by_age: deque[socket.socket] = deque()
    requests = [request_bytes(f"{prefix}{n:08d}", 1000 + n) for n in range(total)]  # signed before the clock starts
    time.sleep(max(0.0, start_at - time.time()))
    begin = time.perf_counter()
    n = 0

    def finish(sock: socket.socket, status: int | None, timed_out: bool = False) -> None:
        order_id, started, _, _ = live.pop(sock)
        results.append(Result(order_id, status, time.perf_counter() - started, timed_out))
        selector.unregister(sock)
        sock.close()

    while n < total or live:
        now = time.perf_counter()
        while n < total and begin + n / rate <= now:
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            order_id = f"{prefix}{n:08d}"
            live[sock] = [order_id, time.perf_counter(), requests[n], b""]
            by_age.append(sock)
            selector.register(sock, selectors.EVENT_WRITE)
            n += 1
        while by_age and (by_age[0] not in live or now - live[by_age[0]][1] > timeout):
            sock = by_age.popleft()
            if sock in live:
                finish(sock, None, timed_out=True)
        wait = (begin + n / rate - now) if n < total else 0.05
        for key, mask in selector.select(max(0.0, min(wait, 0.05))):
            sock = key.fileobj
            state = live.get(sock)  # type: ignore[arg-type]
            if state is None:
                continue
            try:
                if mask & selectors.EVENT_WRITE:
                    sock.send(state[2])  # type: ignore[union-attr]
                    selector.modify(sock, selectors.EVENT_READ)
                    continue
                chunk = sock.recv(65536)  # type: ignore[union-attr]
            except OSError:
                finish(sock, None)  # type: ignore[arg-type]
                continue
            if chunk:
                state[3] += chunk
                continue
            try:
                finish(sock, int(state[3].split(b" ", 2)[1]))  # type: ignore[arg-type]
            except (ValueError, IndexError):
                finish(sock, None)  # type: ignore[arg-type]
    return results


def _open_loop_process(args: tuple[int, float, float, float, str, float]) -> list[Result]:
    return open_loop(*args)


def overload(port: int, seconds: float, rate: float, timeout: float, processes: int) -> list[Result]:
    """The open loop split over client processes."""
    start_at = time.time() + 3  # after every process has signed its requests
    jobs = [(port, seconds, rate / processes, timeout, f"PCO{n}", start_at) for n in range(processes)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return [r for part in pool.map(_open_loop_process, jobs) for r in part]


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else float("nan")
    return statistics.quantiles(values, n=100)[q - 1] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factor", type=float, default=3.0, help="offered load as a multiple of the measured capacity")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of the overload phase")
    ap.add_argument("--capacity-seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop clients measuring the capacity")
    ap.add_argument("--client-timeout", type=float, default=5.0, help="a client gives up after this long")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--client-processes", type=int, default=2, help="processes sending the open loop")
    args = ap.parse_args()

    server = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    queue = f"bench{uuid.uuid4().hex[:8]}"
    name = create_database(server, "bench_overload")
    db_url = with_dbname(server, name)
    tmp = Path(tempfile.mkdtemp(prefix="bench_overload_"))
    try:
        migrate(db_url)
        env = service_env(db_url, redis_url, queue, MERCHANTS_JSON, tmp)
        proc, url = start_web(env, workers=args.workers)
        port = int(url.rsplit(":", 1)[1])
        try:
            asyncio.run(closed_loop(port, 2, args.concurrency, "PCW"))  # warm-up
            t0 = time.perf_counter()
            cap = asyncio.run(closed_loop(port, args.capacity_seconds, args.concurrency, "PCC"))
            cap_s = time.perf_counter() - t0
            ok = [r.seconds for r in cap if r.status == 200]
            capacity = len(ok) / cap_s
            rate = capacity * args.factor
            t0 = time.perf_counter()
            over = overload(port, args.seconds, rate, args.client_timeout, args.client_processes)
            over_s = time.perf_counter() - t0
            time.sleep(2)  # let the server finish what it holds
        finally:
            stop(proc)
        with psycopg.connect(db_url) as conn:
            stored = {r[0] for r in conn.execute("SELECT pay_order_id FROM inbox WHERE pay_order_id LIKE 'PCO%'")}
        answered = [r.seconds for r in over if r.status == 200]
        shed = [r.seconds for r in over if r.status == 503]
        timed_out = [r for r in over if r.timed_out]
        failed = [r for r in over if r.status is None and not r.timed_out]
        other = [r for r in over if r.status not in (None, 200, 503)]
        stored_for_gone = sum(1 for r in timed_out if r.order_id in stored)
        print(f"iotledger web: gunicorn + uvicorn workers, {args.workers} workers x 4 threads; {os.cpu_count()} CPUs; "
              f"IOTLEDGER_WEB_MAX_WAIT_SECONDS default; client time-out {args.client_timeout:g} s")
        print(f"  capacity (closed loop, {args.concurrency} clients, {cap_s:.0f} s): {capacity:.0f} notifies/s, "
              f"p50 {pct(ok, 50):.1f} ms, p99 {pct(ok, 99):.1f} ms")
        print(f"  overload: offered {rate:.0f}/s ({args.factor:g}x) for {args.seconds:g} s = {len(over)} notifies "
              f"from {args.client_processes} client processes, all answered or given up after {over_s:.1f} s")
        print(f"    200: {len(answered)} ({len(answered) / len(over):.1%}), p50 {pct(answered, 50):.1f} ms, "
              f"p99 {pct(answered, 99):.1f} ms")
        print(f"    503: {len(shed)} ({len(shed) / len(over):.1%}), p50 {pct(shed, 50):.1f} ms, "
              f"p99 {pct(shed, 99):.1f} ms")
        print(f"    client time-outs: {len(timed_out)}; connection errors: {len(failed)}; other statuses: {len(other)}")
        print(f"    stored: {len(stored)}; stored for clients that had timed out: {stored_for_gone}")
    finally:
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"dramatiq:{queue}*"):
            client.delete(key)
        drop_database(server, name)


if __name__ == "__main__":
    main()
