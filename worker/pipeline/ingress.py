"""The webhook ingress: a plain WSGI app (no framework: four routes do not need one), served by
gunicorn's uvicorn workers through front.py, which hands it only whole requests.

    POST /iotpay/notify   screen the body, store it in the inbox, answer, then enqueue its id
    GET  /healthz         the process is alive
    GET  /readyz          PostgreSQL and the broker are reachable (503 naming the one that is not)
    GET  /metrics         Prometheus text exposition

A notify is answered `SUCCESS` (JSON, V3) or `success` (form fields, v1) only after the inbox
row is committed; with PostgreSQL unavailable the answer is 503, so IOTPay tries again. The
answer never waits for the broker (enqueuer.py): the inbox id is enqueued after the answer has
been sent (the response's close()), or under gunicorn handed to the process's enqueuer thread.
With the broker down the notify is still acknowledged, since the inbox holds it and redrive will
queue it.
Refusals (4xx) store and queue nothing, are counted by reason and logged without keys or
body; an address with too many refusals in a minute is cut off (limiter.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import dramatiq
import psycopg
import psycopg_pool
import structlog

from worker import db
from worker.broker import kind as broker_kind
from worker.broker import ping as broker_ping
from worker.config import Settings
from worker.errors import RetryableError
from worker.pipeline import inbox, metrics
from worker.pipeline.enqueuer import Enqueuer
from worker.pipeline.inbox import Stored
from worker.pipeline.limiter import RefusalLimiter
from worker.pipeline.screening import Refusal, Screened, screen

NOTIFY_PATH = "/iotpay/notify"
# A request waits at most this long for a database connection before answering 503.
POOL_WAIT_S = 3.0
READY_TIMEOUT_S = 2.0
# connections per web process: front.py's threads (gunicorn_conf.THREADS) and a spare for /metrics
POOL_SIZE = 8

log = structlog.get_logger("worker.pipeline.ingress")
StartResponse = Callable[..., Any]

_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large", 415: "Unsupported Media Type",
            429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


class _ThenRun:
    """A one-chunk response body whose close() (called by the server after sending) runs a task."""

    def __init__(self, body: bytes, task: Callable[[], None]) -> None:
        self._body = body
        self._task = task

    def __iter__(self) -> Iterator[bytes]:
        yield self._body

    def close(self) -> None:
        self._task()


def _reply(start_response: StartResponse, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
           extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    start_response(f"{status} {_REASONS.get(status, '')}".strip(),
                   [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra])
    return [body]


class Ingress:
    """The WSGI application. Built by `worker.runtime.ingress_app()` (gunicorn) or directly in tests."""

    def __init__(self, settings: Settings, pool: psycopg_pool.ConnectionPool, broker: dramatiq.Broker, *,
                 limiter: RefusalLimiter | None = None, clock: Callable[[], datetime] | None = None,
                 enqueuer: Enqueuer | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker
        self.enqueuer = enqueuer or Enqueuer(broker, settings.queue_name, pool)
        self.limiter = limiter or RefusalLimiter(settings.refusals_per_minute)
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    # ------------------------------------------------------------------ routing
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == NOTIFY_PATH:
            if method != "POST":
                return _reply(start_response, 405, b"use POST", extra=[("Allow", "POST")])
            return self.notify(environ, start_response)
        if method not in ("GET", "HEAD"):
            return _reply(start_response, 405, b"use GET", extra=[("Allow", "GET, HEAD")])
        if path == "/healthz":
            return _reply(start_response, 200, b"ok")
        if path == "/readyz":
            return self.ready(start_response)
        if path == "/metrics":
            return _reply(start_response, 200, metrics.render(self.backlog), metrics.CONTENT_TYPE)
        return _reply(start_response, 404, b"not found")

    # ------------------------------------------------------------------ notify
    def notify(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """POST /iotpay/notify: screen, store, answer; enqueue after the answer."""
        started = time.perf_counter()
        address = environ.get("REMOTE_ADDR") or "unknown"
        # An address over its refusal limit still gets a genuine notify through: behind a proxy every
        # request shares one address, and a forger must not be able to make us refuse IOTPay.
        # What the limit saves is the work and the log lines of refusing it again.
        blocked = self.limiter.blocked(address)
        try:
            raw = self._read_body(environ)
            screened = screen(raw, environ.get("CONTENT_TYPE"), self.settings.merchants)
        except Refusal as refusal:
            if blocked:
                metrics.REFUSED.labels("rate_limited").inc()
                return _reply(start_response, 429, b"too many refused notifies from this address",
                              extra=[("Retry-After", "60")])
            return self._refuse(start_response, address, refusal)
        content_type = environ.get("CONTENT_TYPE")
        try:
            stored = self._store(screened, content_type, address)
        except RetryableError as exc:
            metrics.UNAVAILABLE.inc()
            log.error("ingress.not_stored", remote_addr=address, mch_id=screened.mch_id,
                      pay_order_id=screened.pay_order_id, error=str(exc))
            return _reply(start_response, 503, b"inbox unavailable, try again", extra=[("Retry-After", "30")])
        if stored.duplicate:
            metrics.DUPLICATE.inc()
        else:
            metrics.ACCEPTED.labels(screened.family).inc()
        metrics.LATENCY.observe(time.perf_counter() - started)
        log.info("ingress.stored", inbox_id=stored.id, pay_order_id=screened.pay_order_id, mch_id=screened.mch_id,
                 duplicate=stored.duplicate, pan_masked=screened.pan_masked, remote_addr=address)
        body = screened.ack
        start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
        # a duplicate whose first copy could not be queued (Redis was down) is queued now; one
        # that is queued or finished is not queued twice
        if stored.duplicate and stored.state != "received":
            return [body]
        if self.enqueuer.waits:  # the broker's round trip after the answer, not before it
            return _ThenRun(body, lambda: self.enqueuer.send(stored))
        self.enqueuer.send(stored)
        return [body]

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        """The body, at most max_body_bytes. Raises Refusal(413) beyond, Refusal(400) when empty."""
        limit = self.settings.max_body_bytes
        length_text = environ.get("CONTENT_LENGTH") or ""
        stream = environ["wsgi.input"]
        if length_text:
            try:
                length = int(length_text)
            except ValueError:
                raise Refusal(400, "Content-Length: not a number", "malformed_body") from None
            if length > limit:
                raise Refusal(413, f"body: larger than {limit} bytes", "too_large")
            raw = stream.read(length) if length > 0 else b""
        else:  # chunked: read one byte past the limit to know it is exceeded
            raw = stream.read(limit + 1)
            if len(raw) > limit:
                raise Refusal(413, f"body: larger than {limit} bytes", "too_large")
        if not raw:
            raise Refusal(400, "body: empty", "malformed_body")
        return raw

    def _refuse(self, start_response: StartResponse, address: str, refusal: Refusal) -> Iterable[bytes]:
        metrics.REFUSED.labels(refusal.label).inc()
        count = self.limiter.record(address)
        if count <= self.limiter.per_minute:  # beyond, the address is cut off: one line said it
            log.warning("ingress.refused", reason=refusal.label, status=refusal.status, detail=refusal.reason,
                        remote_addr=address, refusals_this_minute=count,
                        cut_off=count == self.limiter.per_minute)
        return _reply(start_response, refusal.status, refusal.reason.encode("utf-8"))

    def _store(self, screened: Screened, content_type: str | None, address: str) -> Stored:
        # one retry: a pooled connection may have died with a PostgreSQL restart; the pool
        # drops it and the second attempt gets a fresh one
        for attempt in (1, 2):
            try:
                with self.pool.connection(timeout=POOL_WAIT_S) as conn:
                    return inbox.store(conn, screened, content_type=content_type, remote_addr=address, now=self.clock())
            except psycopg_pool.PoolTimeout as exc:  # no connection in time: answer 503 now, no second wait
                raise db.unavailable(exc) from exc
            except RetryableError:
                if attempt == 2:
                    raise
            except psycopg.Error as exc:  # e.g. the inbox table missing: not stored, so not acknowledged
                raise RetryableError(f"inbox write failed: {type(exc).__name__}: {exc}".strip()) from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Send the inbox ids the enqueuer still holds (the front calls it at shutdown). Raises nothing."""
        self.enqueuer.close()

    # ------------------------------------------------------------------ health
    def backlog(self) -> dict[str, tuple[int, float]]:
        """Inbox rows not done, for the metrics."""
        with self.pool.connection(timeout=READY_TIMEOUT_S) as conn:
            return inbox.backlog(conn)

    def ready(self, start_response: StartResponse) -> Iterable[bytes]:
        """200 when PostgreSQL and the broker (Redis or RabbitMQ) answer; 503 naming what does not."""
        problems = []
        try:
            with self.pool.connection(timeout=READY_TIMEOUT_S) as conn:
                inbox.ping(conn)
        except Exception as exc:  # any failure means not ready; the text says which service
            problems.append(f"postgresql: {type(exc).__name__}")
        try:
            broker_ping(self.broker)
        except Exception as exc:
            problems.append(f"{broker_kind(self.broker)}: {type(exc.__cause__ or exc).__name__}")
        if problems:
            return _reply(start_response, 503, ("not ready: " + "; ".join(problems)).encode())
        return _reply(start_response, 200, b"ready")


def make_pool(database_url: str, max_size: int = POOL_SIZE) -> psycopg_pool.ConnectionPool:
    """A connection pool that opens in the background, so the app starts with PostgreSQL down."""
    # autocommit: storing a notify is one statement, so one round trip (its own durable commit)
    return db.open_pool(database_url, name="ingress", max_size=max_size, autocommit=True, reconnect_timeout=0)
