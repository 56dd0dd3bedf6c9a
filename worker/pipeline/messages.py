"""Handing inbox ids to the dramatiq workers, through Redis or RabbitMQ (worker/broker.py).

One id goes in a `process_notify` message; several at once (the ingress's enqueuer, redrive) go
in `process_notifies` messages of up to IDS_PER_MESSAGE ids, which a worker takes as one batch:
a backlog costs the broker one message per batch, not one per notify.

The web process only sends; it does not import the actors (whose queue is fixed when they are
declared), so the message is built here by actor name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from uuid import uuid4

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from worker.broker import translated

ACTOR_NAME = "process_notify"
BATCH_ACTOR_NAME = "process_notifies"
DEAD_ACTOR_NAME = "record_dead_notify"
IDS_PER_MESSAGE = 50  # IOTLEDGER_BATCH_SIZE's default: a message is one batch


def send(broker: dramatiq.Broker, queue_name: str, inbox_id: int) -> None:
    """Enqueue one inbox id for the `process_notify` actor. Raises RetryableError when the broker
    is down (with RabbitMQ: when it did not confirm the message)."""
    message = dramatiq.Message(queue_name=queue_name, actor_name=ACTOR_NAME, args=(inbox_id,), kwargs={}, options={})
    with translated(broker):
        broker.enqueue(message)


def _messages(queue_name: str, inbox_ids: Sequence[int], options: Callable[[], dict]) -> list[dramatiq.Message]:
    """One id: a `process_notify` message; more: `process_notifies` messages of up to IDS_PER_MESSAGE ids."""
    if len(inbox_ids) == 1:
        return [dramatiq.Message(queue_name=queue_name, actor_name=ACTOR_NAME, args=(inbox_ids[0],), kwargs={},
                                 options=options())]
    return [dramatiq.Message(queue_name=queue_name, actor_name=BATCH_ACTOR_NAME,
                             args=(list(inbox_ids[i:i + IDS_PER_MESSAGE]),), kwargs={}, options=options())
            for i in range(0, len(inbox_ids), IDS_PER_MESSAGE)]


def send_many(broker: dramatiq.Broker, queue_name: str, inbox_ids: Sequence[int]) -> None:
    """Enqueue several inbox ids, in order, IDS_PER_MESSAGE to a message: with Redis in one round
    trip (a pipeline of the very script and arguments RedisBroker.enqueue uses), with another
    broker a message at a time. Raises RetryableError when the broker is down; then some ids may
    have been queued (queuing an id twice is harmless: the actor skips a row that is done).
    """
    if not inbox_ids:
        return
    if not isinstance(broker, RedisBroker):
        with translated(broker):
            for message in _messages(queue_name, inbox_ids, dict):
                broker.enqueue(message)
        return
    script = broker.scripts["dispatch"]
    sent, calls = [], []
    # translated from the first argument on: dramatiq asks Redis for its Lua stack size the first time
    with translated(broker):
        for message in _messages(queue_name, inbox_ids, lambda: {"redis_message_id": str(uuid4())}):
            broker.emit_before("enqueue", message, None)
            # the arguments of RedisBroker.enqueue's do_enqueue
            calls.append(["enqueue", current_millis(), queue_name, broker.broker_id, broker.heartbeat_timeout,
                          broker.dead_message_ttl, broker._should_do_maintenance("enqueue"),
                          broker._max_unpack_size(), message.options["redis_message_id"], message.encode()])
            sent.append(message)
        for attempt in (1, 2):
            pipe = broker.client.pipeline(transaction=False)
            for args in calls:  # evalsha directly: a script run through a pipeline costs a SCRIPT EXISTS first
                pipe.evalsha(script.sha, 1, broker.namespace, *args)
            try:
                pipe.execute()
                break
            except redis.exceptions.NoScriptError:  # Redis restarted since the script was loaded
                if attempt == 2:
                    raise
                broker.client.script_load(script.script)
    for message in sent:
        broker.emit_after("enqueue", message, None)


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
