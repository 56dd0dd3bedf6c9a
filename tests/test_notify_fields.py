"""Every field of the typed Notify, for a V3 and a v1 notify; paySuccTime at its bounds and at DST
edges; a full card number never shown by repr()."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.factories import KEY, MCH
from worker.errors import ValidationError
from worker.iotpay.body import decode_body, detect_family
from worker.iotpay.notify import KNOWN_FIELDS, Notify, parse_body, parse_params, parse_pay_succ_time
from worker.iotpay.signature import signed

TZ = ZoneInfo("America/Vancouver")
UTC = timezone.utc

V3 = {
    "payOrderId": "RP2025588635004098350162", "mchId": MCH, "mchOrderNo": "49260354920",
    "originalOrderId": "PC2025991505839082518497", "amount": 1999, "currency": "CAD", "payType": "refund",
    "refundable": 0, "status": 3, "invoiceNum": "187463108312", "paySuccTime": "2025-03-17 07:00:49",
    "cardNum": "432525******8841", "cardType": "D", "expiryDate": "0431", "authNum": "A1B2C3",
    "transNum": "635000009752", "channel": "UPI_EX", "riskLevel": 2,
}
V1 = {
    "payOrderId": "P0120240201161030", "mchId": MCH, "mchOrderNo": "M-77", "channelId": "WX_APP",
    "amount": "4999", "currency": "USD", "status": "2", "clientIp": "203.0.113.7", "device": "WEB",
    "subject": "Café crème", "channelOrderNo": "882278664424901", "param1": "", "param2": "x",
    "paySuccTime": "1706803830869", "backType": "2",
}


def test_every_field_of_a_v3_refund_notify():
    params = signed(V3, KEY)
    raw = json.dumps(params).encode()
    n = parse_body(raw, "application/json;charset=UTF-8", TZ)
    assert n == Notify(
        family="v3", mch_id=MCH, pay_order_id="RP2025588635004098350162", mch_order_no="49260354920",
        original_order_id="PC2025991505839082518497", pay_type="refund", amount=1999, currency="CAD", status=3,
        refundable=0, pay_succ_time=datetime(2025, 3, 17, 14, 0, 49, tzinfo=UTC),  # PDT, UTC-7
        channel="UPI_EX", card_type="D", card_num="432525******8841", auth_num="A1B2C3", trans_num="635000009752",
        invoice_num="187463108312", sign=params["sign"], fields=params, raw=raw)
    assert type(n.amount) is int and type(n.status) is int and type(n.refundable) is int
    assert n.is_refund is True
    assert n.extra == {"riskLevel": 2}
    assert n.fields is not params and n.fields == params


def test_every_field_of_a_v1_notify():
    params = signed(V1, KEY)
    n = parse_params(params, TZ)
    assert n == Notify(
        family="v1", mch_id=MCH, pay_order_id="P0120240201161030", mch_order_no="M-77", original_order_id=None,
        pay_type="pay", amount=4999, currency="USD", status=2, refundable=None,
        pay_succ_time=datetime(2024, 2, 1, 16, 10, 30, 869000, tzinfo=UTC), channel="WX_APP", card_type=None,
        card_num=None, auth_num=None, trans_num=None, invoice_num=None, sign=params["sign"], fields=params, raw=b"")
    assert n.is_refund is False
    assert n.extra == {k: v for k, v in params.items() if k not in KNOWN_FIELDS}
    assert set(n.extra) == {"clientIp", "device", "subject", "param1", "param2", "backType"}


def test_a_v1_form_body_decodes_to_the_same_notify():
    params = signed(V1, KEY)
    from urllib.parse import urlencode

    raw = urlencode(params).encode()
    n = parse_body(raw, "application/x-www-form-urlencoded", TZ)
    assert n.family == "v1" and n.fields == params and n.raw == raw and n.amount == 4999 and n.currency == "USD"


def test_a_pay_naming_an_original_is_refused_and_a_void_keeps_its_original():
    with pytest.raises(ValidationError) as exc:  # a refund is never booked as income
        parse_params({**V3, "payType": "pay", "originalOrderId": "PC0"}, TZ)
    assert exc.value.field == "payType" and "originalOrderId 'PC0'" in exc.value.problem
    pay = parse_params({**V3, "payType": "pay", "originalOrderId": ""}, TZ)
    assert pay.pay_type == "pay" and pay.original_order_id is None and pay.is_refund is False
    void = parse_params({**V3, "payType": "VOID"}, TZ)
    assert void.pay_type == "void" and void.original_order_id == V3["originalOrderId"] and void.is_refund is True
    missing = {k: v for k, v in V3.items() if k != "payType"}
    assert parse_params({**missing, "originalOrderId": ""}, TZ).pay_type == "pay"


def test_channel_falls_back_to_channel_id_and_optional_fields_may_be_absent():
    n = parse_params({"payOrderId": "P1", "mchId": MCH, "amount": 5, "currency": "CAD", "status": 2,
                      "channelId": "ALIPAY_MOBILE"}, TZ)
    assert (n.channel, n.mch_order_no, n.refundable, n.pay_succ_time, n.card_num, n.sign) == (
        "ALIPAY_MOBILE", None, None, None, None, None)
    assert n.family == "v3"  # a JSON number is present


# ---------------------------------------------------------------------------------------------- paySuccTime
@pytest.mark.parametrize(("ms", "ok"), [
    (10**11 - 1, False), (10**11, True), (10**14 - 1, True), (10**14, False),
    (1706803830, False),  # seconds, not milliseconds: would read as January 1970
    (0, False),
])
@pytest.mark.parametrize("as_text", [False, True], ids=["int", "str"])
def test_epoch_milliseconds_range_at_both_bounds(ms, ok, as_text):
    value = str(ms) if as_text else ms
    when = datetime.fromtimestamp(ms / 1000, tz=UTC) if ok else None
    if ok:  # the format's bounds, judged as of that moment (the ten-year window is tested below)
        assert parse_pay_succ_time(value, TZ, now=when) == when
    else:
        with pytest.raises(ValidationError) as exc:
            parse_pay_succ_time(value, TZ)
        assert exc.value.field == "paySuccTime" and "out of range" in exc.value.problem


def test_epoch_bounds_are_the_years_they_should_be():
    early = datetime(1973, 3, 3, 9, 46, 40, tzinfo=UTC)
    assert parse_pay_succ_time(10**11, TZ, now=early) == early
    assert parse_pay_succ_time(10**14 - 1, TZ, now=datetime(5138, 11, 16, tzinfo=UTC)).year == 5138


@pytest.mark.parametrize(("days", "ok"), [(3659, True), (3661, False), (-3659, True), (-3661, False)])
def test_a_time_more_than_ten_years_from_now_is_refused(days, ok):
    now = datetime(2026, 12, 1, tzinfo=UTC)
    value = int((now + timedelta(days=days)).timestamp() * 1000)
    if ok:
        assert parse_pay_succ_time(value, TZ, now=now) == now + timedelta(days=days)
    else:
        with pytest.raises(ValidationError, match="more than 3660 days from now"):
            parse_pay_succ_time(value, TZ, now=now)


@pytest.mark.parametrize(("text", "utc"), [
    ("2025-01-15 12:00:00", datetime(2025, 1, 15, 20, 0, tzinfo=UTC)),  # PST, UTC-8
    ("2025-07-01 12:00:00", datetime(2025, 7, 1, 19, 0, tzinfo=UTC)),  # PDT, UTC-7
    ("2025-03-09 01:59:59", datetime(2025, 3, 9, 9, 59, 59, tzinfo=UTC)),  # last PST second
    ("2025-03-09 03:00:00", datetime(2025, 3, 9, 10, 0, tzinfo=UTC)),  # first PDT second
    ("2025-03-09 02:30:00", datetime(2025, 3, 9, 10, 30, tzinfo=UTC)),  # never on a wall clock: read as PST
    ("2025-11-02 00:59:59", datetime(2025, 11, 2, 7, 59, 59, tzinfo=UTC)),  # PDT
    ("2025-11-02 01:30:00", datetime(2025, 11, 2, 8, 30, tzinfo=UTC)),  # twice on the wall clock: the first (PDT)
    ("2025-11-02 02:00:00", datetime(2025, 11, 2, 10, 0, tzinfo=UTC)),  # PST
    ("2024-02-29 23:59:59", datetime(2024, 3, 1, 7, 59, 59, tzinfo=UTC)),
])
def test_v3_text_is_read_in_the_gateway_zone_across_dst(text, utc):
    got = parse_pay_succ_time(text, TZ)
    assert got == utc and got.tzinfo == UTC


@pytest.mark.parametrize("value", ["2025-13-01 00:00:00", "2025-02-29 10:00:00", "2025-01-01T10:00:00",
                                   "2025-01-01 10:00", " 2025-01-01 10:00:00", "-100000000000", 1.5e12, True])
def test_other_time_texts_are_refused_naming_the_field(value):
    with pytest.raises(ValidationError) as exc:
        parse_pay_succ_time(value, TZ)
    assert exc.value.field == "paySuccTime"


@pytest.mark.parametrize("value", [None, ""])
def test_no_time_is_none(value):
    assert parse_pay_succ_time(value, TZ) is None


# ---------------------------------------------------------------------------------------------- cards
def test_repr_never_shows_a_full_card_number_from_the_raw_body():
    pan = "4325671234562266"
    params = signed({**V3, "cardNum": pan}, KEY)
    raw = json.dumps(params).encode()
    n = parse_body(raw, "application/json", TZ)
    assert pan.encode() in n.raw  # the raw body is kept as it came (it is what was signed) ...
    assert pan not in repr(n) and pan not in str(n)  # ... but never shown
    assert n.card_num == "432567******2266" and n.fields["cardNum"] == "432567******2266"
    assert "432567******2266" in repr(n)


# ---------------------------------------------------------------------------------------------- strings and ints
@pytest.mark.parametrize(("name", "value", "problem"), [
    ("amount", True, "must be an integer"), ("amount", " 5", "must be an integer"), ("amount", "5 ", "must be an integer"),
    ("amount", "1e3", "must be an integer"), ("status", 2.0, "integer cents"), ("mchId", ["x"], "must be a string"),
    ("refundable", "x", "must be an integer"), ("currency", "", "missing"), ("status", "", "missing"),
])
def test_field_types_are_checked(name, value, problem):
    with pytest.raises(ValidationError) as exc:
        parse_params({**V3, name: value}, TZ)
    assert exc.value.field == name and problem in exc.value.problem


def test_numbers_in_text_fields_and_negative_integers():
    n = parse_params({**V3, "mchOrderNo": 12345, "amount": "-5", "refundable": "-0"}, TZ)
    assert n.mch_order_no == "12345" and n.amount == -5 and n.refundable == 0


def test_a_usd_v1_is_fine_but_a_usd_json_is_v3_and_refused():
    assert parse_params(V1, TZ).currency == "USD"
    with pytest.raises(ValidationError, match="CAD only"):
        parse_params({**V3, "currency": "USD"}, TZ)
    assert parse_params({**V1, "amount": 4999}, TZ, family="v1").currency == "USD"  # the caller's family wins


def test_family_detection():
    assert detect_family({"a": "1", "sign": 5}) == "v1"  # the sign does not count
    assert detect_family({"a": "1", "b": 2}) == "v3"
    assert detect_family({}) == "v1"


@pytest.mark.parametrize(("body", "ctype", "family"), [
    (b'{"amount": 1}', None, "v3"), (b'  {"amount": "1"}', "", "v3"), (b"a=1", None, "v1"),
    (b'{"amount": 1}', "application/json; charset=utf-8", "v3"), (b"a=1", "APPLICATION/X-WWW-FORM-URLENCODED", "v1"),
])
def test_bodies_without_or_with_odd_content_types(body, ctype, family):
    assert decode_body(body, ctype).family == family


def test_not_an_object_is_refused():
    with pytest.raises(ValidationError) as exc:
        parse_params(["x"], TZ)  # type: ignore[arg-type]
    assert exc.value.field == "body"


@pytest.mark.parametrize("digits", ["¹²³⁴⁵⁶⁷⁸⁹⁰¹²³", "١٧٠٦٨٠٣٨٣٠٨٦٩"])  # superscripts, Arabic-Indic
def test_pay_succ_time_in_other_scripts_digits_is_a_validation_error(digits):
    with pytest.raises(ValidationError) as exc:
        parse_pay_succ_time(digits, TZ)
    assert exc.value.field == "paySuccTime"


def test_a_json_body_is_v3_even_when_every_value_is_a_string():
    body = decode_body(b'{"payOrderId": "P1", "mchId": "1", "amount": "100", "currency": "USD"}', "application/json")
    assert body.family == "v3" and body.params["currency"] == "USD"
    with pytest.raises(ValidationError, match="V3 orders are CAD only"):
        parse_params({**body.params, "status": "2"}, TZ, family=body.family)
