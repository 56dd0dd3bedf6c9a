"""Handing stored notifies to the queue, off the request threads.

The ingress answers a notify once its inbox row is committed; handing the row's id to the
broker is a second round trip (to Redis) that the answer does not wait for. `Enqueuer` does it
at once on the calling thread (in-process use, tests); `BackgroundEnqueuer` does it on one
thread of its own per web process, so that the request threads never wait for the broker and
the front does not need a second thread hand-off per notify (the profile showed both).

Either way the rule is the same: a row that could not be queued is marked 'received' and
redrive queues it; a process killed before its ids were sent leaves rows 'queued' that redrive
queues too (it looks at their age, not at this mark).
"""

from __future__ import annotations

import atexit
import queue
import threading
from collections.abc import Callable

import dramatiq
import psycopg
import psycopg_pool
import structlog

from worker.errors import RetryableError
from worker.pipeline import inbox, messages, metrics
from worker.pipeline.inbox import Stored

# how long a mark after a failed enqueue waits for a database connection
POOL_WAIT_S = 3.0
# at shutdown, how long the thread may take to send what is still waiting
DRAIN_S = 5.0

log = structlog.get_logger("worker.pipeline.enqueuer")


class Enqueuer:
    """Sends an inbox id to the `process_notify` queue on the calling thread."""

    waits = True  # send() waits for the broker: the ingress calls it after its answer is sent

    def __init__(self, broker: dramatiq.Broker, queue_name: str, pool: psycopg_pool.ConnectionPool) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.pool = pool

    def send(self, stored: Stored) -> None:
        """Queue the row; on failure mark it 'received' for redrive. Raises nothing."""
        try:
            messages.send(self.broker, self.queue_name, stored.id)
            mark: Callable[[psycopg.Connection, int], None] | None = (
                inbox.mark_queued if stored.state == "received" else None)  # a new row is stored 'queued'
        except RetryableError as exc:
            metrics.ENQUEUE_FAILED.inc()
            log.warning("ingress.not_queued", inbox_id=stored.id, error=str(exc))
            mark = inbox.mark_not_queued
        if mark is None:
            return
        try:
            with self.pool.connection(timeout=POOL_WAIT_S) as conn:
                mark(conn, stored.id)
        except (RetryableError, psycopg.Error):  # psycopg_pool.PoolTimeout is a psycopg.Error
            pass  # the row is in the inbox either way; redrive looks at its age, not this mark

    def close(self) -> None:
        """Nothing waits here: every send was made when it was asked for."""


class BackgroundEnqueuer(Enqueuer):
    """Sends on one thread of its own, in the order the rows were stored.

    `send` only puts the row on a local queue (microseconds); `close` (also run at exit) sends
    what is still waiting, for at most DRAIN_S.
    """

    waits = False

    def __init__(self, broker: dramatiq.Broker, queue_name: str, pool: psycopg_pool.ConnectionPool) -> None:
        super().__init__(broker, queue_name, pool)
        self._waiting: queue.SimpleQueue[Stored | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ingress-enqueuer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def send(self, stored: Stored) -> None:
        """Queue the row from the enqueuer's thread. Raises nothing."""
        self._waiting.put(stored)

    def close(self) -> None:
        """Send what waits (for at most DRAIN_S), then stop the thread."""
        if self._thread.is_alive():
            self._waiting.put(None)
            self._thread.join(DRAIN_S)

    def _run(self) -> None:
        while (stored := self._waiting.get()) is not None:
            super().send(stored)
