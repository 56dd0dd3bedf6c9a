"""Parsing V3 and v1 notifies into one typed, validated value."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.factories import KEY, v1_pay, v3_pay, v3_refund, vectors
from worker.errors import ValidationError
from worker.iotpay.body import decode_body
from worker.iotpay.notify import parse_body, parse_params
from worker.iotpay.signature import signed

TZ = ZoneInfo("America/Vancouver")


def test_every_notify_vector_parses_with_cents_and_status_as_int():
    for vec in vectors():
        if vec["kind"] not in ("v3pay", "v3refund", "v3void", "v1notify"):
            continue
        n = parse_params({**vec["payload"], "sign": vec["sign"]}, TZ)
        assert isinstance(n.amount, int) and n.amount == int(vec["payload"]["amount"])
        assert isinstance(n.status, int) and n.status in (2, 3)
        assert n.pay_succ_time is not None and n.pay_succ_time.tzinfo is not None
        assert n.family == ("v1" if vec["kind"] == "v1notify" else "v3")
        if vec["kind"] != "v1notify":
            assert n.pay_type == vec["payload"]["payType"]


def test_v3_pay_succ_time_is_read_in_the_gateway_zone():
    n = parse_params(v3_pay("PC1", 100, when="2025-07-01 12:00:00"), TZ)
    assert n.pay_succ_time == datetime(2025, 7, 1, 19, 0, tzinfo=timezone.utc)  # PDT = UTC-7


def test_v1_pay_succ_time_is_epoch_milliseconds():
    n = parse_params(v1_pay("P1", 100, when_ms=1706803830869), TZ)
    assert n.pay_succ_time == datetime(2024, 2, 1, 16, 10, 30, 869000, tzinfo=timezone.utc)
    assert n.family == "v1" and n.amount == 100 and n.status == 2 and n.channel == "WX_APP"


def test_unknown_fields_are_kept_and_raw_body_is_kept():
    payload = v3_pay("PC1", 100, newField=7)
    raw = json.dumps(payload).encode()
    n = parse_body(raw, "application/json;charset=UTF-8", TZ)
    assert n.extra == {"newField": 7}
    assert n.raw == raw


def test_an_unmasked_card_number_is_masked():
    n = parse_params(v3_pay("PC1", 100, cardNum="4325671234562266"), TZ)
    assert n.card_num == "432567******2266"
    assert n.fields["cardNum"] == "432567******2266"
    assert "4325671234562266" not in repr(n)


def test_a_masked_card_number_is_unchanged():
    assert parse_params(v3_pay("PC1", 100), TZ).card_num == "432567******2266"


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"amount": 19.99}, "amount", "integer cents"),
        ({"amount": "abc"}, "amount", "must be an integer"),
        ({"amount": None}, "amount", "missing"),
        ({"status": "x"}, "status", "must be an integer"),
        ({"currency": "EUR"}, "currency", "unsupported"),
        ({"currency": "USD"}, "currency", "CAD only"),
        ({"payType": "chargeback"}, "payType", "must be one of"),
        ({"paySuccTime": "yesterday"}, "paySuccTime", "expected"),
        ({"paySuccTime": "2025-02-30 10:00:00"}, "paySuccTime", "not a valid"),
        ({"payOrderId": ""}, "payOrderId", "missing"),
        ({"mchId": None}, "mchId", "missing"),
    ],
)
def test_validation_errors_name_the_field(change, field, problem):
    payload = {**v3_pay("PC1", 100), **change}
    with pytest.raises(ValidationError) as exc:
        parse_params(payload, TZ)
    assert exc.value.field == field
    assert problem in exc.value.problem


def test_a_refund_without_original_is_refused():
    payload = signed({**v3_refund("RP1", "PC1", 50), "originalOrderId": ""}, KEY)
    with pytest.raises(ValidationError, match="^originalOrderId: missing"):
        parse_params(payload, TZ)


def test_form_bodies_decode_as_v1_and_params_json_too():
    form = decode_body(b"a=1&b=caf%C3%A9&c=", "application/x-www-form-urlencoded")
    assert form.family == "v1" and form.params == {"a": "1", "b": "café", "c": ""}
    inner = decode_body(b'params={"amount":1}', "application/x-www-form-urlencoded")
    assert inner.family == "v3" and inner.params == {"amount": 1}
