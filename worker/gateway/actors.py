"""The dramatiq actor through which programs (the merchant's checkout) report expected orders.

Declared lazily with an explicit broker, because dramatiq binds an actor to a broker when it
is declared: `expect_actor()` declares it on worker.broker's process broker (the one the
`iotledger worker` processes consume), `declare(broker, queue)` on any other (tests).

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
from typing import Any

import dramatiq
import psycopg_pool

from worker import logs
from worker.errors import PermanentError, RetryableError
from worker.gateway.expected import ExpectedOrder, record
from worker.gateway.expected_refunds import ExpectedRefund, record_refund

ACTOR_NAME = "expect_order"
REFUND_ACTOR_NAME = "expect_refund"
POOL_TIMEOUT_S = 10.0

log = logs.get("worker.gateway.actors")
_lock = threading.Lock()
_actor: dramatiq.Actor | None = None
_pools: dict[str, psycopg_pool.ConnectionPool] = {}


def _pool(database_url: str) -> psycopg_pool.ConnectionPool:
    with _lock:
        pool = _pools.get(database_url)
        if pool is None:
            pool = _pools[database_url] = psycopg_pool.ConnectionPool(
                database_url, min_size=1, max_size=4, timeout=POOL_TIMEOUT_S, open=True, name="expect")
        return pool


def _record(value: Any, save: Any, database_url: str | None) -> bool:
    if database_url is None:
        from worker.cli.context import app_endpoints

        database_url = app_endpoints().database_url
    try:
        with _pool(database_url).connection() as conn:
            return save(conn, value)
    except psycopg_pool.PoolTimeout as exc:
        raise RetryableError(f"PostgreSQL unavailable: {exc}") from exc


def expect_order(order: dict[str, Any], database_url: str | None = None) -> None:
    """Record one expected order (the actor's body). Raises ValidationError (permanent) naming the
    field, RetryableError when PostgreSQL is unavailable."""
    expected = ExpectedOrder.from_dict(order)
    new = _record(expected, record, database_url)
    log.info("expect.recorded", mch_id=expected.mch_id, mch_order_no=expected.mch_order_no, new=new)


def expect_refund(refund: dict[str, Any], database_url: str | None = None) -> None:
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


def declare(broker: dramatiq.Broker, queue_name: str, database_url: str | None = None) -> dramatiq.Actor:
    """Declare the expect actor on broker (idempotent per broker); database_url defaults to the configured one."""
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


def expect_actor() -> dramatiq.Actor:
    """The actor on this process's broker (worker.broker.setup_broker), declared on first use."""
    global _actor
    if _actor is None:
        from worker.broker import setup_broker
        from worker.cli.context import app_settings

        _actor = declare(setup_broker(), app_settings().queue_name)
    return _actor


def send(order: ExpectedOrder, broker: dramatiq.Broker, queue_name: str) -> dramatiq.Message:
    """Enqueue an expected order by actor name (no global broker needed)."""
    message = dramatiq.Message(queue_name=queue_name, actor_name=ACTOR_NAME, args=(order.to_dict(),), kwargs={},
                               options={})
    return broker.enqueue(message)
