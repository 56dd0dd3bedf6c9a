"""Signing values the shared vectors do not hold: booleans, floats, nested values, empty strings.

The expected sign of each case is computed here by hand, the way IOTPay's PHP SDK builds it
(`create_linkstring` over the ksort-ed array: `k=v` joined with `&`, values cast to PHP strings,
`&key=` appended, upper-case MD5), never by calling our `sign`. PHP string casts: true -> "1",
false and null -> "" (left out, as the shared README's rule 1 says), a float as PHP prints it
(`precision` = 14: 0.1 + 0.2 -> "0.3", 1e25 -> "1.0E+25"), an array as json_encode() prints it.
"""

from __future__ import annotations

import hashlib

import pytest

from worker.errors import SignatureError, ValidationError
from worker.iotpay.signature import is_valid, sign, signed, signing_string, verify

KEY = "K3y-for-php-cases"


def md5_upper(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest().upper()


# (params, the signing string IOTPay's PHP SDK builds from them, without "&key=...")
CASES = [
    ({"mchId": "1", "paid": True}, "mchId=1&paid=1"),
    ({"mchId": "1", "paid": False}, "mchId=1"),
    ({"mchId": "1", "note": None}, "mchId=1"),
    ({"mchId": "1", "note": ""}, "mchId=1"),
    ({"mchId": "1", "zero": 0, "zeroText": "0"}, "mchId=1&zero=0&zeroText=0"),
    ({"mchId": "1", "rate": 19.99}, "mchId=1&rate=19.99"),
    ({"mchId": "1", "rate": 0.1 + 0.2}, "mchId=1&rate=0.3"),
    ({"mchId": "1", "rate": 100.0}, "mchId=1&rate=100"),
    ({"mchId": "1", "rate": 19.0}, "mchId=1&rate=19"),
    ({"mchId": "1", "rate": 1.0}, "mchId=1&rate=1"),
    ({"mchId": "1", "rate": -1.0}, "mchId=1&rate=-1"),
    ({"mchId": "1", "rate": -2.5}, "mchId=1&rate=-2.5"),
    ({"mchId": "1", "rate": 1 / 3}, "mchId=1&rate=0.33333333333333"),
    ({"mchId": "1", "rate": 1e25}, "mchId=1&rate=1.0E+25"),
    ({"mchId": "1", "rate": 1e14}, "mchId=1&rate=1.0E+14"),
    ({"mchId": "1", "rate": 1e13}, "mchId=1&rate=10000000000000"),
    ({"mchId": "1", "rate": 0.0001}, "mchId=1&rate=0.0001"),
    ({"mchId": "1", "rate": 0.00001}, "mchId=1&rate=1.0E-5"),
    ({"mchId": "1", "rate": 0.0}, "mchId=1&rate=0"),
    ({"mchId": "1", "rate": -0.0}, "mchId=1&rate=-0"),
    ({"mchId": "1", "extra": {"type": "app", "appId": "wx1"}}, 'extra={"type":"app","appId":"wx1"}&mchId=1'),
    ({"mchId": "1", "extra": ["a", 2, True, None]}, 'extra=["a",2,true,null]&mchId=1'),
    ({"mchId": "1", "extra": {"url": "https://x.ca/n", "who": "Café"}},
     'extra={"url":"https:\\/\\/x.ca\\/n","who":"Caf\\u00e9"}&mchId=1'),
    ({"mchId": "1", "extra": {}}, "extra=[]&mchId=1"),  # json_decode($body, true) makes {} an empty array
    ({"mchId": "1", "extra": []}, "extra=[]&mchId=1"),
    ({"mchId": "1", "extra": {"0": "a", "1": "b"}}, 'extra=["a","b"]&mchId=1'),
    ({"mchId": "1", "extra": {"1": "a"}}, 'extra={"1":"a"}&mchId=1'),
    ({"mchId": "1", "extra": ["x", {}, {"0": 1}]}, 'extra=["x",[],[1]]&mchId=1'),
    ({"mchId": "1", "extra": {"a": {}, "b": {"0": "z"}}}, 'extra={"a":[],"b":["z"]}&mchId=1'),
    ({"mchId": "1", "extra": {"n": {"deep": [1.5, "x/y"]}}}, 'extra={"n":{"deep":[1.5,"x\\/y"]}}&mchId=1'),
    ({"b": "2", "a": "1", "sign": "IGNORED", "c": ""}, "a=1&b=2"),
]


@pytest.mark.parametrize(("params", "text"), CASES, ids=[c[1][:40] for c in CASES])
def test_sign_matches_the_php_sdk_computed_by_hand(params, text):
    assert signing_string(params, KEY) == f"{text}&key={KEY}"
    expected = md5_upper(f"{text}&key={KEY}")
    assert sign(params, KEY) == expected
    assert is_valid({**params, "sign": expected}, [KEY])


@pytest.mark.parametrize(("name", "value", "other"), [
    ("paid", True, False), ("rate", 19.99, 19.98), ("rate", 0.3, 0.31), ("extra", {"a": 1}, {"a": 2}),
    ("extra", ["x"], ["y"]), ("extra", {"a": [1]}, {"a": [1, 2]}), ("note", "x", ""),
])
def test_booleans_floats_and_nested_values_are_part_of_the_signed_text(name, value, other):
    params = {"mchId": "1", "amount": 100, name: value}
    good = sign(params, KEY)
    assert sign({**params, name: other}, KEY) != good
    assert not is_valid({**params, name: other, "sign": good}, [KEY])
    with pytest.raises(SignatureError):
        verify({**params, name: other, "sign": good}, [KEY])


def test_an_empty_value_and_a_missing_one_sign_the_same():
    assert sign({"mchId": "1", "note": ""}, KEY) == sign({"mchId": "1"}, KEY) == md5_upper(f"mchId=1&key={KEY}")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_float_cannot_be_signed(value):
    with pytest.raises(ValidationError) as exc:
        sign({"mchId": "1", "rate": value}, KEY)
    assert exc.value.field == "rate" and "finite" in exc.value.problem


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object()])
def test_a_value_of_another_type_cannot_be_signed(value):
    with pytest.raises(ValidationError) as exc:
        sign({"mchId": "1", "odd": value}, KEY)
    assert exc.value.field == "odd" and "cannot sign" in exc.value.problem


def test_an_empty_key_refuses_to_sign():
    with pytest.raises(ValueError, match="empty key"):
        sign({"mchId": "1"}, "")
    with pytest.raises(ValueError, match="empty key"):
        signed({"mchId": "1"}, "")


def test_the_key_is_appended_last_even_when_a_field_sorts_after_it():
    assert signing_string({"zzz": "1", "aaa": "2"}, KEY) == f"aaa=2&zzz=1&key={KEY}"
    assert sign({"zzz": "1", "aaa": "2"}, KEY) == md5_upper(f"aaa=2&zzz=1&key={KEY}")


GOOD = {"mchId": "1", "amount": 5}
GOOD_SIGN = md5_upper(f"amount=5&mchId=1&key={KEY}")


@pytest.mark.parametrize("given", [None, "", GOOD_SIGN[:31], GOOD_SIGN + "0", 12345, ["x"], b"x" * 32,
                                   GOOD_SIGN[:-1] + "é"], ids=["missing", "empty", "short", "long", "int", "list",
                                                               "bytes", "non-ascii"])
def test_is_valid_is_false_for_a_missing_short_or_non_string_sign(given):
    params = dict(GOOD) if given is None else {**GOOD, "sign": given}
    assert is_valid(params, [KEY]) is False


def test_is_valid_accepts_the_sign_in_either_case_and_only_under_a_configured_key():
    assert is_valid({**GOOD, "sign": GOOD_SIGN}, [KEY]) is True
    assert is_valid({**GOOD, "sign": GOOD_SIGN.lower()}, [KEY]) is True  # hex is case-insensitive: upper() first
    assert is_valid({**GOOD, "sign": GOOD_SIGN}, ["other", KEY]) is True  # rotation: any key
    assert is_valid({**GOOD, "sign": GOOD_SIGN}, [KEY, "other"]) is True  # ... in any position
    assert is_valid({**GOOD, "sign": GOOD_SIGN}, ["other"]) is False
    assert is_valid({**GOOD, "sign": GOOD_SIGN}, []) is False
    signed_msg = signed(GOOD, KEY)
    assert signed_msg == {**GOOD, "sign": GOOD_SIGN}
    assert signed({**GOOD, "sign": "STALE"}, KEY)["sign"] == GOOD_SIGN  # an old sign is not signed over


@pytest.mark.parametrize(("given", "problem"), [(None, "missing"), ("", "missing"), ("abc", "must be"),
                                                 (123, "must be")])
def test_verify_names_the_sign_field(given, problem):
    params = dict(GOOD) if given is None else {**GOOD, "sign": given}
    with pytest.raises(ValidationError) as exc:
        verify(params, [KEY])
    assert exc.value.field == "sign" and problem in exc.value.problem


def test_verify_passes_silently_only_for_a_good_sign():
    assert verify({**GOOD, "sign": GOOD_SIGN}, [KEY]) is None
    with pytest.raises(SignatureError, match="does not match"):
        verify({**GOOD, "sign": "0" * 32}, [KEY])
