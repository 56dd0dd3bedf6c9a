"""The simulator keeps the gateway's rules: signatures, refundable, voids, idempotent refund numbers,
scheduled completion on its own clock, and a control API that names bad fields."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl

import httpx
import pytest

from tests.factories import KEY, MCH, MCH2, MERCHANTS
from worker.gateway.client import GatewayClient
from worker.gateway.errors import GatewayFailError
from worker.iotpay import signature
from worker.iotpay.body import decode_body
from worker.ledger.intake import verify
from worker.simulator import NotifyPolicy, SimClock, Simulator

T0 = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def sim():
    s = Simulator(MERCHANTS, seed=3, policy=NotifyPolicy(), clock=SimClock(T0))
    yield s
    s.sender.close()


@pytest.fixture
def http(sim):
    return httpx.Client(transport=httpx.WSGITransport(app=sim), base_url="http://sim")


@pytest.fixture
def gw(sim):
    return GatewayClient(MERCHANTS, v3_base_url="http://sim/v3", v1_base_url="http://sim/v1",
                         transport=httpx.WSGITransport(app=sim))


def create(http, **spec) -> dict:
    r = http.post("/_sim/orders", json=spec)
    assert r.status_code == 200, r.text
    return r.json()


def test_partial_refunds_track_refundable_and_never_exceed_it(http, gw):
    pay = create(http, mchId=MCH, mchOrderNo="O1", amount=1000, status=2)
    gw.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R1", refund_amount=300)
    gw.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R2", refund_amount=600)
    with pytest.raises(GatewayFailError, match="exceeds refundable \\(100\\)"):
        gw.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R3", refund_amount=101)
    last = gw.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R4", refund_amount=100)
    assert last.notify.amount == 100
    view = http.get(f"/_sim/orders/{pay['payOrderId']}").json()
    assert (view["refundable"], view["refunded"]) == (0, 1000)


def test_same_refund_number_returns_the_same_refund(http, gw):
    pay = create(http, mchId=MCH, mchOrderNo="O1", amount=1000, status=2)
    first = gw.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R1", refund_amount=400)
    again = gw.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R1", refund_amount=400)
    assert first.notify.pay_order_id == again.notify.pay_order_id
    assert http.get(f"/_sim/orders/{pay['payOrderId']}").json()["refundable"] == 600
    with pytest.raises(GatewayFailError, match="already used"):
        gw.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R1", refund_amount=10)


def test_void_rules(http, gw):
    pay = create(http, mchId=MCH, mchOrderNo="O1", amount=1000, status=2)
    gw.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R1", refund_amount=1)
    with pytest.raises(GatewayFailError, match="partially refunded"):
        gw.cc_void(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="V1")
    settled = create(http, mchId=MCH, mchOrderNo="O2", amount=500, status=2)
    http.post(f"/_sim/orders/{settled['payOrderId']}/settle")
    with pytest.raises(GatewayFailError, match="settled"):
        gw.cc_void(MCH, pay_order_id=settled["payOrderId"], mch_refund_no="V2")
    pending = create(http, mchId=MCH, mchOrderNo="O3", amount=500, status=0)
    with pytest.raises(GatewayFailError, match="not paid"):
        gw.cc_void(MCH, pay_order_id=pending["payOrderId"], mch_refund_no="V3")
    fresh = create(http, mchId=MCH, mchOrderNo="O4", amount=250, status=3)
    void = gw.cc_void(MCH, pay_order_id=fresh["payOrderId"], mch_refund_no="V4")
    assert (void.notify.pay_type, void.notify.amount, void.notify.original_order_id) == ("refund", 250, fresh["payOrderId"])


def test_merchants_cannot_see_each_others_orders(http, gw):
    pay = create(http, mchId=MCH2, mchOrderNo="O1", amount=1000, status=2)
    with pytest.raises(GatewayFailError, match="not exist"):
        gw.cc_query(MCH, pay_order_id=pay["payOrderId"])
    with pytest.raises(GatewayFailError, match="not exist"):
        gw.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R", refund_amount=1)


def test_scheduled_completion_and_failure_follow_the_sim_clock(http, gw):
    slow = create(http, mchId=MCH, mchOrderNo="POS", amount=800, channel="CC_PAX", completeAfter=40)
    doomed = create(http, mchId=MCH, mchOrderNo="UP", amount=800, channel="UPI_APP", failAfter=30)
    assert slow["payOrderId"].startswith("CP") and slow["family"] == "v1"
    http.post("/_sim/clock", json={"advance": 39})
    assert gw.query_order(MCH, mch_order_no="POS").notify.status == 0
    assert gw.query_order(MCH, mch_order_no="UP").notify.status == 9
    http.post("/_sim/clock", json={"advance": 1})
    answer = gw.query_order(MCH, mch_order_no="POS")
    assert answer.notify.status == 2 and answer.notify.pay_succ_time == T0 + timedelta(seconds=40)


def test_v3_wire_shape_and_gateway_local_time(http, sim):
    pay = create(http, mchId=MCH, mchOrderNo="O1", amount=1999, status=2, extra={"newField": "x y"})
    body = json.dumps(signature.signed({"mchId": MCH, "payOrderId": pay["payOrderId"]}, KEY))
    raw = http.post("/v3/cc_query", content=body, headers={"Content-Type": "application/json;charset=UTF-8"}).json()
    assert set(raw) == {"retCode", "retMsg", "retData"} and raw["retCode"] == "SUCCESS"
    data = raw["retData"]
    assert signature.is_valid(data, [KEY])
    assert isinstance(data["amount"], int) and isinstance(data["status"], int) and data["newField"] == "x y"
    assert data["paySuccTime"] == "2026-07-01 05:00:00"  # Vancouver, no zone, as IOTPay writes it
    assert data["cardNum"] == "432567******2266"


def test_v1_wire_shape_is_flat_and_signed(http):
    order = create(http, mchId=MCH, mchOrderNo="W1", amount=1999, currency="USD", channel="WX_APP", status=2)
    params = json.dumps(signature.signed({"mchId": MCH, "mchOrderNo": "W1"}, KEY))
    raw = http.post("/v1/query_order", data={"params": params}).json()
    assert raw["retCode"] == raw["resCode"] == "SUCCESS" and signature.is_valid(raw, [KEY])
    assert raw["payOrderId"] == order["payOrderId"] and raw["channelId"] == "WX_APP"
    assert raw["paySuccTime"] == int(T0.timestamp() * 1000)
    refused = http.post("/v1/query_order", data={"params": json.dumps(signature.signed({"mchId": MCH, "mchOrderNo": "nope"}, KEY))}).json()
    assert refused["retCode"] == "SUCCESS" and refused["resCode"] == "FAIL" and refused["errCodeDes"] == "order not exist"


@pytest.mark.parametrize("path, body, ctype, msg", [
    ("/v3/cc_query", json.dumps({"mchId": MCH, "payOrderId": "PC1", "sign": "0123456789ABCDEF0123456789ABCDEF"}).encode(),
     "application/json", "signature error"),
    ("/v3/cc_query", json.dumps({"mchId": MCH, "payOrderId": "PC1"}).encode(), "application/json", "signature error"),
    ("/v3/cc_query", b'{"mchId": "M9", "payOrderId": "PC1"}', "application/json", "mchId not exist"),
    ("/v3/cc_query", b'not json', "application/json", "body: is not valid JSON"),
    ("/v3/cc_query", json.dumps({"mchId": MCH}).encode(), "text/plain", "Content-Type"),
    ("/v1/query_order", b'x=1', "application/x-www-form-urlencoded", "params: is required"),
])
def test_bad_requests_answer_fail_with_a_reason(http, path, body, ctype, msg):
    raw = http.post(path, content=body, headers={"Content-Type": ctype}).json()
    assert raw["retCode"] == "FAIL" and msg in raw["retMsg"]


@pytest.mark.parametrize("spec, field", [
    ({"mchOrderNo": "O", "amount": 1}, "mchId"),
    ({"mchId": MCH, "amount": 1}, "mchOrderNo"),
    ({"mchId": MCH, "mchOrderNo": "O", "amount": 1.5}, "amount"),
    ({"mchId": MCH, "mchOrderNo": "O", "amount": 0}, "amount"),
    ({"mchId": MCH, "mchOrderNo": "O", "amount": 1, "currency": "USD"}, "currency"),
    ({"mchId": MCH, "mchOrderNo": "O", "amount": 1, "colour": "red"}, "colour"),
    ({"mchId": MCH, "mchOrderNo": "O", "amount": 1, "completeStatus": 9}, "completeStatus"),
    ({"mchId": MCH, "mchOrderNo": "O", "amount": 1, "createdAt": "2026-01-01T00:00:00"}, "createdAt"),
])
def test_control_api_names_the_bad_field(http, spec, field):
    r = http.post("/_sim/orders", json=spec)
    assert r.status_code == 400 and r.json()["error"].startswith(field)


def test_notify_body_is_what_the_ledger_accepts(http, sim):
    v3 = create(http, mchId=MCH, mchOrderNo="O1", amount=1999, status=2)
    v1 = create(http, mchId=MCH, mchOrderNo="W1", amount=1999, currency="USD", channel="ALIPAY_MOBILE", status=3)
    for order, family in ((v3, "v3"), (v1, "v1")):
        nb = http.get(f"/_sim/orders/{order['payOrderId']}/notify-body").json()
        body = decode_body(nb["body"].encode(), nb["contentType"])
        assert body.family == family
        notify = verify(body, MERCHANTS, sim.gateway_tz)
        assert (notify.pay_order_id, notify.amount, notify.status) == (order["payOrderId"], 1999, order["status"])
    form = dict(parse_qsl(http.get(f"/_sim/orders/{v1['payOrderId']}/notify-body").json()["body"]))
    assert all(isinstance(v, str) for v in form.values()) and form["paySuccTime"].isdigit()


def test_ids_are_reproducible_by_seed():
    def ids(seed):
        s = Simulator(MERCHANTS, seed=seed, clock=SimClock(T0))
        c = httpx.Client(transport=httpx.WSGITransport(app=s), base_url="http://sim")
        return [create(c, mchId=MCH, mchOrderNo=f"O{i}", amount=1)["payOrderId"] for i in range(3)]

    assert ids(5) == ids(5) != ids(6)
