"""Handing stored notifies to the queue, off the request threads.

The ingress answers a notify once its inbox row is committed; handing the row's id to the
broker is a second round trip (to Redis) that the answer does not wait for. `Enqueuer` does it
at once on the calling thread (in-process use, tests); `BackgroundEnqueuer` does it on one
thread of its own per web process, so that the request threads never wait for the broker and
the front does not need a second thread hand-off per notify (the profile showed both); the ids
that arrive within LINGER_S of each other go together, in one round trip to Redis and in as few
messages as messages.send_many makes of them (the profile: redis-py's and dramatiq's work per
message and per round trip was most of the enqueue's cost, about 200 us of CPU for an id sent
alone against 30 us each in batches of 4 and 5 us in batches of 20).

Either way the rule is the same: a row that could not be queued is marked 'received' and
redrive queues it; a process killed before its ids were sent leaves rows 'queued' that redrive
queues too (it looks at their age, not at this mark).
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
from collections.abc import Callable, Sequence

import dramatiq
import psycopg
import psycopg_pool
import structlog

from worker.errors import RetryableError
from worker.pipeline import inbox, messages, metrics
from worker.pipeline.inbox import Stored

# how long a mark after a failed enqueue waits for a database connection
POOL_WAIT_S = 3.0
# ids sent in one round trip at most
MAX_BATCH = 100
# how long the thread waits for more ids after the first (the answers do not wait for it; at a
# few hundred notifies/s per web process this makes batches of several ids, and an id reaches
# the workers at most this much later)
LINGER_S = 0.02
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
        self.send_all([stored])

    def send_all(self, rows: Sequence[Stored]) -> None:
        """Queue the rows, in order (with Redis in one round trip); on failure mark them 'received'
        for redrive. Raises nothing."""
        marks: list[tuple[Callable[[psycopg.Connection, int], None], int]]
        try:
            messages.send_many(self.broker, self.queue_name, [r.id for r in rows])
            # a new row is stored 'queued'; one left 'received' (its first enqueue failed) is marked now
            marks = [(inbox.mark_queued, r.id) for r in rows if r.state == "received"]
        except RetryableError as exc:
            metrics.ENQUEUE_FAILED.inc(len(rows))
            for r in rows:
                log.warning("ingress.not_queued", inbox_id=r.id, error=str(exc))
            marks = [(inbox.mark_not_queued, r.id) for r in rows]
        if not marks:
            return
        try:
            with self.pool.connection(timeout=POOL_WAIT_S) as conn:
                for mark, inbox_id in marks:
                    mark(conn, inbox_id)
        except (RetryableError, psycopg.Error):  # psycopg_pool.PoolTimeout is a psycopg.Error
            pass  # the rows are in the inbox either way; redrive looks at their age, not this mark

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
        # what arrived while the last batch was on its way goes together: one round trip
        stopping = False
        while not stopping:
            batch = [self._waiting.get()]
            time.sleep(LINGER_S)  # the answer was sent already: waiting here makes the batch larger
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._waiting.get_nowait())
                except queue.Empty:
                    break
            stopping = any(r is None for r in batch)
            rows = [r for r in batch if r is not None]
            if rows:
                try:
                    self.send_all(rows)
                except Exception:  # a bug: say so, and keep the thread for the next ids (redrive takes these)
                    log.exception("ingress.enqueue_failed", inbox_ids=[r.id for r in rows])
