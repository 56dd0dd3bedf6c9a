"""The dramatiq actor through which programs (the merchant's checkout) report expected orders.

Declared with an explicit broker, because dramatiq binds an actor to a broker when it is
declared: `declare(broker, queue, database_url)` (worker/runtime.py declares it on the broker the
`iotledger worker` processes consume; tests on their own).

A checkout that does not import this package can enqueue the same message by name:
    actor_name "expect_order", queue IOTLEDGER_QUEUE (default "iotpay"),
    args [{"mchId", "mchOrderNo", "amount", "currency", "channel", "createdAt", "payOrderId"?}]
and for the refunds it requests (opt-in: see worker/gateway/expected_refunds.py):
    actor_name "expect_refund", same queue,
    args [{"mchId", "mchRefundNo", "originalOrderId", "amount", "currency", "requestedAt"}]
Bad fields are permanent (never retried, logged with the field); PostgreSQL down is retried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import dramatiq
import psycopg_pool

from worker import db, logs
from worker.broker import translated
from worker.errors import PermanentError
from worker.gateway.expected import ExpectedOrder, record
from worker.gateway.expected_refunds import ExpectedRefund, record_refund

ACTOR_NAME = "expect_order"
REFUND_ACTOR_NAME = "expect_refund"
POOL_TIMEOUT_S = 10.0

log = logs.get("worker.gateway.actors")
_lock = threading.Lock()
_pools: dict[str, psycopg_pool.ConnectionPool] = {}
DatabaseUrl = str | Callable[[], str]  # the URL, or a function giving it on first use


def _pool(database_url: str) -> psycopg_pool.ConnectionPool:
    with _lock:
        pool = _pools.get(database_url)
        if pool is None:
            pool = _pools[database_url] = db.open_pool(database_url, name="expect", max_size=4, timeout=POOL_TIMEOUT_S)
        return pool


def _record(value: Any, save: Any, database_url: DatabaseUrl) -> bool:
    url = database_url if isinstance(database_url, str) else database_url()
    with db.translated(), _pool(url).connection() as conn:
        return save(conn, value)


def expect_order(order: dict[str, Any], database_url: DatabaseUrl) -> None:
    """Record one expected order (the actor's body). Raises ValidationError (permanent) naming the
    field, RetryableError when PostgreSQL is unavailable."""
    expected = ExpectedOrder.from_dict(order)
    new = _record(expected, record, database_url)
    log.info("expect.recorded", mch_id=expected.mch_id, mch_order_no=expected.mch_order_no, new=new)


def expect_refund(refund: dict[str, Any], database_url: DatabaseUrl) -> None:
    """Record one refund the merchant requested (the `expect_refund` actor's body). Raises
    ValidationError (permanent) naming the field, RetryableError when PostgreSQL is unavailable."""
    expected = ExpectedRefund.from_dict(refund)
    new = _record(expected, record_refund, database_url)
    log.info("expect.refund_recorded", mch_id=expected.mch_id, mch_refund_no=expected.mch_refund_no, new=new)


def close_pools() -> None:
    """Close the connection pools this module opened (tests, shutdown)."""
    with _lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()


def declare(broker: dramatiq.Broker, queue_name: str, database_url: DatabaseUrl) -> dramatiq.Actor:
    """Declare the expect actors on broker (idempotent per broker), recording into database_url (or
    the URL a function gives on the first message). Returns the `expect_order` actor."""
    try:
        return broker.get_actor(ACTOR_NAME)
    except dramatiq.errors.ActorNotFound:
        pass

    def expect_order_message(order: dict[str, Any]) -> None:
        expect_order(order, database_url)

    def expect_refund_message(refund: dict[str, Any]) -> None:
        expect_refund(refund, database_url)

    try:
        broker.get_actor(REFUND_ACTOR_NAME)
    except dramatiq.errors.ActorNotFound:
        dramatiq.actor(expect_refund_message, broker=broker, actor_name=REFUND_ACTOR_NAME, queue_name=queue_name,
                       throws=(PermanentError,))
    return dramatiq.actor(expect_order_message, broker=broker, actor_name=ACTOR_NAME, queue_name=queue_name,
                          throws=(PermanentError,))


def send(order: ExpectedOrder, broker: dramatiq.Broker, queue_name: str) -> dramatiq.Message:
    """Enqueue an expected order by actor name (no global broker needed). Raises RetryableError
    when the broker (Redis or RabbitMQ) is down."""
    message = dramatiq.Message(queue_name=queue_name, actor_name=ACTOR_NAME, args=(order.to_dict(),), kwargs={},
                               options={})
    with translated(broker):
        return broker.enqueue(message)
