"""Handing an inbox id to the dramatiq workers, through Redis or RabbitMQ (worker/broker.py).

The web process only sends; it does not import the actors (whose queue is fixed when they are
declared), so the message is built here by actor name.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from worker.broker import translated

ACTOR_NAME = "process_notify"
DEAD_ACTOR_NAME = "record_dead_notify"


def send(broker: dramatiq.Broker, queue_name: str, inbox_id: int) -> None:
    """Enqueue one inbox id for the `process_notify` actor. Raises RetryableError when the broker
    is down (with RabbitMQ: when it did not confirm the message)."""
    message = dramatiq.Message(queue_name=queue_name, actor_name=ACTOR_NAME, args=(inbox_id,), kwargs={}, options={})
    with translated(broker):
        broker.enqueue(message)


def oldest_waiting(broker: dramatiq.Broker, queue_name: str) -> datetime | None:
    """When the message at the head of the queue (the oldest still waiting) was created; None
    when the queue is empty. Raises RetryableError when the broker is down."""
    with translated(broker):
        if isinstance(broker, RabbitmqBroker):
            millis = _head_timestamp_rabbitmq(broker, queue_name)
        else:
            millis = _head_timestamp_redis(broker, queue_name)
    return None if millis is None else datetime.fromtimestamp(millis / 1000, tz=timezone.utc)


def _head_timestamp_redis(broker: RedisBroker, queue_name: str) -> int | None:
    # dramatiq's Redis broker keeps a queue as a list of message ids (pushed right, popped left)
    # and the messages in a hash beside it
    key = f"{broker.namespace}:{queue_name}"
    for _ in range(3):  # the head may be taken between the two reads: look again
        head = broker.client.lrange(key, 0, 0)
        if not head:
            return None
        data = broker.client.hget(f"{key}.msgs", head[0])
        if data:
            return json.loads(data)["message_timestamp"]
    return None


def _head_timestamp_rabbitmq(broker: RabbitmqBroker, queue_name: str) -> int | None:
    # RabbitMQ shows a queue's messages only by taking them: take the head without acknowledging
    # it and hand it straight back (a message put back keeps its place at the head). Messages
    # already delivered to a worker (its prefetch) are not waiting, as in Redis.
    broker.declare_queue(queue_name, ensure=True)
    channel = broker.channel
    method, _properties, body = channel.basic_get(queue_name, auto_ack=False)
    if method is None:
        return None
    channel.basic_nack(method.delivery_tag, requeue=True)
    return dramatiq.Message.decode(body).message_timestamp
