"""Notifies from the simulator over real HTTP: signed, retried until acknowledged, and dropped,
duplicated or delayed reproducibly by seed. Plus `iotledger simulate` as a real gunicorn process."""

from __future__ import annotations

import os
import threading
from collections import Counter

import httpx
import pytest

from tests.factories import KEY, MCH, MERCHANTS, MERCHANTS_JSON
from worker.gateway.client import GatewayClient
from worker.iotpay import signature
from worker.iotpay.body import decode_body
from worker.processes import start_simulator, stop
from worker.simulator import NotifyPolicy, Simulator
from worker.simulator.notifier import plan
from worker.simulator.threaded import ThreadedServer

FAST = dict(retry_delays=(60.0, 120.0, 300.0), time_scale=0.001)  # 60 s -> 60 ms


class Receiver:
    """A merchant endpoint that answers from a script: the n-th request for an order gets answers[n]."""

    def __init__(self, answers=("success",)):
        self.answers = answers
        self.got: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        params = decode_body(raw, environ.get("CONTENT_TYPE")).params
        with self.lock:
            n = sum(1 for g in self.got if g["payOrderId"] == params["payOrderId"])
            self.got.append(params)
        answer = self.answers[min(n, len(self.answers) - 1)]
        status = "200 OK" if answer != "500" else "500 Internal Server Error"
        start_response(status, [("Content-Type", "text/plain")])
        return [answer.encode()]


def run(policy: NotifyPolicy, receiver: Receiver, orders: int = 1, **spec) -> tuple[Simulator, list[dict]]:
    sim = Simulator(MERCHANTS, seed=policy.seed, policy=policy)
    with ThreadedServer(receiver) as server:
        c = httpx.Client(transport=httpx.WSGITransport(app=sim), base_url="http://sim")
        made = [c.post("/_sim/orders", json={"mchId": MCH, "mchOrderNo": f"O{i}", "amount": 100 + i, "status": 2,
                                             "notifyUrl": server.url + "/notify", **spec}).json() for i in range(orders)]
        assert sim.sender.wait_idle(20)
    sim.sender.close()
    return sim, made


def test_notifies_are_signed_and_acknowledged_once():
    receiver = Receiver(("SUCCESS",))  # the V3 SDK's uppercase acknowledgement counts
    sim, made = run(NotifyPolicy(seed=1, **FAST), receiver, orders=3)
    assert [g["payOrderId"] for g in receiver.got] == [m["payOrderId"] for m in made]
    assert all(signature.is_valid(g, [KEY]) for g in receiver.got)
    assert [d["outcome"] for d in sim.sender.log] == ["acked"] * 3


def test_not_acknowledged_is_sent_again_until_it_is():
    receiver = Receiver(("500", "ok", "success"))  # a 500, then a 200 with the wrong body, then success
    sim, made = run(NotifyPolicy(seed=1, **FAST), receiver)
    assert len(receiver.got) == 3
    assert [(d["attempt"], d["outcome"]) for d in sim.sender.log] == [(1, "not_acked"), (2, "not_acked"), (3, "acked")]


def test_retries_stop_after_the_schedule():
    receiver = Receiver(("500",))
    sim, _ = run(NotifyPolicy(seed=1, **FAST), receiver)
    assert len(receiver.got) == 4  # first attempt + one per retry delay
    assert sim.sender.log[-1]["outcome"] == "not_acked"


def test_v1_notifies_are_form_fields_of_strings():
    receiver = Receiver()
    run(NotifyPolicy(seed=1, **FAST), receiver, channel="WX_APP", currency="USD")
    (got,) = receiver.got
    assert all(isinstance(v, str) for v in got.values()) and got["channelId"] == "WX_APP"
    assert signature.is_valid(got, [KEY])


def test_drops_and_duplicates_are_reproducible_by_seed():
    policy = NotifyPolicy(seed=42, drop_rate=0.3, duplicate_rate=0.3, **FAST)
    receiver = Receiver()
    sim, made = run(policy, receiver, orders=30)
    ids = [m["payOrderId"] for m in made]
    fates = {oid: plan(policy, oid) for oid in ids}
    dropped = {oid for oid, p in fates.items() if p.dropped}
    doubled = {oid for oid, p in fates.items() if not p.dropped and len(p.delays) == 2}
    assert dropped and doubled  # the rates bite at this seed
    counts = Counter(g["payOrderId"] for g in receiver.got)
    assert set(counts) == set(ids) - dropped
    assert {oid for oid, n in counts.items() if n == 2} == doubled
    assert {d["payOrderId"] for d in sim.sender.log if d["outcome"] == "dropped"} == dropped
    # same seed and ids: same fates; another seed: different ones
    assert all(plan(policy, oid) == fates[oid] for oid in ids)
    other = NotifyPolicy(seed=43, drop_rate=0.3, duplicate_rate=0.3)
    assert any(plan(other, oid) != fates[oid] for oid in ids)


def test_random_delays_reorder_notifies():
    receiver = Receiver()
    policy = NotifyPolicy(seed=5, min_delay=0.0, max_delay=100.0, time_scale=0.002)  # up to 0.2 s
    _, made = run(policy, receiver, orders=12)
    sent = [m["payOrderId"] for m in made]
    arrived = [g["payOrderId"] for g in receiver.got]
    assert sorted(arrived) == sorted(sent) and arrived != sent
    delay = {oid: plan(policy, oid).delays[0] * policy.time_scale for oid in sent}
    position = {oid: i for i, oid in enumerate(arrived)}
    for a in sent:  # whenever one delay is clearly shorter, that notify arrives first
        for b in sent:
            if delay[a] + 0.03 < delay[b]:
                assert position[a] < position[b], (a, b)


@pytest.mark.slow
def test_iotledger_simulate_serves_under_gunicorn_with_keep_alive(tmp_path):
    env = dict(os.environ, IOTPAY_MERCHANTS=MERCHANTS_JSON,
               IOTLEDGER_DATA_DIR=str(tmp_path))
    proc, base = start_simulator(env, "--seed", "9", "--merchant", "M2:second-key")
    try:
        c = httpx.Client(base_url=base)
        order = c.post("/_sim/orders", json={"mchId": MCH, "mchOrderNo": "G1", "amount": 77, "status": 2}).json()
        assert c.post("/_sim/merchants", json={"mchId": "M3", "key": "k3"}).status_code == 200
        with GatewayClient(MERCHANTS, v3_base_url=f"{base}/v3", v1_base_url=f"{base}/v1") as gw:
            for _ in range(5):
                assert gw.cc_query(MCH, pay_order_id=order["payOrderId"]).notify.amount == 77
            pool = gw._http._transport._pool
            assert len(pool.connections) == 1  # five queries, one kept-alive connection
        assert c.get("/_sim/stats").json()["requests"]["cc_query"] == 5
    finally:
        stop(proc, timeout=10)
