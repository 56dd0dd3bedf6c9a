"""Expected orders: validation naming the field, idempotent recording, the CLI, and the dramatiq actor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import dramatiq
import psycopg
import pytest
from dramatiq.brokers.redis import RedisBroker

from worker.errors import ValidationError
from worker.gateway import actors
from worker.gateway.expected import ExpectedOrder, record
from worker.gateway.schedule import Schedule

NOW = datetime(2026, 5, 1, 16, 30, tzinfo=timezone.utc)
GOOD = {"mchId": "M1", "mchOrderNo": "CHK-1", "amount": 2599, "currency": "CAD", "channel": "PF_CC",
        "createdAt": "2026-05-01T12:30:00-04:00"}


def row(conn, mch_order_no="CHK-1"):
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM expected_orders WHERE mch_order_no = %s", (mch_order_no,)).fetchone()


@pytest.mark.parametrize("change, field", [
    ({"mchId": ""}, "mchId"),
    ({"mchOrderNo": None}, "mchOrderNo"),
    ({"amount": 25.99}, "amount"),
    ({"amount": 0}, "amount"),
    ({"amount": True}, "amount"),
    ({"currency": "EUR"}, "currency"),
    ({"currency": "USD"}, "currency"),  # V3 (PF_CC) is CAD only
    ({"channel": ""}, "channel"),
    ({"createdAt": "yesterday"}, "createdAt"),
    ({"createdAt": "2026-05-01T12:30:00"}, "createdAt"),  # no zone
    ({"family": "v2"}, "family"),
    ({"mchOrderNo": " CHK-1"}, "mchOrderNo"),
    ({"colour": "red"}, "colour"),
])
def test_bad_fields_are_named(change, field):
    with pytest.raises(ValidationError) as err:
        ExpectedOrder.from_dict({**GOOD, **change})
    assert err.value.field == field


def test_family_follows_the_channel():
    assert ExpectedOrder.from_dict(GOOD).family == "v3"
    assert ExpectedOrder.from_dict({**GOOD, "channel": "CC_PAX"}).family == "v1"
    usd = ExpectedOrder.from_dict({**GOOD, "channel": "WX_APP", "currency": "USD", "amount": "150"})
    assert (usd.family, usd.amount) == ("v1", 150)
    assert ExpectedOrder.from_dict({k: v for k, v in GOOD.items() if k != "createdAt"}, now=NOW).created_at == NOW


def test_record_is_idempotent_and_learns_the_pay_order_id(conn):
    order = ExpectedOrder.from_dict(GOOD)
    assert record(conn, order) is True
    assert record(conn, order) is False
    first = row(conn)
    assert first["pay_order_id"] is None and first["amount"] == 2599
    assert first["created_at"] == datetime(2026, 5, 1, 16, 30, tzinfo=timezone.utc)
    assert first["next_query_at"] == first["created_at"] + timedelta(minutes=1)
    assert record(conn, ExpectedOrder.from_dict({**GOOD, "payOrderId": "PC123"})) is False
    assert row(conn)["pay_order_id"] == "PC123"


@pytest.mark.parametrize("change, field", [({"amount": 2600}, "amount"), ({"channel": "UPI_EX"}, "channel"),
                                           ({"payOrderId": "PC999"}, "payOrderId")])
def test_contradicting_a_recorded_order_is_refused_and_changes_nothing(conn, change, field):
    record(conn, ExpectedOrder.from_dict({**GOOD, "payOrderId": "PC123"}))
    before = row(conn)
    with pytest.raises(ValidationError) as err:
        record(conn, ExpectedOrder.from_dict({**GOOD, "payOrderId": "PC123", **change}))
    assert err.value.field == field
    assert row(conn) == before


def test_pos_orders_are_first_queried_after_two_seconds(conn):
    record(conn, ExpectedOrder.from_dict({**GOOD, "channel": "CC_PAX"}), Schedule())
    r = row(conn)
    assert r["family"] == "v1" and r["next_query_at"] - r["created_at"] == timedelta(seconds=2)


def test_database_refuses_what_python_would_never_write(conn):
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO expected_orders (mch_id, mch_order_no, amount, currency, channel, family, created_at)"
                     " VALUES ('M1', 'X', 0, 'CAD', 'PF_CC', 'v3', now())")
    conn.rollback()
    with pytest.raises(psycopg.errors.CheckViolation):  # a given-up order is never scheduled again
        conn.execute("INSERT INTO expected_orders (mch_id, mch_order_no, amount, currency, channel, family, created_at,"
                     " gave_up_at, next_query_at) VALUES ('M1', 'X', 5, 'CAD', 'PF_CC', 'v3', now(), now(), now())")
    conn.rollback()


def _cli(db_url, redis_url, tmp_path, *args, stdin=None):
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_DATA_DIR=str(tmp_path),
               IOTPAY_MERCHANTS=json.dumps({"M1": {"keys": ["k1"]}}))
    iotledger = os.path.join(os.path.dirname(sys.executable), "iotledger")
    return subprocess.run([iotledger, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def test_cli_expect_one_and_many(db_url, redis_url, tmp_path, conn):
    done = _cli(db_url, redis_url, tmp_path, "expect", "--mch-id", "M1", "--mch-order-no", "CLI-1", "--amount", "500",
                "--channel", "PF_CC", "--created-at", "2026-05-01T12:00:00Z", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"recorded": 1, "already_known": 0, "refused": 0}
    lines = "\n".join([json.dumps({**GOOD, "mchOrderNo": "CLI-2"}), json.dumps({**GOOD, "mchOrderNo": "CLI-1",
                       "amount": 500, "createdAt": "2026-05-01T12:00:00Z"}),
                       json.dumps({**GOOD, "mchOrderNo": "CLI-3", "amount": -1}), "{oops",
                       json.dumps({**GOOD, "mchId": "M9", "mchOrderNo": "CLI-4"})])
    many = _cli(db_url, redis_url, tmp_path, "expect", "--file", "-", stdin=lines)
    assert many.returncode == 1
    assert many.stdout.strip() == "1 order(s) recorded, 1 already known, 3 refused"
    assert "order 3: amount: must be > 0" in many.stderr and "order 4: line 4: not valid JSON" in many.stderr
    assert "order 5: mchId: unknown merchant 'M9'" in many.stderr
    got = [r[0] for r in conn.execute("SELECT mch_order_no FROM expected_orders ORDER BY 1")]
    assert got == ["CLI-1", "CLI-2"]


def test_cli_sweep_with_nothing_due_prints_counts(db_url, redis_url, tmp_path):
    done = _cli(db_url, redis_url, tmp_path, "sweep", "--json")
    assert done.returncode == 0, done.stderr
    assert _cli(db_url, redis_url, tmp_path, "sweep").stdout.startswith("sweep at ")
    counts = json.loads(done.stdout)
    assert (counts["due"], counts["queried"], counts["skipped"]) == (0, 0, False)


def test_actor_records_through_a_real_dramatiq_worker(db_url, redis_url, queue_name):
    broker = RedisBroker(url=redis_url)
    broker.emit_after("process_boot")
    actor = actors.declare(broker, queue_name, db_url)
    assert actors.declare(broker, queue_name, db_url) is actor
    good = ExpectedOrder.from_dict({**GOOD, "mchOrderNo": "ACT-1"})
    actors.send(good, broker, queue_name)
    actor.send({**GOOD, "mchOrderNo": "ACT-2", "amount": "nope"})  # permanent: not retried, nothing recorded
    actor.send(good.to_dict())  # the same order again: harmless
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        with psycopg.connect(db_url, autocommit=True) as c:
            while time.monotonic() < deadline:
                broker.join(queue_name, timeout=20_000)
                if c.execute("SELECT count(*) FROM expected_orders").fetchone()[0]:
                    break
            got = c.execute("SELECT mch_order_no, amount FROM expected_orders").fetchall()
    finally:
        worker.stop()
        actors.close_pools()
        broker.client.delete(f"dramatiq:{queue_name}", f"dramatiq:{queue_name}.msgs", f"dramatiq:{queue_name}.DQ",
                             f"dramatiq:{queue_name}.DQ.msgs", f"dramatiq:{queue_name}.XQ", f"dramatiq:{queue_name}.XQ.msgs")
        broker.close()
    assert got == [("ACT-1", 2599)]
