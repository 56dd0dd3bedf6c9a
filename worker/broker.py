"""The dramatiq broker on Redis (REDIS_URL or the embedded one, as worker/runtime.py resolves it).

`setup_broker(redis_url)` makes the process's broker once (and dramatiq's global broker); it is
idempotent. Middleware:

- dramatiq's defaults (age limit, time limit, shutdown notifications, callbacks, pipelines);
- Retries with exponential backoff from MIN_BACKOFF_MS to MAX_BACKOFF_MS, at most MAX_RETRIES
  times. Permanent failures are declared on the actor with `throws=` and never retried;
  messages whose retries run out go to the actor named by `on_retry_exhausted`, which records
  them in PostgreSQL (worker/pipeline/actors.py);
- Prometheus, in worker processes only (`prometheus=True`): dramatiq's own counters and
  histograms, served by its exposition server (env `dramatiq_prom_host`, `dramatiq_prom_port`,
  `dramatiq_prom_db`, read when the middleware is imported, hence the late import).
"""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

# ~20 minutes of retries in all (1 s, 2 s, 4 s, ... capped at 5 min): long enough to ride out a
# PostgreSQL restart, short enough that a stuck message is recorded as dead the same hour.
MAX_RETRIES = 10
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 300_000
# A Redis that hangs must not hang a web request: the enqueue gives up and redrive takes over.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0

_broker: RedisBroker | None = None
_senders: dict[str, RedisBroker] = {}


def redis_client(redis_url: str) -> redis.Redis:
    """A Redis client with bounded timeouts (dramatiq's default has none)."""
    return redis.Redis.from_url(redis_url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S)


def build_middleware(*, prometheus: bool = False) -> list[dramatiq.Middleware]:
    """The middleware stack, in dramatiq's default order, with our retry policy."""
    stack: list[dramatiq.Middleware] = [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=MAX_RETRIES, min_backoff=MIN_BACKOFF_MS, max_backoff=MAX_BACKOFF_MS),
    ]
    if prometheus:
        from dramatiq.middleware.prometheus import Prometheus  # reads its env at import

        stack.append(Prometheus())
    return stack


def setup_broker(redis_url: str, *, prometheus: bool = False) -> RedisBroker:
    """Create the process's Redis broker once and make it dramatiq's global broker (a later call
    returns the same broker, whatever its arguments). Raises nothing on a Redis that is down:
    connections are made on first use.
    """
    global _broker
    if _broker is None:
        _broker = RedisBroker(client=redis_client(redis_url), middleware=build_middleware(prometheus=prometheus))
        dramatiq.set_broker(_broker)
    return _broker


def sender_broker(redis_url: str) -> RedisBroker:
    """A broker for sending only (redrive, tools), one per URL, not the global one.

    Sending needs no middleware: retries, limits and metrics apply where messages are processed.
    """
    broker = _senders.get(redis_url)
    if broker is None:
        broker = _senders[redis_url] = RedisBroker(client=redis_client(redis_url), middleware=[])
    return broker
