"""Nothing lost: a stream of notifies with duplicates while the worker is SIGKILLed and the broker
loses its messages, on each broker.

Real gunicorn (`iotledger web`), real dramatiq workers (`iotledger worker`), PostgreSQL, and a
broker: a Redis database of its own (index 13, flushed during the test, never db 0), or a
RabbitMQ node the test starts itself on its own ports (tests/fix_rabbitmq.py; its queue purged,
then the node stopped and started again while the stream flows, so the ingress, the redrive and
the workers all lose it and must find it again). Redrive runs every second as the clock would run
it every minute. At the end every acknowledged notify is posted exactly once and `iotledger
check` passes. Prints sent, acknowledged, posted and lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis

from tests.cli import run as run_cli
from tests.factories import MERCHANTS_JSON, v1_pay, v3_pay, v3_refund
from tests.pipeline_procs import encode
from worker.broker import sender_broker
from worker.config import Settings
from worker.pipeline.redrive import redrive_once
from worker.processes import children, service_env, start_web, start_worker, stop, wait_until

FAULT_DB = 13
PAYS = 1800
REFUND_SHARE = 0.2
EXACT_DUPLICATES = 600
REORDERED_DUPLICATES = 240
CONCURRENCY = 8


def redis_db(url: str, db: int) -> str:
    """The same Redis server, another database index."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"{url.split('?')[0]}?db={db}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", "", ""))


def stream(rng: random.Random) -> tuple[list[tuple[str, bytes, str]], dict[str, tuple[str, int]]]:
    """[(pay_order_id, body, content type)] in sending order, and {order id: (kind, amount)}."""
    sends: list[tuple[str, bytes, str]] = []
    expected: dict[str, tuple[str, int]] = {}
    for i in range(PAYS):
        amount = rng.randint(100, 100_000)
        if i % 5 == 4:
            oid = f"P0F{i:07d}"
            body, ctype = encode(v1_pay(oid, amount, currency="CAD"), form=True)
        else:
            oid = f"PCF{i:07d}"
            body, ctype = encode(v3_pay(oid, amount), form=False)
            if rng.random() < REFUND_SHARE:
                rid = f"RPF{i:07d}"
                refund = rng.randint(1, amount)
                expected[rid] = ("refund", refund)
                # a refund usually comes a little after its pay; sometimes just before it
                sends.insert(max(0, len(sends) - rng.randint(-3, 3)),
                             (rid, *encode(v3_refund(rid, oid, refund), form=False)))
        expected[oid] = ("pay", amount)
        sends.append((oid, body, ctype))
    for _ in range(EXACT_DUPLICATES):
        sends.insert(rng.randint(len(sends) // 10, len(sends)), sends[rng.randrange(len(sends))])
    for _ in range(REORDERED_DUPLICATES):  # same notify, other field order: other bytes, same order
        oid, body, ctype = sends[rng.randrange(len(sends))]
        if ctype.startswith("application/json"):
            params = json.loads(body)
            body = json.dumps(dict(reversed(list(params.items())))).encode()
        sends.insert(rng.randint(len(sends) // 10, len(sends)), (oid, body, ctype))
    return sends, expected


def processed_since(db_url: str, since: datetime) -> int:
    """Inbox rows a worker finished after since."""
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*) FROM inbox WHERE processed_at > %s", (since,)).fetchone()[0]


@dataclass
class FaultBroker:
    """The broker under test and the faults it can suffer."""

    name: str
    url: str
    lose: Callable[[], int]  # every message waiting is lost (Redis flushed, the RabbitMQ queue purged): how many
    stop: Callable[[], None] | None = None  # stopped (RabbitMQ: a clean shutdown), then started again
    start: Callable[[], None] | None = None


@pytest.fixture(params=["redis", "rabbitmq"])
def fault_broker(request, queue_name) -> FaultBroker:
    if request.param == "redis":
        url = redis_db(request.getfixturevalue("redis_url"), FAULT_DB)

        def flush_redis() -> int:
            client = redis.Redis.from_url(url)
            lost = client.hlen(f"dramatiq:{queue_name}.msgs")  # queued, or held unacknowledged by workers
            client.flushdb()
            return lost

        return FaultBroker("redis", url, flush_redis)
    node = request.getfixturevalue("rabbitmq_node")  # skipped, with its reason, where RabbitMQ is not installed

    def purge_rabbitmq() -> int:
        import pika

        time.sleep(0.5)  # the killed workers' unacknowledged messages go back to the queue first
        with contextlib.closing(pika.BlockingConnection(pika.URLParameters(node.url))) as connection:
            lost = connection.channel().queue_declare(queue_name, durable=True, passive=True).method.message_count
        sender_broker(node.url).flush(queue_name)
        return lost

    return FaultBroker("rabbitmq", node.url, purge_rabbitmq, node.stop, node.start)


@pytest.mark.slow
def test_kill_worker_and_lose_the_brokers_messages_loses_nothing(db_url, fault_broker, queue_name, tmp_path):
    fault_url = fault_broker.url
    env = service_env(db_url, fault_url, queue_name, MERCHANTS_JSON, tmp_path,
                      IOTLEDGER_REDRIVE_AFTER_SECONDS="3")
    settings = Settings.from_env(env)
    sends, expected = stream(random.Random(4))
    acked: list[str] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    web, url = start_web(env, workers=2)
    workers = [start_worker(env, processes=2, threads=4)]
    stop_clock = threading.Event()

    def clock() -> None:  # the clock's redrive, every second instead of every minute
        while not stop_clock.wait(1.0):
            try:
                redrive_once(db_url, fault_url, settings)
            except Exception:  # the broker may be mid-flush or down: the next tick tries again
                pass

    local = threading.local()

    def send(item: tuple[str, bytes, str]) -> None:
        oid, body, ctype = item
        client = getattr(local, "client", None) or httpx.Client(base_url=url, timeout=30)
        local.client = client
        r = client.post("/iotpay/notify", content=body, headers={"Content-Type": ctype})
        with lock:
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 200 and r.text.lower() == "success":
                acked.append(oid)

    ticker = threading.Thread(target=clock, daemon=True)
    ticker.start()
    fault_at, stop_at, down_at, up_at = (len(sends) * n // 20 for n in (8, 13, 15, 18))
    killed: list[int] = []
    restarted_at: datetime | None = None
    flushed = 0
    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(send, sends[:fault_at]))
            # the fault, while the stream keeps flowing
            future = pool.map(send, sends[fault_at:stop_at])
            time.sleep(0.5)
            victim = workers[0]
            killed = children(victim.pid) + [victim.pid]
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
            victim.wait(10)
            # the messages the fault loses: queued, or held unacknowledged by the killed workers
            flushed = fault_broker.lose()
            time.sleep(1.0)
            replaced_at = datetime.now(timezone.utc)
            workers.append(start_worker(env, processes=2, threads=4))
            list(future)
            # the new worker consumes before the broker goes: its connections are the ones cut
            wait_until(lambda: processed_since(db_url, replaced_at) > 0, 60, "the new worker to post", interval=0.2)
            # the broker stopped while notifies arrive, and more of them while it is down: the
            # ingress acknowledges them all and leaves them to redrive; the new worker's consumers
            # lose their connections and must reconnect when it is back
            future = pool.map(send, sends[stop_at:down_at])
            if fault_broker.stop:
                fault_broker.stop()
            list(future)
            list(pool.map(send, sends[down_at:up_at]))
            if fault_broker.start:
                fault_broker.start()
                restarted_at = datetime.now(timezone.utc)
            list(pool.map(send, sends[up_at:]))

        def all_done() -> bool:
            with psycopg.connect(db_url) as conn:
                return conn.execute("SELECT count(*) FROM inbox WHERE state <> 'done'").fetchone()[0] == 0

        wait_until(all_done, 120, "every inbox row to be done", interval=0.5)
    finally:
        stop_clock.set()
        ticker.join(5)
        for p in [web, *workers]:
            stop(p)

    acked_orders = set(acked)
    with psycopg.connect(db_url) as conn:
        entries: dict[str, list[tuple[str, int]]] = {}
        for oid, kind, amount in conn.execute("SELECT pay_order_id, kind, amount FROM journal_entries"):
            entries.setdefault(oid, []).append((kind, amount))
        redriven, redriven_rows, most = conn.execute(
            "SELECT coalesce(sum(redrives), 0), count(*) FILTER (WHERE redrives > 0), coalesce(max(redrives), 0) FROM inbox"
        ).fetchone()
        states = dict(conn.execute("SELECT state, count(*) FROM inbox GROUP BY state").fetchall())
        # parked: a refund that came before its pay, posted when the pay released it (checked above)
        failed = conn.execute("SELECT count(*) FROM inbox WHERE outcome NOT IN ('posted', 'duplicate', 'parked')").fetchone()[0]
        # rows that arrived after the broker came back and were queued by the ingress itself, not by redrive
        queued_after_restart = conn.execute(
            "SELECT count(*) FILTER (WHERE redrives = 0) FROM inbox WHERE received_at > %s", (restarted_at,)
        ).fetchone()[0] if restarted_at else None
    processed_after_restart = processed_since(db_url, restarted_at) if restarted_at else None
    posted = sum(1 for oid in acked_orders if len(entries.get(oid, [])) == 1)
    lost = sorted(oid for oid in acked_orders if oid not in entries)
    twice = sorted(oid for oid, e in entries.items() if len(e) != 1)
    print(f"\nfault test ({fault_broker.name}): sent={len(sends)} acknowledged={len(acked)} (distinct orders {len(acked_orders)}) "
          f"posted={posted} lost={len(lost)} posted_twice={len(twice)} killed_pids={killed} http={statuses} "
          f"inbox={states} redrives={redriven} (rows {redriven_rows}, at most {most} per row)"
          + (f" after the broker restart: queued_by_the_ingress={queued_after_restart} "
             f"processed={processed_after_restart}" if restarted_at else ""))
    assert lost == [] and twice == []
    assert len(acked) == len(sends)  # nothing was refused or answered 503 in this run
    assert acked_orders == set(expected)
    for oid, (kind, amount) in expected.items():
        assert entries[oid] == [(kind, amount)], oid
    # one inbox row per distinct body, every one done
    assert states == {"done": len({body for _, body, _ in sends})}
    assert failed == 0
    assert flushed > 0  # the fault did cost queued messages (all their rows are done: asserted above)
    # redrive brought them back, or (batches) the batches of the messages that kept coming took their rows
    assert redriven > 0 or settings.batch_size > 1
    if restarted_at:  # the ingress and the worker whose connections were cut found the broker again
        assert queued_after_restart > 0 and processed_after_restart > 0
    check = run_cli("check", env={"DATABASE_URL": db_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON})
    assert check.returncode == 0, check.stdout + check.stderr
