"""The dramatiq actors of the notify pipeline. Thin: load the row, call process.handle, log one line.

Import only after worker.broker.setup_broker() (actors bind to the global broker when declared);
worker/pipeline/workers.py does both for the `dramatiq` command.

- `process_notify(inbox_id)`: permanent errors (bad data, unknown merchant) are declared with
  `throws=` and never retried; the row is marked failed with the reason. Anything else
  (PostgreSQL down) is retried with backoff; when the retries run out, `record_dead_notify`
  marks the row dead in PostgreSQL.
- `record_dead_notify(message, retry_info)`: dramatiq's on_retry_exhausted target.
"""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import psycopg_pool
import structlog

from worker.cli.context import app_endpoints, app_settings
from worker.errors import PermanentError, RetryableError
from worker.pipeline import inbox, process
from worker.pipeline.messages import ACTOR_NAME, DEAD_ACTOR_NAME

# one message must not hold a worker thread forever; posting takes milliseconds
TIME_LIMIT_MS = 60_000
# a request for a connection with PostgreSQL down fails fast and is retried with backoff
POOL_TIMEOUT_S = 3.0

log = structlog.get_logger("worker.pipeline.actors")
_pool: psycopg_pool.ConnectionPool | None = None
_pool_lock = threading.Lock()


def pool() -> psycopg_pool.ConnectionPool:
    """This process's connection pool (created after the fork, on first use)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = psycopg_pool.ConnectionPool(
                app_endpoints().database_url,
                min_size=1,
                max_size=max(2, app_settings().worker_threads),
                timeout=POOL_TIMEOUT_S,
                open=True,
                name="worker",
            )
        return _pool


@dramatiq.actor(
    actor_name=ACTOR_NAME,
    queue_name=app_settings().queue_name,
    throws=(PermanentError,),
    on_retry_exhausted=DEAD_ACTOR_NAME,
    time_limit=TIME_LIMIT_MS,
)
def process_notify(inbox_id: int) -> None:
    """Post one inbox row to the ledger and mark it with its outcome."""
    try:
        with pool().connection() as conn:
            handled = process.handle(conn, inbox_id, app_settings())
    except psycopg_pool.PoolTimeout as exc:
        log.warning("notify retry", inbox_id=inbox_id, error="PostgreSQL unavailable")
        raise RetryableError(f"PostgreSQL unavailable: {exc}") from exc
    except PermanentError as exc:
        log.warning("notify failed", inbox_id=inbox_id, reason=str(exc))
        raise
    except RetryableError as exc:
        log.warning("notify retry", inbox_id=inbox_id, error=str(exc))
        raise
    log.info("notify processed", inbox_id=inbox_id, pay_order_id=handled.pay_order_id, outcome=handled.outcome,
             reason=handled.reason, skipped=handled.skipped)


@dramatiq.actor(actor_name=DEAD_ACTOR_NAME, queue_name=app_settings().queue_name, time_limit=TIME_LIMIT_MS)
def record_dead_notify(message: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """Record in PostgreSQL that a message ran out of retries (not only in Redis's dead letters)."""
    args = message.get("args") or []
    if not args or not isinstance(args[0], int):
        log.error("dead message without an inbox id", message_id=message.get("message_id"))
        return
    inbox_id = args[0]
    last = (message.get("options", {}).get("traceback") or "").strip().splitlines()
    reason = f"retries exhausted after {retry_info.get('retries', '?')} attempts: {last[-1] if last else 'unknown error'}"
    with pool().connection() as conn:
        inbox.mark_dead(conn, inbox_id, reason[:2000])
    log.error("notify dead", inbox_id=inbox_id, reason=reason)
