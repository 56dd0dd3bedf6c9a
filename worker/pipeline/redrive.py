"""Redrive: inbox rows not done after an age are queued again.

This covers a broker flushed or restarted, a worker killed in the middle of a message, and an
enqueue that failed after the answer. Queuing a row twice is harmless (the actor skips a row
that is done, and the ledger posts a notify once however often it sees it) but must not
snowball: while workers drain a long backlog, rows wait in the queue longer than the age.
So a row is due only when it was queued before the oldest message still waiting in the queue
(less a margin for clocks): its message has left the queue (taken by a worker, or lost).
`iotledger redrive` runs it once; the clock runs it every minute.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import structlog

from worker import db
from worker.broker import sender_broker
from worker.config import Settings
from worker.pipeline import messages
from worker.sqlfiles import q

BATCH = 500
# web hosts and the clock may disagree a little on the time
CLOCK_MARGIN = timedelta(seconds=5)
log = structlog.get_logger("worker.pipeline.redrive")


def redrive_once(database_url: str, broker_url: str, settings: Settings, now: datetime | None = None) -> int:
    """Queue again every row still received/queued whose last hand-over is older than
    settings.redrive_after_seconds and than the oldest message waiting in the queue; return how
    many were queued.

    Raises RetryableError when PostgreSQL or the broker (Redis or RabbitMQ) is unavailable (rows
    already queued in this call stay marked; the others are found again next time).
    """
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(seconds=settings.redrive_after_seconds)
    broker = sender_broker(broker_url)
    waiting_since = messages.oldest_waiting(broker, settings.queue_name)
    if waiting_since is not None:
        cutoff = min(cutoff, waiting_since - CLOCK_MARGIN)
    total = 0
    with db.translated(), psycopg.connect(database_url) as conn:
        while True:
            with conn.transaction():
                ids = [r[0] for r in conn.execute(q("inbox_due_for_redrive"), {"cutoff": cutoff, "limit": BATCH})]
                messages.send_many(broker, settings.queue_name, ids)
                if ids:
                    conn.execute(q("inbox_mark_redriven"), {"ids": ids, "now": now})
            total += len(ids)
            if len(ids) < BATCH:
                break
    if total:
        log.warning("redrive.requeued", rows=total, older_than_seconds=settings.redrive_after_seconds)
    return total

