"""The notify parser's edges that mutation testing found unpinned: the amount ceiling and the status
range at their exact bounds, a bool or a list where a string or an integer belongs, a V3 time that
leaves the calendar, the ten-year window at its exact edge, and the typed value itself (frozen, its
fields out of repr, an empty raw body by default)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from tests.factories import MCH
from worker.errors import ValidationError
from worker.iotpay.body import decode_body
from worker.iotpay.notify import DEFAULT_MAX_AMOUNT_CENTS, MAX_TIME_SKEW_DAYS, STATUS_MAX, Notify, parse_body, \
    parse_params, parse_pay_succ_time

TZ = ZoneInfo("America/Vancouver")
UTC = timezone.utc
PAY = {"payOrderId": "PC1", "mchId": MCH, "amount": 1000, "currency": "CAD", "status": 2}


def _refused(params: dict, **kw) -> ValidationError:
    with pytest.raises(ValidationError) as exc:
        parse_params(params, TZ, **kw)
    return exc.value


# ---------------------------------------------------------------------------------------------- the amount ceiling
def test_the_default_ceiling_is_ten_million_dollars_and_is_itself_accepted():
    assert DEFAULT_MAX_AMOUNT_CENTS == 1_000_000_000
    assert parse_params({**PAY, "amount": 1_000_000_000}, TZ).amount == 1_000_000_000
    assert parse_params({**PAY, "amount": 1_000_000_000, "refundable": 1_000_000_000}, TZ).refundable == 1_000_000_000
    err = _refused({**PAY, "amount": 1_000_000_001})
    assert err.field == "amount" and err.problem == ("1000000001 cents is beyond the largest amount accepted "
                                                     "(1000000000 cents, IOTLEDGER_MAX_AMOUNT_CENTS)")
    err = _refused({**PAY, "refundable": 1_000_000_001})
    assert err.field == "refundable" and "beyond the largest amount accepted" in err.problem


@pytest.mark.parametrize(("amount", "ok"), [(500, True), (501, False), (-500, True), (-501, False)])
def test_a_configured_ceiling_is_inclusive_both_ways(amount, ok):
    params = {**PAY, "amount": amount}
    if ok:
        assert parse_params(params, TZ, max_amount=500).amount == amount
    else:
        err = _refused(params, max_amount=500)
        assert (err.field, err.problem.split(" cents")[0]) == ("amount", str(amount))


# ---------------------------------------------------------------------------------------------- status range
def test_status_is_a_java_int_both_bounds_inclusive():
    assert STATUS_MAX == 2_147_483_647
    assert parse_params({**PAY, "status": 2_147_483_647}, TZ).status == 2_147_483_647
    assert parse_params({**PAY, "status": 0}, TZ).status == 0
    for status in (2_147_483_648, -1):
        err = _refused({**PAY, "status": status})
        assert (err.field, err.problem) == ("status", f"out of range: {status}")


# ---------------------------------------------------------------------------------------------- wrong types
def test_a_bool_where_a_string_belongs_is_refused_not_stringified():
    err = _refused({**PAY, "mchOrderNo": True})
    assert (err.field, err.problem) == ("mchOrderNo", "must be a string, got bool")


@pytest.mark.parametrize("value", [[1000], {"cents": 1000}])
def test_a_list_or_object_where_an_integer_belongs_is_a_validation_error(value):
    err = _refused({**PAY, "amount": value})
    assert (err.field, err.problem) == ("amount", f"must be an integer, got {value!r}")


def test_a_bool_pay_succ_time_is_refused_as_neither_format():
    with pytest.raises(ValidationError) as exc:
        parse_pay_succ_time(True, TZ)
    assert (exc.value.field, exc.value.problem) == ("paySuccTime",
                                                    "expected 'YYYY-MM-DD HH:MM:SS' or epoch ms, got True")


# ---------------------------------------------------------------------------------------------- paySuccTime
def test_a_v3_time_past_the_last_representable_instant_is_out_of_range():
    with pytest.raises(ValidationError) as exc:
        parse_pay_succ_time("9999-12-31 23:59:59", TZ)  # 10000-01-01 in UTC
    assert (exc.value.field, exc.value.problem) == ("paySuccTime", "'9999-12-31 23:59:59' is out of range")


@pytest.mark.parametrize("sign", [1, -1])
def test_the_ten_year_window_includes_its_exact_edge(sign):
    now = datetime(2026, 12, 1, tzinfo=UTC)
    edge = now + sign * timedelta(days=MAX_TIME_SKEW_DAYS)
    assert parse_pay_succ_time(int(edge.timestamp() * 1000), TZ, now=now) == edge
    beyond = edge + sign * timedelta(milliseconds=1)
    with pytest.raises(ValidationError) as exc:
        parse_pay_succ_time(int(beyond.timestamp() * 1000), TZ, now=now)
    assert exc.value.field == "paySuccTime" and exc.value.problem.endswith("is more than 3660 days from now")


# ---------------------------------------------------------------------------------------------- the typed value
def test_a_notify_is_frozen_keeps_its_fields_out_of_repr_and_defaults_to_an_empty_raw_body():
    n = parse_params({**PAY, "secretish": "zz-unknown-field-value"}, TZ)
    assert n.raw == b""
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.amount = 1  # type: ignore[misc]
    assert "fields=" not in repr(n) and "zz-unknown-field-value" not in repr(n)
    built = Notify(family="v3", mch_id=MCH, pay_order_id="PC1", mch_order_no=None, original_order_id=None,
                   pay_type="pay", amount=1, currency="CAD", status=2, refundable=None, pay_succ_time=None,
                   channel=None, card_type=None, card_num=None, auth_num=None, trans_num=None, invoice_num=None,
                   sign=None, fields={})
    assert built.raw == b""


# ---------------------------------------------------------------------------------------------- refund and void
@pytest.mark.parametrize("pay_type", ["void", "VOID", "refund"])
def test_a_void_or_refund_without_its_original_is_refused_naming_the_field(pay_type):
    err = _refused({**PAY, "payType": pay_type})
    assert (err.field, err.problem) == ("originalOrderId", f"missing on a {pay_type.lower()}")


def test_a_notify_with_neither_channel_nor_channel_id_has_no_channel():
    n = parse_params(PAY, TZ)
    assert n.channel is None and n.card_type is None and n.pay_type == "pay" and n.original_order_id is None
    assert parse_params({**PAY, "channelId": "WX_APP"}, TZ).channel == "WX_APP"


# ---------------------------------------------------------------------------------------------- bodies
def _body_refused(raw: bytes, ctype: str | None) -> ValidationError:
    with pytest.raises(ValidationError) as exc:
        decode_body(raw, ctype)
    return exc.value


@pytest.mark.parametrize(("raw", "ctype"), [
    (b"a=1&b=2", "text/plain"),  # form fields under another type are not form fields
    (b'{"a": 1}', "application/x-www-form-urlencoded"),  # JSON text under the form type is not JSON
    (b"abc", "application/x-www-form-urlencoded"),  # no field at all
])
def test_a_body_is_read_by_its_content_type_not_by_its_looks(raw, ctype):
    err = _body_refused(raw, ctype)
    assert (err.field, err.problem) == ("body", f"neither JSON nor form fields (Content-Type {ctype!r})")


@pytest.mark.parametrize("raw", [b"a=1&b", b"a=%FF", b"a=1&&=2"])
def test_a_form_body_not_strictly_well_formed_utf8_is_malformed(raw):
    err = _body_refused(raw, "application/x-www-form-urlencoded")
    assert (err.field, err.problem) == ("body", "malformed form body")


def test_a_form_field_in_utf8_percent_encoding_decodes():
    body = decode_body("subject=Caf%C3%A9".encode(), "application/x-www-form-urlencoded")
    assert (body.family, body.content_type, body.params) == ("v1", "application/x-www-form-urlencoded", {"subject": "Café"})


def test_params_that_are_not_json_name_the_params_field():
    err = _body_refused(b"params=%7Bnot-json", "application/x-www-form-urlencoded")
    assert err.field == "params" and err.problem.startswith("invalid JSON (")


def test_parse_body_applies_the_configured_ceiling():
    raw = json.dumps({**PAY, "amount": 501}).encode()
    assert parse_body(raw, "application/json", TZ).amount == 501
    with pytest.raises(ValidationError) as exc:
        parse_body(raw, "application/json", TZ, max_amount=500)
    assert exc.value.field == "amount"
