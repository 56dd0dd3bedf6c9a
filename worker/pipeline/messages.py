"""Handing an inbox id to the dramatiq workers.

The web process only sends; it does not import the actors (whose queue is fixed when they are
declared), so the message is built here by actor name.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

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


def oldest_waiting(broker: RedisBroker, queue_name: str) -> datetime | None:
    """When the message at the head of the queue (the oldest still waiting) was created; None
    when the queue is empty. Raises RetryableError when Redis is down.

    dramatiq's Redis broker keeps a queue as a list of message ids (pushed right, popped left)
    and the messages in a hash beside it.
    """
    key = f"{broker.namespace}:{queue_name}"
    try:
        for _ in range(3):  # the head may be taken between the two reads: look again
            head = broker.client.lrange(key, 0, 0)
            if not head:
                return None
            data = broker.client.hget(f"{key}.msgs", head[0])
            if data:
                return datetime.fromtimestamp(json.loads(data)["message_timestamp"] / 1000, tz=timezone.utc)
    except (redis.RedisError, OSError) as exc:
        raise RetryableError(f"Redis unavailable: {exc}") from exc
    return None
