"""Handing an inbox id to the dramatiq workers.

The web process only sends; it does not import the actors (whose queue is fixed when they are
declared), so the message is built here by actor name.
"""

from __future__ import annotations

import dramatiq
import redis

from worker.errors import RetryableError

ACTOR_NAME = "process_notify"
DEAD_ACTOR_NAME = "record_dead_notify"


def send(broker: dramatiq.Broker, queue_name: str, inbox_id: int) -> None:
    """Enqueue one inbox id for the `process_notify` actor. Raises RetryableError when Redis is down."""
    message = dramatiq.Message(queue_name=queue_name, actor_name=ACTOR_NAME, args=(inbox_id,), kwargs={}, options={})
    try:
        broker.enqueue(message)
    except (redis.RedisError, OSError) as exc:
        raise RetryableError(f"Redis unavailable: {exc}") from exc
