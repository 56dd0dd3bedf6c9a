"""POST /iotpay/notify, handled on the event loop: screen, store in the inbox, answer, then queue.

The front (front.py) hands this endpoint the request with its body read whole. The endpoint
screens it (screening.py: size, JSON or form fields, a configured merchant, a sign that
verifies), stores it through psycopg's async connection pool and answers `SUCCESS` (V3) or
`success` (v1) only once the inbox row is committed. With PostgreSQL unavailable the answer is
503, so IOTPay tries again. No thread takes part in a notify: the event loop that read it
answers it, and the process spends its time on the notify rather than on handing it between
the loop and threads (which share one GIL).

- A notify that would wait longer than IOTLEDGER_WEB_MAX_WAIT_SECONDS for one of the inbox
  connections, or behind a late event loop, is answered 503 with Retry-After at once; one that
  did wait longer is answered 503 without being stored (admission.py).
- Refusals (4xx naming the field) store and queue nothing, are counted by reason and logged
  without keys or body; an address over its refusals per minute gets 429 (limiter.py).
- After the answer the inbox id is handed to the enqueuer (enqueuer.py), which sends it to the
  broker from a thread of its own: the answer never waits for the broker, and with the broker
  down the notify is still acknowledged (redrive queues it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import psycopg
import psycopg_pool
import structlog

from worker import db
from worker.config import Settings
from worker.errors import RetryableError
from worker.pipeline import inbox, metrics
from worker.pipeline.admission import Admission, Overloaded
from worker.pipeline.enqueuer import Enqueuer
from worker.pipeline.exchange import Answer, Request, plain
from worker.pipeline.inbox import Stored
from worker.pipeline.limiter import RefusalLimiter
from worker.pipeline.screening import Refusal, Screened, screen, whole_body

# inbox connections per web process: notifies storing at once (more wait for one, or are shed)
CONNECTIONS = 4
# a notify waits at most this long for a database connection before answering 503
POOL_WAIT_S = 3.0
# what a shed notify is told; IOTPay retries on its own schedule anyway
RETRY_AFTER_S = 5
_TEXT = (b"content-type", b"text/plain; charset=utf-8")

log = structlog.get_logger("worker.pipeline.notify_endpoint")
After = Callable[[], Awaitable[None]]


def make_async_pool(database_url: str, connections: int = CONNECTIONS) -> psycopg_pool.AsyncConnectionPool:
    """The endpoint's pool of autocommit connections (storing a notify is one statement, its own
    commit), opened by NotifyEndpoint.open() on the event loop. Raises nothing."""
    return psycopg_pool.AsyncConnectionPool(database_url, min_size=connections, max_size=connections, open=False,
                                            timeout=POOL_WAIT_S, name="ingress-notify", reconnect_timeout=0,
                                            kwargs={"autocommit": True})


class NotifyEndpoint:
    """The notify handler the front calls on the event loop (open() and close() from its lifespan)."""

    def __init__(self, settings: Settings, pool: psycopg_pool.AsyncConnectionPool, enqueuer: Enqueuer, *,
                 limiter: RefusalLimiter | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.enqueuer = enqueuer
        self.limiter = limiter or RefusalLimiter(settings.refusals_per_minute)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.admission = Admission(pool.max_size, settings.web_max_wait_seconds)
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open the pool (in the background: the server starts with PostgreSQL down) and watch the loop."""
        await self.pool.open(wait=False)
        self._watcher = asyncio.get_running_loop().create_task(self.admission.watch_loop())

    async def close(self) -> None:
        """Send what the enqueuer holds, close the pool."""
        if self._watcher is not None:
            self._watcher.cancel()
        await asyncio.to_thread(self.enqueuer.close)
        await self.pool.close()

    async def __call__(self, request: Request) -> tuple[Answer, After | None]:
        """The answer to a notify, and what to do once it is sent. Raises nothing for any input."""
        if self.admission.would_wait_too_long():
            return _overloaded(), None
        started = time.perf_counter()
        address = request.remote_addr
        # An address over its refusal limit still gets a genuine notify through: behind a proxy every
        # request shares one address, and a forger must not be able to make us refuse IOTPay.
        # What the limit saves is the log lines of refusing it again.
        blocked = self.limiter.blocked(address)
        try:
            raw = whole_body(request.body, request.declared_length, self.settings.max_body_bytes)
            screened = screen(raw, request.content_type, self.settings.merchants)
        except Refusal as refusal:
            return self._refused(refusal, address, blocked), None
        try:
            async with self.admission.slot(request.arrived):
                stored = await self._store(screened, request)
        except Overloaded:
            return _overloaded(), None
        except RetryableError as exc:
            metrics.UNAVAILABLE.inc()
            log.error("ingress.not_stored", remote_addr=address, mch_id=screened.mch_id,
                      pay_order_id=screened.pay_order_id, error=str(exc))
            return plain(503, b"inbox unavailable, try again", (b"retry-after", b"30")), None
        if stored.duplicate:
            metrics.DUPLICATE.inc()
        else:
            metrics.ACCEPTED.labels(screened.family).inc()
        metrics.LATENCY.observe(time.perf_counter() - started)
        log.info("ingress.stored", inbox_id=stored.id, pay_order_id=screened.pay_order_id, mch_id=screened.mch_id,
                 duplicate=stored.duplicate, pan_masked=screened.pan_masked, remote_addr=address)
        answer = (200, [_TEXT, (b"content-length", b"%d" % len(screened.ack))], screened.ack)
        # a duplicate whose first copy could not be queued (the broker was down) is queued now; one
        # that is queued or finished is not queued twice
        if stored.duplicate and stored.state != "received":
            return answer, None
        return answer, lambda: self._queue(stored)

    async def _store(self, screened: Screened, request: Request) -> Stored:
        # one retry: a pooled connection may have died with a PostgreSQL restart; the pool
        # drops it and the second attempt gets a fresh one
        for attempt in (1, 2):
            try:
                async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
                    return await inbox.store_async(conn, screened, content_type=request.content_type,
                                                   remote_addr=request.remote_addr, now=self.clock())
            except psycopg_pool.PoolTimeout as exc:  # no connection in time: answer 503 now, no second wait
                raise db.unavailable(exc) from exc
            except RetryableError:
                if attempt == 2:
                    raise
            except psycopg.Error as exc:  # e.g. the inbox table missing: not stored, so not acknowledged
                raise RetryableError(f"inbox write failed: {type(exc).__name__}: {exc}".strip()) from exc
        raise AssertionError("unreachable")

    async def _queue(self, stored: Stored) -> None:
        if self.enqueuer.waits:  # an enqueuer that waits for the broker does it on a thread, not on the loop
            await asyncio.to_thread(self.enqueuer.send, stored)
        else:
            self.enqueuer.send(stored)

    def _refused(self, refusal: Refusal, address: str, blocked: bool) -> Answer:
        if blocked:  # cut off this minute: no log line, no count of its own
            metrics.REFUSED.labels("rate_limited").inc()
            return plain(429, b"too many refused notifies from this address", (b"retry-after", b"60"))
        metrics.REFUSED.labels(refusal.label).inc()
        count = self.limiter.record(address)
        if count <= self.limiter.per_minute:  # beyond, the address is cut off: one line said it
            log.warning("ingress.refused", reason=refusal.label, status=refusal.status, detail=refusal.reason,
                        remote_addr=address, refusals_this_minute=count,
                        cut_off=count == self.limiter.per_minute)
        return plain(refusal.status, refusal.reason.encode("utf-8"))


def _overloaded() -> Answer:
    metrics.SHED.inc()
    return plain(503, b"overloaded, try again", (b"retry-after", str(RETRY_AFTER_S).encode()))
