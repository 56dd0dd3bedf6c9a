"""The IOTPay sign against every line of the shared vectors, signed by IOTPay's own SDK."""

from __future__ import annotations

import pytest

from tests.factories import SHARED_VECTORS, VECTORS as VECTORS_FILE, vectors
from worker.errors import SignatureError, ValidationError
from worker.iotpay.signature import is_valid, sign, signed, signing_string, verify

VECTORS = vectors()


def _altered(payload: dict, name: str) -> dict:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        new = "x"
    elif isinstance(value, int):
        new = value + 1
    elif value == "":
        new = "1"
    else:
        new = value[:-1] + ("0" if value[-1] != "0" else "1")
    return {**payload, name: new}


@pytest.mark.skipif(not SHARED_VECTORS.exists(), reason="no ../shared beside this checkout")
def test_the_copy_of_the_vectors_is_the_shared_file():
    assert VECTORS_FILE.read_bytes() == SHARED_VECTORS.read_bytes()


def test_there_are_sixty_vectors_of_every_kind():
    kinds = {v["kind"] for v in VECTORS}
    assert len(VECTORS) == 60
    assert kinds == {"v3pay", "v3refund", "v3void", "v1notify", "cc_query", "cc_refund"}


@pytest.mark.parametrize("vec", VECTORS, ids=[f"{i}-{v['kind']}" for i, v in enumerate(VECTORS)])
def test_sign_reproduces_the_sdk(vec):
    assert sign(vec["payload"], vec["key"]) == vec["sign"]
    verify({**vec["payload"], "sign": vec["sign"]}, [vec["key"]])


@pytest.mark.parametrize("vec", VECTORS, ids=[f"{i}-{v['kind']}" for i, v in enumerate(VECTORS)])
def test_any_one_value_changed_is_rejected(vec):
    for name in vec["payload"]:
        altered = _altered(vec["payload"], name)
        if sign(altered, vec["key"]) == vec["sign"]:
            continue  # an empty value changed to another empty-like value is not signed either way
        with pytest.raises(SignatureError):
            verify({**altered, "sign": vec["sign"]}, [vec["key"]])


def test_empty_and_null_values_are_left_out_but_zero_is_not():
    assert signing_string({"b": "", "a": None, "c": 0, "d": "x"}, "K") == "c=0&d=x&key=K"


def test_values_are_not_url_encoded_or_trimmed():
    assert signing_string({"subject": " a&b=c é "}, "K") == "subject= a&b=c é &key=K"


def test_names_sort_in_byte_order_and_sign_is_excluded():
    assert signing_string({"b": 1, "B": 2, "a": 3, "sign": "X"}, "K") == "B=2&a=3&b=1&key=K"


def test_a_rotated_key_verifies_and_a_wrong_key_does_not():
    msg = signed({"mchId": "1", "amount": 5}, "old")
    assert is_valid(msg, ["new", "old"])
    assert not is_valid(msg, ["new"])
    with pytest.raises(SignatureError, match="sign"):
        verify(msg, ["new"])


def test_lower_case_sign_is_accepted_and_missing_sign_names_the_field():
    msg = signed({"mchId": "1"}, "K")
    assert is_valid({**msg, "sign": msg["sign"].lower()}, ["K"])
    with pytest.raises(ValidationError, match="^sign: missing"):
        verify({"mchId": "1"}, ["K"])
    with pytest.raises(ValidationError, match="^sign: must be"):
        verify({"mchId": "1", "sign": "abc"}, ["K"])
