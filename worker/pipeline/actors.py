"""The dramatiq actors of the notify pipeline. Thin: call process.handle, log one line.

`declare(broker, settings, pool)` declares them on a broker (dramatiq binds an actor to a broker
when it is declared), with the settings and the process's connection pool they use;
worker/runtime.py does so for the `dramatiq` command (worker/pipeline/workers.py).

- `process_notify(inbox_id)`: posts its row with a batch of other rows waiting
  (IOTLEDGER_BATCH_SIZE, worker/pipeline/process.py), or acknowledges a row another batch did.
  Permanent errors (bad data, unknown merchant) are declared with `throws=` and never retried;
  the row is marked failed with the reason. Anything else
  (PostgreSQL down) is retried with backoff; when the retries run out, `record_dead_notify`
  marks the row dead in PostgreSQL.
- `process_notifies(inbox_ids)`: the same for a message of several rows (the ingress and
  redrive send what they have at once, worker/pipeline/messages.py), batch_size rows a
  transaction. A row's permanent error is recorded on it and logged, and the message goes on:
  every row has its outcome; a row left by another error, or PostgreSQL down, retries the
  message (its finished rows are then acknowledged on one read).
- `record_dead_notify(message, retry_info)`: dramatiq's on_retry_exhausted target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import psycopg_pool
import structlog

from worker import db
from worker.config import Settings
from worker.errors import PermanentError, RetryableError
from worker.pipeline import inbox, process
from worker.pipeline.messages import ACTOR_NAME, BATCH_ACTOR_NAME, DEAD_ACTOR_NAME

# one message must not hold a worker thread forever; posting takes milliseconds
TIME_LIMIT_MS = 60_000
# a request for a connection with PostgreSQL down fails fast and is retried with backoff
POOL_TIMEOUT_S = 3.0

log = structlog.get_logger("worker.pipeline.actors")
Pool = Callable[[], psycopg_pool.ConnectionPool]


def open_pool(database_url: str, threads: int) -> psycopg_pool.ConnectionPool:
    """A worker process's connection pool: one connection per dramatiq thread (at least two)."""
    return db.open_pool(database_url, name="worker", max_size=max(2, threads), timeout=POOL_TIMEOUT_S)


def process_notify(pool: psycopg_pool.ConnectionPool, inbox_id: int, settings: Settings,
                   finished: process.Finished | None = None) -> None:
    """Post one inbox row (and a batch of others waiting) to the ledger and mark each with its
    outcome (the actor's body).

    Raises PermanentError (not retried; the row is marked failed) and RetryableError (PostgreSQL
    unavailable, a pool timeout included; retried with backoff).
    """
    try:
        with db.translated(), pool.connection() as conn:
            handled = process.handle(conn, inbox_id, settings, batch_size=settings.batch_size, finished=finished)
    except PermanentError as exc:
        log.warning("worker.failed", inbox_id=inbox_id, reason=str(exc))
        raise
    except RetryableError as exc:
        log.warning("worker.retry", inbox_id=inbox_id, error=str(exc))
        raise
    # a row another batch did was logged by that batch (batch_of): its own message says so at debug
    (log.debug if handled.skipped else log.info)(
        "worker.processed", inbox_id=inbox_id, pay_order_id=handled.pay_order_id, outcome=handled.outcome,
        reason=handled.reason, skipped=handled.skipped)


class RowsLeft(RetryableError):
    """Rows of a message were left as they were by an error that is not theirs to record: retry it."""


def process_notifies(pool: psycopg_pool.ConnectionPool, inbox_ids: list[int], settings: Settings,
                     finished: process.Finished | None = None) -> None:
    """Post a message's inbox rows (and others waiting) to the ledger, batch_size rows a
    transaction, and mark each with its outcome (the actor's body).

    A row's permanent error is recorded on it and logged. Raises RetryableError (PostgreSQL
    unavailable; or RowsLeft: a row left as it was by another error), retried with backoff.
    """
    try:
        with db.translated(), pool.connection() as conn:
            results = process.handle_many(conn, inbox_ids, settings, batch_size=settings.batch_size,
                                          finished=finished)
    except RetryableError as exc:
        log.warning("worker.retry", inbox_ids=inbox_ids, error=str(exc))
        raise
    left = []
    for inbox_id, handled in results.items():
        if isinstance(handled, process.RowFailed):  # failed by an earlier batch, which logged it
            log.debug("worker.failed", inbox_id=inbox_id, reason=str(handled), skipped=True)
        elif isinstance(handled, PermanentError):
            log.warning("worker.failed", inbox_id=inbox_id, reason=str(handled))
        elif isinstance(handled, Exception):
            left.append(inbox_id)
            log.warning("worker.row_left", inbox_id=inbox_id, error=f"{type(handled).__name__}: {handled}")
        else:
            (log.debug if handled.skipped else log.info)(
                "worker.processed", inbox_id=inbox_id, pay_order_id=handled.pay_order_id, outcome=handled.outcome,
                reason=handled.reason, skipped=handled.skipped)
    if left:
        raise RowsLeft(f"inbox ids {left} left as they were; the message is retried")


def record_dead_notify(pool: psycopg_pool.ConnectionPool, message: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """Record in PostgreSQL that a message ran out of retries (not only in Redis's dead letters)."""
    args = message.get("args") or []
    ids = args[0] if args and isinstance(args[0], list) else args[:1]
    if not ids or not all(isinstance(i, int) for i in ids):
        log.error("worker.dead_without_inbox_id", message_id=message.get("message_id"))
        return
    last = (message.get("options", {}).get("traceback") or "").strip().splitlines()
    reason = f"retries exhausted after {retry_info.get('retries', '?')} attempts: {last[-1] if last else 'unknown error'}"
    with pool.connection() as conn:
        for inbox_id in ids:  # a row finished meanwhile keeps its outcome
            inbox.mark_dead(conn, inbox_id, reason[:2000])
            log.error("worker.dead", inbox_id=inbox_id, reason=reason)


def declare(broker: dramatiq.Broker, settings: Settings, pool: Pool) -> dramatiq.Actor:
    """Declare `process_notify` and `record_dead_notify` (its on_retry_exhausted target) on broker,
    on settings.queue_name; `pool()` gives the process's pool (opened on first use, after the
    fork). Returns the `process_notify` actor."""

    finished = process.Finished()

    def process_notify_message(inbox_id: int) -> None:
        process_notify(pool(), inbox_id, settings, finished)

    def record_dead_notify_message(message: dict[str, Any], retry_info: dict[str, Any]) -> None:
        record_dead_notify(pool(), message, retry_info)

    def process_notifies_message(inbox_ids: list[int]) -> None:
        process_notifies(pool(), inbox_ids, settings, finished)

    dramatiq.actor(record_dead_notify_message, broker=broker, actor_name=DEAD_ACTOR_NAME,
                   queue_name=settings.queue_name, time_limit=TIME_LIMIT_MS)
    dramatiq.actor(process_notifies_message, broker=broker, actor_name=BATCH_ACTOR_NAME,
                   queue_name=settings.queue_name, on_retry_exhausted=DEAD_ACTOR_NAME, time_limit=TIME_LIMIT_MS)
    return dramatiq.actor(process_notify_message, broker=broker, actor_name=ACTOR_NAME, queue_name=settings.queue_name,
                          throws=(PermanentError,), on_retry_exhausted=DEAD_ACTOR_NAME, time_limit=TIME_LIMIT_MS)
