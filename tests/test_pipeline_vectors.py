"""Every notify of the shared sign vectors through real gunicorn and real dramatiq workers.

Each line (V3 JSON and v1 form), POSTed with its merchant configured, is acknowledged and
ends in the ledger; the same line with one value altered is refused and posts nothing.
"""

from __future__ import annotations


import httpx
import psycopg
import pytest

from tests.factories import vector_merchants, vectors
from tests.pipeline_procs import encode
from worker.processes import running, service_env, start_web, start_worker, wait_until

NOTIFY_KINDS = ("v3pay", "v3refund", "v3void", "v1notify")


def _notifies() -> list[dict]:
    return [v for v in vectors() if v["kind"] in NOTIFY_KINDS]


def _altered(params: dict) -> dict:
    """The same notify with one value changed (the sign is left as it was)."""
    out = dict(params)
    value = out["amount"]
    out["amount"] = str(int(value) + 1) if isinstance(value, str) else value + 1
    return out


@pytest.mark.slow
def test_every_vector_notify_is_acknowledged_and_posted_and_altered_ones_are_refused(db_url, redis_url, queue_name,
                                                                                     tmp_path):
    lines = _notifies()
    assert len(lines) == 36
    env = service_env(db_url, redis_url, queue_name, vector_merchants(), tmp_path)
    web, url = start_web(env, workers=2)
    worker = start_worker(env, processes=1, threads=4)
    with running(web, worker), httpx.Client(base_url=url, timeout=10) as client:
        # altered first: refused, nothing stored, nothing queued
        for v in lines:
            params = _altered({**v["payload"], "sign": v["sign"]})
            body, ctype = encode(params, form=v["kind"] == "v1notify")
            r = client.post("/iotpay/notify", content=body, headers={"Content-Type": ctype})
            assert r.status_code == 403, (v["kind"], r.status_code, r.text)
            assert r.text == "sign: does not verify"
        with psycopg.connect(db_url) as conn:
            assert conn.execute("SELECT count(*) FROM inbox").fetchone()[0] == 0

        for v in lines:
            form = v["kind"] == "v1notify"
            body, ctype = encode({**v["payload"], "sign": v["sign"]}, form=form)
            r = client.post("/iotpay/notify", content=body, headers={"Content-Type": ctype})
            assert r.status_code == 200, (v["kind"], r.text)
            assert r.text == ("success" if form else "SUCCESS")

        def all_done() -> bool:
            with psycopg.connect(db_url) as conn:
                return conn.execute("SELECT count(*) FROM inbox WHERE state = 'done'").fetchone()[0] == len(lines)

        wait_until(all_done, 60, "every inbox row to be done")
        # the same workers serve the gateway's expect_order actor, which shares the queue
        from worker.broker import sender_broker
        from worker.gateway.actors import send as send_expected
        from worker.gateway.expected import ExpectedOrder

        send_expected(ExpectedOrder.from_dict({"mchId": "42935687", "mchOrderNo": "EXP-1", "amount": 2599,
                                               "currency": "CAD", "channel": "PF_CC"}),
                      sender_broker(redis_url), queue_name)

        def expected_recorded() -> bool:
            with psycopg.connect(db_url) as conn:
                return conn.execute("SELECT count(*) FROM expected_orders WHERE mch_order_no = 'EXP-1'").fetchone()[0] == 1

        wait_until(expected_recorded, 30, "the expected order to be recorded")
        metrics = client.get("/metrics").text

    with psycopg.connect(db_url) as conn:
        orders = dict(conn.execute("SELECT pay_order_id, state FROM orders").fetchall())
        entries = dict(conn.execute("SELECT pay_order_id, amount FROM journal_entries").fetchall())
        outcomes = dict(conn.execute("SELECT pay_order_id, outcome FROM inbox").fetchall())
    for v in lines:
        p = v["payload"]
        oid = p["payOrderId"]
        if p.get("payType", "pay") == "pay":
            # every pay vector has a success status: posted once, with its amount
            assert orders[oid] == "posted" and outcomes[oid] == "posted", oid
            assert entries[oid] == int(p["amount"])
        else:
            # refunds and voids of pays that are not in this ledger wait for their original
            assert orders[oid] == "parked" and outcomes[oid] == "parked", oid
            assert oid not in entries
        # the altered copy (amount + 1) never reached the ledger under any id
    assert len(orders) == len(lines)
    assert 'iotledger_notify_refused_total{reason="bad_signature"} 36.0' in metrics
    assert 'iotledger_notify_accepted_total{family="v1"} 7.0' in metrics
    assert 'iotledger_inbox_backlog{state="queued"} 0.0' in metrics
    assert "dramatiq_messages_total" in metrics  # the workers' own metrics, merged on this host
