"""The webhook ingress's routes besides the notify: a plain WSGI app (no framework: three routes do
not need one), served on a few threads by the front (front.py).

    GET  /healthz         the process is alive (the front answers it on the event loop)
    GET  /readyz          PostgreSQL and the broker are reachable (503 naming the one that is not)
    GET  /metrics         Prometheus text exposition

POST /iotpay/notify is handled on the event loop by notify_endpoint.py; here a notify's path
only answers 405 to other methods. `make_app` puts the two behind the front (front.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import dramatiq
import psycopg_pool

from worker import db
from worker.broker import kind as broker_kind
from worker.broker import ping as broker_ping
from worker.config import Settings
from worker.pipeline import inbox, metrics
from worker.pipeline.enqueuer import BackgroundEnqueuer, Enqueuer
from worker.pipeline.exchange import NOTIFY_PATH
from worker.pipeline.front import Front
from worker.pipeline.limiter import RefusalLimiter
from worker.pipeline.notify_endpoint import NotifyEndpoint, make_async_pool

READY_TIMEOUT_S = 2.0
# connections per web process for /readyz, /metrics and the enqueuer's marks (the notify has its own)
POOL_SIZE = 3

StartResponse = Callable[..., Any]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _reply(start_response: StartResponse, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
           extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    start_response(f"{status} {_REASONS.get(status, '')}".strip(),
                   [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra])
    return [body]


class Ingress:
    """The WSGI application of the routes besides the notify. Built by `worker.runtime.ingress_app()`."""

    def __init__(self, settings: Settings, pool: psycopg_pool.ConnectionPool, broker: dramatiq.Broker) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == NOTIFY_PATH and method != "POST":
            return _reply(start_response, 405, b"use POST", extra=[("Allow", "POST")])
        if method not in ("GET", "HEAD"):
            return _reply(start_response, 405, b"use GET", extra=[("Allow", "GET, HEAD")])
        if path == "/healthz":
            return _reply(start_response, 200, b"ok")
        if path == "/readyz":
            return self.ready(start_response)
        if path == "/metrics":
            return _reply(start_response, 200, metrics.render(self.backlog), metrics.CONTENT_TYPE)
        return _reply(start_response, 404, b"not found")

    def close(self) -> None:
        """Close the pool."""
        self.pool.close()

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
    return db.open_pool(database_url, name="ingress", max_size=max_size, autocommit=True, reconnect_timeout=0)


def make_app(settings: Settings, database_url: str, broker: dramatiq.Broker, *, background: bool = True,
             limiter: RefusalLimiter | None = None, clock: Callable[[], datetime] | None = None) -> Front:
    """The whole ingress as gunicorn's workers serve it: the front, the notify endpoint on the event
    loop with its async pool, the other routes on threads with a small pool. background: the
    inbox ids go to the broker from a thread of their own (else from a thread per notify, once
    sent: tests look at the queue right after the answer). Raises nothing: the pools connect
    in the background."""
    pool = make_pool(database_url)
    enqueuer = (BackgroundEnqueuer if background else Enqueuer)(broker, settings.queue_name, pool)
    notify = NotifyEndpoint(settings, make_async_pool(database_url), enqueuer, limiter=limiter, clock=clock)
    return Front(Ingress(settings, pool, broker), notify=notify, max_body_bytes=settings.max_body_bytes)
