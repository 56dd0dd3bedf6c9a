"""The dramatiq workers, as real `iotledger worker` processes, against real PostgreSQL and Redis.

Transient errors (PostgreSQL unreachable, through a proxy the test cuts) are retried with
backoff; a message whose retries run out is recorded dead in PostgreSQL; permanent errors are
recorded with their reason and not retried; `iotledger replay` posts them once fixed, and a
second replay posts nothing new.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import dramatiq
import psycopg
import pytest
import redis

from tests.cli import run as run_cli
from tests.factories import KEY, KEY2, MCH, MCH2, MERCHANTS, MERCHANTS_JSON, v3_pay
from tests.ledger_helpers import entries
from tests.pipeline_procs import encode
from worker.broker import sender_broker
from worker.iotpay.signature import signed
from worker.pipeline import inbox, messages
from worker.pipeline.screening import screen
from worker.processes import service_env, start_worker, stop, wait_until

ONLY_MCH = json.dumps({MCH: {"keys": [KEY]}})


def store(db_url: str, params: dict) -> int:
    """Put a notify in the inbox as the ingress does (screened with both merchants known)."""
    body, ctype = encode(params, form=False)
    with psycopg.connect(db_url, autocommit=True) as conn:
        return inbox.store(conn, screen(body, ctype, MERCHANTS), content_type=ctype, remote_addr="127.0.0.1",
                           now=datetime.now(timezone.utc)).id


def rows(db_url: str) -> dict[int, tuple]:
    with psycopg.connect(db_url) as conn:
        return {r[0]: r[1:] for r in conn.execute("SELECT id, state, outcome, reason, attempts FROM inbox")}


@pytest.mark.slow
def test_transient_errors_are_retried_and_exhausted_retries_are_recorded_in_postgresql(db_url, redis_url, queue_name,
                                                                                        tmp_path, proxy):
    a = store(db_url, v3_pay("PCA1", 100))
    b = store(db_url, v3_pay("PCB1", 200))
    # one message's retries: with batches, a's retried batch could take b (still queued until its
    # dead record is written) and post it, which is right too, but not what this test looks at
    env = service_env(proxy.url, redis_url, queue_name, MERCHANTS_JSON, tmp_path, IOTLEDGER_BATCH_SIZE="1")
    proxy.down()
    worker = start_worker(env, processes=1, threads=2)
    broker = sender_broker(redis_url)
    r = redis.Redis.from_url(redis_url)
    try:
        messages.send(broker, queue_name, a)
        # b may be retried once only: its retries run out while PostgreSQL is still unreachable
        broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name=messages.ACTOR_NAME, args=(b,), kwargs={},
                                        options={"max_retries": 1}))
        wait_until(lambda: r.zcard(f"dramatiq:{queue_name}.XQ") >= 1, 60, "b's retries to run out")
        assert rows(db_url)[a][0] == "queued" and rows(db_url)[b][0] == "queued"  # nothing could be written yet
        proxy.up()
        wait_until(lambda: rows(db_url)[a][0] == "done" and rows(db_url)[b][0] == "dead", 90,
                   "a to be posted and b to be recorded dead")
    finally:
        stop(worker)
        for key in r.scan_iter(f"dramatiq:{queue_name}*"):
            r.delete(key)
    state, outcome, reason, _ = rows(db_url)[b]
    assert reason.startswith("retries exhausted after 1 attempts") and "PostgreSQL unavailable" in reason
    assert rows(db_url)[a][:2] == ("done", "posted")
    assert entries(db_url) == [("PCA1", "pay", 100, None)]  # the dead one posted nothing
    log = (tmp_path / "worker.log").read_text()
    assert '"event": "worker.retry"' in log and '"event": "worker.dead"' in log


@pytest.mark.slow
def test_permanent_errors_are_recorded_not_retried_and_replay_posts_them_once_fixed(db_url, redis_url, queue_name,
                                                                                     tmp_path):
    unknown = store(db_url, v3_pay("PCX1", 300, mch=MCH2, key=KEY2))  # the worker lacks MCH2's key
    bad_field = store(db_url, signed(dict(v3_pay("PCY1", 400), currency="EUR"), KEY))
    good = store(db_url, v3_pay("PCZ1", 500))
    env = service_env(db_url, redis_url, queue_name, ONLY_MCH, tmp_path)
    worker = start_worker(env, processes=1, threads=2)
    broker = sender_broker(redis_url)
    r = redis.Redis.from_url(redis_url)
    try:
        for inbox_id in (unknown, bad_field, good):
            messages.send(broker, queue_name, inbox_id)
        wait_until(lambda: [rows(db_url)[i][0] for i in (unknown, bad_field, good)] == ["failed", "failed", "done"],
                   60, "the two bad rows to fail and the good one to post")
        wait_until(lambda: r.zcard(f"dramatiq:{queue_name}.XQ") == 2, 10, "the failures in dramatiq's dead letters")
        retried = r.zcard(f"dramatiq:{queue_name}.DQ")
    finally:
        stop(worker)
        for key in r.scan_iter(f"dramatiq:{queue_name}*"):
            r.delete(key)
    assert retried == 0  # never scheduled for a retry
    got = rows(db_url)
    assert got[unknown] == ("failed", None, "mchId: unknown merchant '10000702'", 1)
    assert got[bad_field][0] == "failed" and got[bad_field][2].startswith("currency:") and got[bad_field][3] == 1
    assert entries(db_url) == [("PCZ1", "pay", 500, None)]

    cli_env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTLEDGER_DATA_DIR": str(tmp_path)}
    listed = run_cli("inbox", "--state", "failed", "--json", env={**cli_env, "IOTPAY_MERCHANTS": ONLY_MCH})
    assert listed.returncode == 0, listed.stderr
    assert [(x["id"], x["pay_order_id"]) for x in json.loads(listed.stdout)] == [(unknown, "PCX1"), (bad_field, "PCY1")]

    # the merchant's key is configured now: replay what failed
    fixed = {**cli_env, "IOTPAY_MERCHANTS": MERCHANTS_JSON}
    first = run_cli("replay", "--state", "failed", env=fixed)
    assert first.returncode == 1  # the EUR notify fails again, and says why
    assert f"{unknown}: posted pay_order_id=PCX1" in first.stdout
    assert f"{bad_field}: failed: currency:" in first.stdout
    assert entries(db_url) == [("PCZ1", "pay", 500, None), ("PCX1", "pay", 300, None)]
    again = run_cli("replay", str(unknown), str(good), env=fixed)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{unknown}: duplicate" in again.stdout and f"{good}: duplicate" in again.stdout
    assert entries(db_url) == [("PCZ1", "pay", 500, None), ("PCX1", "pay", 300, None)]  # nothing new
    got = rows(db_url)
    assert got[unknown][:2] == ("done", "posted")  # the first outcome stands
    assert got[bad_field][0] == "failed"
    usage = run_cli("replay", env=fixed)
    assert usage.returncode == 2


@pytest.mark.slow
def test_a_message_of_several_rows_records_each_outcome_and_is_acknowledged(db_url, redis_url, queue_name, tmp_path):
    unknown = store(db_url, v3_pay("PCX2", 300, mch=MCH2, key=KEY2))  # the worker lacks MCH2's key
    good = store(db_url, v3_pay("PCZ2", 500))
    refund_first = store(db_url, signed(dict(v3_pay("RZ2", 200), payType="refund", originalOrderId="PCZ3",
                                             refundable=0), KEY))
    pay = store(db_url, v3_pay("PCZ3", 700))
    again = store(db_url, dict(reversed(list(v3_pay("PCZ2", 500).items()))))  # the same notify, other bytes
    ids = [unknown, good, refund_first, pay, again]
    env = service_env(db_url, redis_url, queue_name, ONLY_MCH, tmp_path)
    worker = start_worker(env, processes=1, threads=2)
    broker = sender_broker(redis_url)
    r = redis.Redis.from_url(redis_url)
    try:
        messages.send_many(broker, queue_name, ids)  # one process_notifies message
        wait_until(lambda: all(rows(db_url)[i][0] in ("done", "failed") for i in ids), 60, "every row to finish")
        wait_until(lambda: r.llen(f"dramatiq:{queue_name}") == 0 and r.hlen(f"dramatiq:{queue_name}.msgs") == 0, 10,
                   "the message to be acknowledged")
        dead, delayed = r.zcard(f"dramatiq:{queue_name}.XQ"), r.zcard(f"dramatiq:{queue_name}.DQ")
    finally:
        stop(worker)
        for key in r.scan_iter(f"dramatiq:{queue_name}*"):
            r.delete(key)
    assert (dead, delayed) == (0, 0)  # acknowledged: neither a dead letter nor a retry
    got = rows(db_url)
    assert got[unknown] == ("failed", None, "mchId: unknown merchant '10000702'", 1)
    assert [got[i][:2] for i in (good, refund_first, pay, again)] == [
        ("done", "posted"), ("done", "parked"), ("done", "posted"), ("done", "duplicate")]
    assert sorted(entries(db_url)) == [("PCZ2", "pay", 500, None), ("PCZ3", "pay", 700, None),
                                       ("RZ2", "refund", 200, "PCZ3")]
    log = (tmp_path / "worker.log").read_text()
    assert '"event": "worker.failed"' in log and f'"inbox_id": {unknown}' in log


@pytest.mark.slow
def test_a_message_of_several_rows_whose_retries_run_out_records_each_row_dead(db_url, redis_url, queue_name,
                                                                                tmp_path, proxy):
    a, b = store(db_url, v3_pay("PCD1", 100)), store(db_url, v3_pay("PCD2", 200))
    env = service_env(proxy.url, redis_url, queue_name, MERCHANTS_JSON, tmp_path)
    proxy.down()
    worker = start_worker(env, processes=1, threads=2)
    broker = sender_broker(redis_url)
    r = redis.Redis.from_url(redis_url)
    try:
        broker.enqueue(dramatiq.Message(queue_name=queue_name, actor_name=messages.BATCH_ACTOR_NAME, args=([a, b],),
                                        kwargs={}, options={"max_retries": 1}))
        wait_until(lambda: r.zcard(f"dramatiq:{queue_name}.XQ") >= 1, 60, "the retries to run out")
        proxy.up()
        wait_until(lambda: [rows(db_url)[i][0] for i in (a, b)] == ["dead", "dead"], 60, "both rows recorded dead")
    finally:
        stop(worker)
        for key in r.scan_iter(f"dramatiq:{queue_name}*"):
            r.delete(key)
    assert all(rows(db_url)[i][2].startswith("retries exhausted after 1 attempts") for i in (a, b))
    assert entries(db_url) == []
