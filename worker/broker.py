"""The dramatiq broker: Redis (the default) or RabbitMQ, chosen by the scheme of the broker URL
(BROKER_URL, else REDIS_URL or the embedded Redis, as worker/runtime.py resolves it).

- `redis://`, `rediss://`, `unix://`: dramatiq's RedisBroker, with bounded socket timeouts;
- `amqp://`, `amqps://`: dramatiq's own RabbitmqBroker (pika) with `confirm_delivery`: an enqueue
  returns only once RabbitMQ has taken the message into its durable queue as a persistent message,
  so a message is never lost silently on its way in, and one taken survives a restart of RabbitMQ.

`setup_broker(url)` makes the process's broker once (and dramatiq's global broker); it is
idempotent. `sender_broker(url)` is a broker for sending only. `translated(broker)` turns either
broker's connection errors into RetryableError; `ping(broker)` says whether it answers;
`delete_queue` removes a queue that is no longer used (the demo's).
Middleware:

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

import contextlib
from collections.abc import Iterator

import dramatiq
import pika.exceptions
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.errors import BrokerConnectionError
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, ShutdownNotifications, TimeLimit

from worker.errors import RetryableError
from worker.services import CONNECT_TIMEOUT_S, SOCKET_TIMEOUT_S, rabbitmq_url

# ~20 minutes of retries in all (1 s, 2 s, 4 s, ... capped at 5 min): long enough to ride out a
# PostgreSQL restart, short enough that a stuck message is recorded as dead the same hour.
MAX_RETRIES = 10
MIN_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 300_000
# A broker that hangs must not hang a web request: the enqueue gives up and redrive takes over
# (the timeouts, and RabbitMQ's in its URL, live with the services' addresses in worker/services.py).
RABBITMQ_SCHEMES = ("amqp://", "amqps://")
# what a broker that is down, restarting or unreachable raises (dramatiq's RabbitmqBroker wraps
# pika's errors in ConnectionClosed after its own attempts; its consumer and channel raise pika's)
CONNECTION_ERRORS = (redis.RedisError, OSError, BrokerConnectionError, pika.exceptions.AMQPError)

_broker: dramatiq.Broker | None = None
_senders: dict[str, dramatiq.Broker] = {}


def is_rabbitmq(url: str) -> bool:
    """True when url names a RabbitMQ (amqp:// or amqps://), False for a Redis."""
    return url.startswith(RABBITMQ_SCHEMES)


def kind(broker: dramatiq.Broker) -> str:
    """The service behind broker as /readyz names it: "rabbitmq" or "redis"."""
    return "rabbitmq" if isinstance(broker, RabbitmqBroker) else "redis"


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


def new_broker(url: str, middleware: list[dramatiq.Middleware]) -> dramatiq.Broker:
    """A RabbitmqBroker (confirmed deliveries) for amqp:// and amqps://, else a RedisBroker.
    Connects on first use: raises nothing on a broker that is down."""
    if is_rabbitmq(url):
        return RabbitmqBroker(url=rabbitmq_url(url), confirm_delivery=True, middleware=middleware)
    return RedisBroker(client=redis_client(url), middleware=middleware)


def setup_broker(broker_url: str, *, prometheus: bool = False) -> dramatiq.Broker:
    """Create the process's broker once and make it dramatiq's global broker (a later call
    returns the same broker, whatever its arguments). Raises nothing on a broker that is down:
    connections are made on first use.
    """
    global _broker
    if _broker is None:
        _broker = new_broker(broker_url, build_middleware(prometheus=prometheus))
        dramatiq.set_broker(_broker)
    return _broker


def sender_broker(broker_url: str) -> dramatiq.Broker:
    """A broker for sending only (redrive, tools), one per URL, not the global one.

    Sending needs no middleware: retries, limits and metrics apply where messages are processed.
    """
    broker = _senders.get(broker_url)
    if broker is None:
        broker = _senders[broker_url] = new_broker(broker_url, [])
    return broker


@contextlib.contextmanager
def translated(broker: dramatiq.Broker) -> Iterator[None]:
    """Raise RetryableError ("Redis unavailable: ..." / "RabbitMQ unavailable: ...") for a
    connection error of broker inside the block. A RabbitMQ connection that failed is dropped, so
    the next use in this thread opens a new one."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        name = "Redis"
        if isinstance(broker, RabbitmqBroker):
            name = "RabbitMQ"
            del broker.connection  # this thread's connection and channel; never raises
        raise RetryableError(f"{name} unavailable: {str(exc) or type(exc).__name__}") from exc


def ping(broker: dramatiq.Broker) -> None:
    """Return when the broker answers. Raises RetryableError when it does not."""
    with translated(broker):
        if not isinstance(broker, RabbitmqBroker):
            broker.client.ping()
            return
        try:
            broker.connection.process_data_events(0)
        except pika.exceptions.AMQPError:
            # this thread's connection may be one RabbitMQ closed since (idle past its heartbeat,
            # or the node restarted): a fresh one tells whether RabbitMQ answers now
            del broker.connection
            broker.connection.process_data_events(0)


def delete_queue(broker: dramatiq.Broker, queue_name: str) -> None:
    """Remove a queue that is no longer used, with its delayed messages (and on RabbitMQ, where an
    empty queue stays declared, its dead letters too). Raises RetryableError when the broker is down."""
    with translated(broker):
        if isinstance(broker, RabbitmqBroker):
            for name in (queue_name, dq_name(queue_name), xq_name(queue_name)):
                broker.channel.queue_delete(name)
        else:
            broker.flush(queue_name)
