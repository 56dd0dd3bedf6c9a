"""A notify body decoded once (worker/iotpay/body.py) and authenticated by one function
(worker/iotpay/authentication.py), as the ingress and the ledger's intake both use them."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import urlencode

import pytest

from tests.factories import KEY, MCH, MCH2, MERCHANTS, OLD_KEY, v1_pay, v3_pay
from worker.errors import SignatureError, UnknownMerchantError, ValidationError
from worker.iotpay.authentication import authenticate
from worker.iotpay.body import FORM, JSON, NotifyBody, decode_body
from worker.iotpay.signature import signed


@pytest.mark.parametrize(("raw", "ctype", "family", "decoded_as", "ack"), [
    (b'{"amount": 1}', "application/json;charset=UTF-8", "v3", JSON, b"SUCCESS"),
    (b'  {"amount": "1"}', None, "v3", JSON, b"SUCCESS"),
    (b"amount=1", "application/x-www-form-urlencoded", "v1", FORM, b"success"),
    (b"amount=1", None, "v1", FORM, b"success"),
    # the v1 request style: a V3-looking object in `params=` is told by its values, answered as a form
    (b"params=%7B%22amount%22%3A1%7D", "application/x-www-form-urlencoded", "v3", FORM, b"success"),
    (b"params=%7B%22amount%22%3A%221%22%7D", "application/x-www-form-urlencoded", "v1", FORM, b"success"),
])
def test_a_body_says_its_family_how_it_was_decoded_and_its_answer(raw, ctype, family, decoded_as, ack):
    body = decode_body(raw, ctype)
    assert (body.family, body.content_type, body.ack, body.raw) == (family, decoded_as, ack, raw)


def test_a_family_already_known_is_taken_not_told_again():
    assert decode_body(b'{"amount": 1}', JSON, family="v1").family == "v1"
    assert decode_body(b"amount=1", FORM, family="v3").family == "v3"
    assert decode_body(b"params=%7B%22amount%22%3A1%7D", FORM, family="v1").family == "v1"


def test_a_decoded_body_is_a_value_that_keeps_its_bytes_out_of_its_repr():
    body = decode_body(b'{"cardNum": "4111111111111111"}', JSON)
    assert "4111111111111111" in repr(body.params) and "raw" not in repr(body) and "b'" not in repr(body)
    with pytest.raises(dataclasses.FrozenInstanceError):
        body.family = "v1"  # type: ignore[misc]


def test_fields_decoded_elsewhere_are_told_by_their_values():
    assert NotifyBody.from_params(v3_pay("PC1", 100)) == NotifyBody("v3", JSON, v3_pay("PC1", 100), b"")
    assert NotifyBody.from_params(v1_pay("P1", 100)).family == "v1"


def test_masking_replaces_the_number_in_place_or_reencodes():
    params = v3_pay("PC5", 100, cardNum="4111111111111111")
    raw = json.dumps(params).encode()
    body = decode_body(raw, "application/json").with_card_masked()
    assert body.raw == raw.replace(b"4111111111111111", b"411111******1111")
    assert body.params == dict(params, cardNum="411111******1111") and body.family == "v3"
    # the same digits elsewhere in the body: replaced by re-encoding instead (compact, UTF-8 as it is)
    twice = dict(params, invoiceNum="4111111111111111", subject="Café")
    body = decode_body(json.dumps(twice).encode(), "application/json").with_card_masked()
    masked = dict(twice, cardNum="411111******1111")
    assert body.raw == json.dumps(masked, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    assert body.params == masked and (body.family, body.content_type) == ("v3", JSON)
    untouched = decode_body(json.dumps(v3_pay("PC6", 100)).encode(), "application/json")
    assert untouched.with_card_masked() is untouched
    no_card = decode_body(json.dumps(v1_pay("P1", 100)).encode(), "application/json")
    assert no_card.with_card_masked() is no_card
    not_a_number = decode_body(b'{"cardNum": true, "amount": 1}', JSON)
    assert not_a_number.with_card_masked() is not_a_number


def test_masking_a_form_body_keeps_it_a_form_of_its_family():
    params = {"payOrderId": "PC7", "amount": 100, "cardNum": "4111111111111111", "invoiceNum": "4111111111111111"}
    body = decode_body(urlencode({"params": json.dumps(params)}).encode(), FORM)
    masked = body.with_card_masked()
    assert (masked.family, masked.content_type) == ("v3", FORM)  # re-encoded flat: the family stays V3
    assert decode_body(masked.raw, FORM).params == {k: str(v) for k, v in masked.params.items()}
    assert masked.params["cardNum"] == "411111******1111"
    # a card number sent as a JSON number cannot be masked where it stands: the body is encoded again
    number = decode_body(json.dumps({"cardNum": 4111111111111111, "amount": 1}).encode(), JSON).with_card_masked()
    assert number.raw == b'{"cardNum":"411111******1111","amount":1}'


def test_authenticate_returns_the_merchant_whose_key_signed():
    assert authenticate(v3_pay("PC1", 100), MERCHANTS).mch_id == MCH
    assert authenticate(v3_pay("PC1", 100, key=OLD_KEY), MERCHANTS).mch_id == MCH  # rotation: any key


@pytest.mark.parametrize(("params", "error", "text"), [
    ({k: v for k, v in v3_pay("PC1", 1).items() if k != "mchId"}, ValidationError, "mchId: missing"),
    (dict(v3_pay("PC1", 1), mchId=""), ValidationError, "mchId: missing"),
    # an unsigned body is refused as unsigned before its merchant is looked up
    ({k: v for k, v in v3_pay("PC1", 1, mch="99999999").items() if k != "sign"}, ValidationError, "sign: missing"),
    (dict(v3_pay("PC1", 1, mch="99999999"), sign=""), ValidationError, "sign: missing"),
    (v3_pay("PC1", 1, mch="99999999"), UnknownMerchantError, "mchId: unknown merchant '99999999'"),
    (dict(v3_pay("PC1", 1), sign="ABC"), ValidationError, "sign: must be a 32-character hex string"),
    (dict(v3_pay("PC1", 1), amount=2), SignatureError, "sign: does not match any key of the merchant"),
    (v3_pay("PC1", 1, mch=MCH2, key=KEY), SignatureError, "sign: does not match any key of the merchant"),
    (signed({"mchId": MCH, "amount": 1}, KEY) | {"amount": float("nan")}, ValidationError, "amount: not a finite number"),
])
def test_authenticate_names_what_is_wrong(params, error, text):
    with pytest.raises(error) as info:
        authenticate(params, MERCHANTS)
    assert str(info.value) == text


def _refused(raw: bytes, ctype: str = JSON) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        decode_body(raw, ctype)
    return info.value.field, info.value.problem


def _nested(levels: int) -> bytes:
    """An object whose value is nested in lists so that `levels` containers stand one in another."""
    return b'{"a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


def test_nesting_is_refused_beyond_32_levels_of_objects_or_lists():
    assert decode_body(_nested(32), JSON).params["a"] is not None
    assert _refused(_nested(33)) == ("body", "nested deeper than 32 levels")
    assert decode_body(b'{"a":' * 31 + b'{"b":1' + b"}" * 32, JSON).params["a"]
    assert _refused(b'{"a":' * 32 + b'{"b":1' + b"}" * 33) == ("body", "nested deeper than 32 levels")
    assert _refused(b"[" * 30000 + b"]" * 30000) == ("body", "nested deeper than 32 levels")  # the parser's own limit
    assert _refused(b"params=" + b"%5B" * 30000 + b"%5D" * 30000, FORM) == ("params", "nested deeper than 32 levels")


@pytest.mark.parametrize(("raw", "ctype", "field", "problem"), [
    (b"\xff\xfe", JSON, "body", "not UTF-8 text"),
    (b"{not json", JSON, "body", "invalid JSON (Expecting property name enclosed in double quotes at char 1)"),
    (b"[1,2]", JSON, "body", "JSON body must be an object"),
    (b"hello", "text/plain", "body", "neither JSON nor form fields (Content-Type 'text/plain')"),
    (b"a=1&a=2", FORM, "body", "a form field appears twice"),
    (b"params=[1]", FORM, "params", "must be a JSON object"),
    (b'{"a": 1, "a": 2}', JSON, "body", "key 'a' appears twice"),
    (b'{"a": {"b": 1, "b": 1}}', JSON, "body", "key 'b' appears twice"),
    (b'{"a": 1' + b"0" * 40 + b"}", JSON, "body", "a number has more than 40 digits"),
    (b'{"a": -1' + b"0" * 40 + b"}", JSON, "body", "a number has more than 40 digits"),
    (b'{"a": 1e999}', JSON, "body", "a number is out of range"),
    (b'{"a": -1e999}', JSON, "body", "a number is out of range"),
    (b'{"a": NaN}', JSON, "body", "NaN is not JSON"),
    (b'{"a": -Infinity}', JSON, "body", "-Infinity is not JSON"),
    (b'{"\\ud800": 1}', JSON, "body", "a field is not valid Unicode (a lone surrogate)"),
    (b'{"a": "\\udfff"}', JSON, "body", "a field is not valid Unicode (a lone surrogate)"),
    (b'{"a": ["x", "\\ud800"]}', JSON, "body", "a field is not valid Unicode (a lone surrogate)"),
    (b'{"a": {"\\ud800": 1}}', JSON, "body", "a field is not valid Unicode (a lone surrogate)"),
    (b'params=%7B%22a%22%3A1%2C%22a%22%3A2%7D', FORM, "params", "key 'a' appears twice"),
    (b'params=%7B%22a%22%3A%22%5Cud800%22%7D', FORM, "params", "a field is not valid Unicode (a lone surrogate)"),
])
def test_a_body_that_cannot_be_decoded_signed_or_stored_unambiguously_says_why(raw, ctype, field, problem):
    assert _refused(raw, ctype) == (field, problem)


def test_json_within_the_limits_decodes_as_written():
    forty = "1" + "0" * 39
    body = decode_body(f'{{"a": {forty}, "b": -{forty}, "c": 1.5, "d": -0.25, "e": ["x", {{"f": "\u00e9"}}]}}'.encode(), JSON)
    assert body.params == {"a": int(forty), "b": -int(forty), "c": 1.5, "d": -0.25, "e": ["x", {"f": "é"}]}
