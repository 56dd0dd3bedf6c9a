"""The broker chosen by BROKER_URL's scheme, and the ingress, redrive and tools on RabbitMQ.

The machine's RabbitMQ (tests/fix_rabbitmq.py), a queue per test. The workers on RabbitMQ, with
the broker restarted under them, are in tests/test_pipeline_fault.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import psycopg
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from tests.cli import run as run_cli
from tests.factories import MERCHANTS_JSON, v3_pay
from tests.fix_rabbitmq import delete_queues
from worker.broker import new_broker, rabbitmq_url, sender_broker
from worker.config import Settings
from worker.errors import RetryableError
from worker.gateway import actors as expect_actors
from worker.gateway.expected import ExpectedOrder
from worker.pipeline import messages
from worker.pipeline.ingress import Ingress, make_pool
from worker.pipeline.redrive import redrive_once
from worker.processes import wait_until
from worker.services import Endpoints

DOWN_AMQP = "amqp://guest:guest@127.0.0.1:1/"


def test_the_scheme_chooses_the_broker_and_an_unset_broker_url_changes_nothing():
    assert isinstance(new_broker("amqp://guest:guest@127.0.0.1:5672/", []), RabbitmqBroker)
    assert isinstance(new_broker("redis://127.0.0.1:6379/0", []), RedisBroker)
    assert isinstance(new_broker("unix:///tmp/redis.sock", []), RedisBroker)
    rabbit = new_broker("amqp://guest:guest@127.0.0.1:5672/", [])
    assert rabbit.confirm_delivery  # an enqueue returns once RabbitMQ has the message
    # bounded timeouts, unless the URL names its own
    assert rabbit.parameters.socket_timeout == 2.0 and rabbit.parameters.blocked_connection_timeout == 5.0
    assert "socket_timeout=9" in rabbitmq_url("amqp://h/?socket_timeout=9")
    unset = Endpoints(Settings.from_env({"REDIS_URL": "redis://127.0.0.1:6379/3"}))
    assert unset.broker_url == "redis://127.0.0.1:6379/3" and not unset.embedded_redis
    rabbit_site = Endpoints(Settings.from_env({"BROKER_URL": "amqp://u:p@mq:5672/"}))
    assert rabbit_site.broker_url == "amqp://u:p@mq:5672/" and not rabbit_site.embedded_redis  # no Redis started
    assert Endpoints(Settings.from_env({})).embedded_redis


def test_a_bad_broker_url_is_one_line_naming_it_exit_2(tmp_path):
    done = run_cli("services", "status", env={"BROKER_URL": "kafka://mq:9092", "IOTLEDGER_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "BROKER_URL" in done.stderr and "amqp://" in done.stderr


def test_services_status_names_rabbitmq_with_its_password_masked(rabbitmq_url, tmp_path):
    env = {"BROKER_URL": rabbitmq_url, "IOTLEDGER_DATA_DIR": str(tmp_path)}
    state = json.loads(run_cli("services", "status", "--json", env=env).stdout)
    password = rabbitmq_url.split("@")[0].rsplit(":", 1)[1]
    assert state["rabbitmq"]["kind"] == "external" and state["rabbitmq"]["answers"] is True
    assert state["rabbitmq"]["url"] == rabbitmq_url.replace(f":{password}@", ":***@")
    assert "redis" not in state  # the broker is RabbitMQ: no Redis is used
    down = run_cli("services", "status", env={**env, "BROKER_URL": DOWN_AMQP})
    assert "rabbitmq: external, does not answer (amqp://guest:***@127.0.0.1:1/)" in down.stdout
    assert down.returncode == 3  # a health check can tell


class Site:
    """The ingress in process, on a broker URL, and the rows and queue it leaves."""

    def __init__(self, db_url: str, broker_url: str, queue: str) -> None:
        self.db_url = db_url
        self.settings = Settings.from_env({"DATABASE_URL": db_url, "BROKER_URL": broker_url,
                                           "IOTPAY_MERCHANTS": MERCHANTS_JSON, "IOTLEDGER_QUEUE": queue,
                                           "IOTLEDGER_REDRIVE_AFTER_SECONDS": "120"})
        self.pool = make_pool(db_url, 4)
        self.app = Ingress(self.settings, self.pool, sender_broker(broker_url))

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.WSGITransport(app=self.app, remote_addr="198.51.100.7"),
                            base_url="http://ingress")

    def post(self, c: httpx.Client, params: dict) -> httpx.Response:
        return c.post("/iotpay/notify", content=json.dumps(params).encode(), headers={"Content-Type": "application/json"})

    def states(self) -> list[tuple[str, int]]:
        with psycopg.connect(self.db_url) as conn:
            return conn.execute("SELECT state, redrives FROM inbox ORDER BY id").fetchall()


@pytest.fixture
def rabbit_queue(rabbitmq_url: str, queue_name: str) -> Iterator[str]:
    """queue_name on the machine's RabbitMQ, deleted at the end."""
    try:
        yield queue_name
    finally:
        delete_queues(rabbitmq_url, queue_name)


def waiting(rabbitmq_url: str, queue: str, expected: int) -> bool:
    """True once the queue holds `expected` ready messages (a message handed back by
    oldest_waiting is counted again a moment later: RabbitMQ requeues asynchronously)."""
    broker = sender_broker(rabbitmq_url)
    wait_until(lambda: broker.get_queue_message_counts(queue)[0] == expected, 5, f"{expected} messages in {queue}")
    return True


def test_the_ingress_queues_on_rabbitmq_and_redrive_leaves_rows_whose_message_still_waits(
        db_url, rabbitmq_url, rabbit_queue):
    site = Site(db_url, rabbitmq_url, rabbit_queue)
    try:
        with site.client() as c:
            assert all(site.post(c, v3_pay(f"PCR{n}", 100)).text == "SUCCESS" for n in range(5))
            assert (c.get("/readyz").status_code, c.get("/readyz").text) == (200, "ready")
    finally:
        site.pool.close()
    assert site.states() == [("queued", 0)] * 5
    broker = sender_broker(rabbitmq_url)
    later = datetime.now(timezone.utc) + timedelta(seconds=180)
    assert messages.oldest_waiting(broker, rabbit_queue) is not None
    assert redrive_once(db_url, rabbitmq_url, site.settings, now=later) == 0  # still in line: no snowball
    assert waiting(rabbitmq_url, rabbit_queue, 5)  # looking at the head put it back
    broker.flush(rabbit_queue)  # RabbitMQ lost them (a purge)
    assert messages.oldest_waiting(broker, rabbit_queue) is None
    assert redrive_once(db_url, rabbitmq_url, site.settings, now=later) == 5
    assert redrive_once(db_url, rabbitmq_url, site.settings, now=later + timedelta(seconds=600)) == 0  # waiting again
    # the five ids in one message (redrive sends what it finds together)
    assert waiting(rabbitmq_url, rabbit_queue, 1) and site.states() == [("queued", 1)] * 5


def test_rabbitmq_down_still_answers_success_and_redrive_queues_it_later(db_url, rabbitmq_url, rabbit_queue):
    site = Site(db_url, DOWN_AMQP, rabbit_queue)
    try:
        with site.client() as c:
            r = site.post(c, v3_pay("PCR500", 100))
            ready = c.get("/readyz")
    finally:
        site.pool.close()
    assert (r.status_code, r.text) == (200, "SUCCESS")
    assert ready.status_code == 503 and ready.text.startswith("not ready: rabbitmq: ")
    assert site.states() == [("received", 0)]  # stored, not queued: redrive's job
    with pytest.raises(RetryableError, match="RabbitMQ unavailable"):
        redrive_once(db_url, DOWN_AMQP, site.settings)
    later = datetime.now(timezone.utc) + timedelta(seconds=121)
    assert redrive_once(db_url, rabbitmq_url, site.settings, now=later) == 1
    assert site.states() == [("queued", 1)] and waiting(rabbitmq_url, rabbit_queue, 1)


def test_every_sender_translates_a_rabbitmq_that_is_down():
    down = sender_broker(DOWN_AMQP)
    with pytest.raises(RetryableError, match="RabbitMQ unavailable"):
        messages.send(down, "q", 1)
    order = ExpectedOrder.from_dict({"mchId": "M1", "mchOrderNo": "X-1", "amount": 100, "currency": "CAD",
                                     "channel": "PF_CC", "createdAt": "2026-01-05T10:00:00-05:00"})
    with pytest.raises(RetryableError, match="RabbitMQ unavailable"):
        expect_actors.send(order, down, "q")
