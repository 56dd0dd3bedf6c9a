"""The gateway client: signing, response verification, retries only where safe, typed errors."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import httpx
import pytest

from tests.factories import KEY, MCH, MERCHANTS, OLD_KEY
from worker.errors import PermanentError, RetryableError, SignatureError, ValidationError
from worker.gateway.client import GatewayClient
from worker.gateway.errors import (
    GatewayBadSignatureError,
    GatewayFailError,
    GatewayMalformedError,
    GatewayNetworkError,
)
from worker.iotpay import signature
from worker.merchants import Merchant, Merchants
from worker.simulator import NotifyPolicy, Simulator
from worker.simulator.threaded import ThreadedServer



@pytest.fixture
def sim() -> Simulator:
    s = Simulator(MERCHANTS, seed=11, policy=NotifyPolicy())
    yield s
    s.sender.close()


def make_client(transport: httpx.BaseTransport, sleeps: list[float] | None = None, **kw) -> GatewayClient:
    return GatewayClient(MERCHANTS, v3_base_url="http://gw/v3", v1_base_url="http://gw/v1", transport=transport,
                         sleep=(sleeps.append if sleeps is not None else lambda s: None), seed=1, **kw)


def ctl(sim: Simulator) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=sim), base_url="http://gw")


def test_error_types_sit_in_the_project_tree():
    assert issubclass(GatewayNetworkError, RetryableError)
    assert issubclass(GatewayFailError, PermanentError)
    assert issubclass(GatewayBadSignatureError, SignatureError)
    assert issubclass(GatewayMalformedError, ValidationError)


def test_query_refund_void_over_real_http(sim):
    with ThreadedServer(sim) as server, GatewayClient(MERCHANTS, v3_base_url=f"{server.url}/v3",
                                                      v1_base_url=f"{server.url}/v1") as client:
        c = httpx.Client(base_url=server.url)
        pay = c.post("/_sim/orders", json={"mchId": MCH, "mchOrderNo": "O-1", "amount": 5000, "status": 2}).json()
        by_id = client.cc_query(MCH, pay_order_id=pay["payOrderId"])
        by_no = client.cc_query(MCH, mch_order_no="O-1")
        assert by_id.signed and by_id.notify.pay_order_id == by_no.notify.pay_order_id == pay["payOrderId"]
        assert (by_id.notify.amount, by_id.notify.status, by_id.notify.refundable) == (5000, 2, 5000)

        refund = client.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="RF-1", refund_amount=1200)
        assert refund.notify.pay_type == "refund" and refund.notify.original_order_id == pay["payOrderId"]
        assert (refund.notify.amount, refund.notify.refundable) == (1200, 0)
        assert client.cc_query(MCH, pay_order_id=pay["payOrderId"]).notify.refundable == 3800

        other = c.post("/_sim/orders", json={"mchId": MCH, "mchOrderNo": "O-2", "amount": 700, "status": 3}).json()
        void = client.cc_void(MCH, pay_order_id=other["payOrderId"], mch_refund_no="V-1")
        assert (void.notify.pay_type, void.notify.amount) == ("refund", 700)
        assert client.cc_query(MCH, pay_order_id=other["payOrderId"]).notify.refundable == 0

        wx = c.post("/_sim/orders", json={"mchId": MCH, "mchOrderNo": "W-1", "amount": 1999, "currency": "USD",
                                          "channel": "WX_APP", "status": 0}).json()
        pending = client.query_order(MCH, mch_order_no="W-1")
        assert (pending.family, pending.notify.status, pending.notify.currency) == ("v1", 0, "USD")
        c.post(f"/_sim/orders/{wx['payOrderId']}/complete")
        paid = client.query("v1", MCH, pay_order_id=wx["payOrderId"])
        assert paid.notify.status == 2 and paid.notify.pay_succ_time is not None and paid.signed
        refunded = client.refund_order(MCH, pay_order_id=wx["payOrderId"], mch_refund_no="RF-W", refund_amount=999,
                                       currency="USD")
        assert (refunded.notify.amount, refunded.notify.original_order_id) == (999, wx["payOrderId"])


def test_requests_are_signed_in_each_family_format():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/v3/"):
            assert request.headers["content-type"] == "application/json;charset=UTF-8"
            body = json.loads(request.content)
        else:
            assert request.headers["content-type"] == "application/x-www-form-urlencoded"
            form = parse_qs(request.content.decode())
            assert set(form) == {"params"}
            body = json.loads(form["params"][0])
        seen.append(body)
        assert signature.is_valid(body, [KEY])
        return httpx.Response(200, json={"retCode": "FAIL", "retMsg": "order not exist"})

    client = make_client(httpx.MockTransport(handler))
    for call in (lambda: client.cc_query(MCH, pay_order_id="PC1"), lambda: client.query_order(MCH, mch_order_no="X")):
        with pytest.raises(GatewayFailError) as err:
            call()
        assert err.value.ret_msg == "order not exist"
    assert seen[0]["payOrderId"] == "PC1" and "mchOrderNo" not in seen[0]
    assert seen[1]["mchOrderNo"] == "X" and "payOrderId" not in seen[1]


def test_wrong_key_is_refused_by_the_gateway(sim):
    wrong = Merchants({MCH: Merchant(MCH, ("not-the-key",), "jack")})
    client = GatewayClient(wrong, v3_base_url="http://gw/v3", transport=httpx.WSGITransport(app=sim))
    with pytest.raises(GatewayFailError, match="signature error"):
        client.cc_query(MCH, pay_order_id="PC1")


def test_query_retries_5xx_with_backoff_then_succeeds(sim):
    c = ctl(sim)
    pay = c.post("/_sim/orders", json={"mchId": MCH, "mchOrderNo": "O-1", "amount": 100, "status": 2}).json()
    c.post("/_sim/faults", json={"httpStatus": 503, "count": 2})
    sleeps: list[float] = []
    answer = make_client(httpx.WSGITransport(app=sim), sleeps).cc_query(MCH, pay_order_id=pay["payOrderId"])
    assert answer.notify.status == 2
    assert sim.requests["cc_query"] == 3 and len(sleeps) == 2
    assert 0.1 <= sleeps[0] <= 0.2 and 0.2 <= sleeps[1] <= 0.4  # exponential, jittered


def test_query_gives_up_after_the_retry_budget(sim):
    ctl(sim).post("/_sim/faults", json={"httpStatus": 500, "count": 10})
    sleeps: list[float] = []
    with pytest.raises(GatewayNetworkError) as err:
        make_client(httpx.WSGITransport(app=sim), sleeps, retries=2).cc_query(MCH, pay_order_id="PC1")
    assert err.value.status_code == 500 and sim.requests["cc_query"] == 3 and len(sleeps) == 2


def test_fail_answers_and_4xx_are_not_retried(sim):
    sleeps: list[float] = []
    client = make_client(httpx.WSGITransport(app=sim), sleeps)
    with pytest.raises(GatewayFailError):
        client.cc_query(MCH, pay_order_id="PC-nope")
    ctl(sim).post("/_sim/faults", json={"httpStatus": 404, "count": 1})
    with pytest.raises(GatewayMalformedError, match="HTTP 404"):
        client.cc_query(MCH, pay_order_id="PC-nope")
    assert sleeps == [] and sim.requests["cc_query"] == 2


def test_refund_is_not_resent_once_it_may_have_reached_the_gateway(sim):
    c = ctl(sim)
    pay = c.post("/_sim/orders", json={"mchId": MCH, "mchOrderNo": "O-1", "amount": 100, "status": 2}).json()
    c.post("/_sim/faults", json={"httpStatus": 502, "count": 1})
    with pytest.raises(GatewayNetworkError) as err:
        make_client(httpx.WSGITransport(app=sim)).cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="R1",
                                                             refund_amount=50)
    assert err.value.maybe_applied and sim.requests["cc_refund"] == 1


def test_network_errors_retried_for_queries_and_for_refunds_only_when_never_sent():
    calls = {"n": 0}

    def flaky(exc_type):
        def handler(request: httpx.Request) -> httpx.Response:
            calls["n"] += 1
            raise exc_type("boom", request=request)
        return handler

    client = make_client(httpx.MockTransport(flaky(httpx.ReadTimeout)), retries=3)
    with pytest.raises(GatewayNetworkError, match="after 4 attempts"):
        client.cc_query(MCH, pay_order_id="PC1")
    assert calls["n"] == 4

    calls["n"] = 0
    with pytest.raises(GatewayNetworkError) as err:
        client.cc_refund(MCH, pay_order_id="PC1", mch_refund_no="R", refund_amount=1)
    assert calls["n"] == 1 and err.value.maybe_applied  # a read timeout: the refund may exist

    calls["n"] = 0
    client = make_client(httpx.MockTransport(flaky(httpx.ConnectError)), retries=2)
    with pytest.raises(GatewayNetworkError) as err:
        client.cc_refund(MCH, pay_order_id="PC1", mch_refund_no="R", refund_amount=1)
    assert calls["n"] == 3 and not err.value.maybe_applied  # never connected: safe to resend


def test_connection_refused_is_a_network_error():
    with ThreadedServer(lambda e, s: []) as server:
        url = server.url
    client = GatewayClient(MERCHANTS, v3_base_url=f"{url}/v3", retries=1, sleep=lambda s: None, timeout=2)
    with pytest.raises(GatewayNetworkError, match="ConnectError"):
        client.cc_query(MCH, pay_order_id="PC1")


def test_bad_response_signature_is_refused(sim):
    c = ctl(sim)
    pay = c.post("/_sim/orders", json={"mchId": MCH, "mchOrderNo": "O-1", "amount": 100, "status": 2}).json()
    wx = c.post("/_sim/orders", json={"mchId": MCH, "mchOrderNo": "W-1", "amount": 100, "channel": "WX_APP",
                                      "status": 2}).json()
    c.post("/_sim/faults", json={"badSign": 2})
    client = make_client(httpx.WSGITransport(app=sim))
    with pytest.raises(GatewayBadSignatureError, match="retData"):
        client.cc_query(MCH, pay_order_id=pay["payOrderId"])
    with pytest.raises(GatewayBadSignatureError):
        client.query_order(MCH, pay_order_id=wx["payOrderId"])
    assert client.cc_query(MCH, pay_order_id=pay["payOrderId"]).signed


@pytest.mark.parametrize("status, body, field", [
    (200, b"<html>oops</html>", "body"),
    (200, b"[1, 2]", "body"),
    (200, b'{"retMsg": "x"}', "retCode"),
    (200, b'{"retCode": "SUCCESS", "retData": "nope"}', "retData"),
    (200, b'{"retCode": "SUCCESS"}', "retData"),
    (200, json.dumps({"retCode": "SUCCESS", "retData": {"mchId": MCH, "payOrderId": "PC1", "currency": "CAD",
                                                          "status": 2}}).encode(), "amount"),
    (200, json.dumps({"retCode": "SUCCESS", "retData": {"mchId": MCH, "payOrderId": "PC-OTHER", "amount": 5,
                                                          "currency": "CAD", "status": 2}}).encode(), "payOrderId"),
    (200, json.dumps({"retCode": "SUCCESS", "retData": {"mchId": MCH, "payOrderId": "PC1", "amount": 5, "currency": "CAD",
                                                          "status": 2, "sign": "short"}}).encode(), None),
])
def test_malformed_answers_name_the_field(status, body, field):
    client = make_client(httpx.MockTransport(lambda r: httpx.Response(status, content=body)))
    if field is None:
        with pytest.raises(GatewayBadSignatureError):
            client.cc_query(MCH, pay_order_id="PC1")
        return
    with pytest.raises(GatewayMalformedError) as err:
        client.cc_query(MCH, pay_order_id="PC1")
    assert err.value.field == field


def test_unsigned_answer_accepted_unless_required():
    order = {"mchId": MCH, "payOrderId": "PC1", "amount": 5, "currency": "CAD", "status": 2}
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"retCode": "SUCCESS", "retData": order}))
    assert not make_client(transport).cc_query(MCH, pay_order_id="PC1").signed
    with pytest.raises(GatewayBadSignatureError, match="no sign"):
        make_client(transport, require_response_sign=True).cc_query(MCH, pay_order_id="PC1")


def test_answer_signed_with_a_rotated_key_verifies():
    order = signature.signed({"mchId": MCH, "payOrderId": "PC1", "amount": 5, "currency": "CAD", "status": 2},
                             OLD_KEY)
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"retCode": "SUCCESS", "retData": order}))
    assert make_client(transport).cc_query(MCH, pay_order_id="PC1").signed


def test_bad_arguments_fail_before_any_request():
    client = make_client(httpx.MockTransport(lambda r: pytest.fail("no request expected")))
    with pytest.raises(ValueError):
        client.cc_query(MCH)
    with pytest.raises(ValueError):
        client.cc_query(MCH, pay_order_id="a", mch_order_no="b")
    with pytest.raises(ValidationError) as err:
        client.cc_refund(MCH, pay_order_id="PC1", mch_refund_no="R", refund_amount=0)
    assert err.value.field == "refundAmount"
    with pytest.raises(PermanentError, match="unknown merchant"):
        client.cc_query("M9", pay_order_id="PC1")
