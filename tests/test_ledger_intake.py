"""The ledger's one door (worker/ledger/intake.py): what it checks itself, and where it takes the
ingress's word (a masked card number, a key removed since)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
import structlog

from tests.factories import KEY, MCH, MERCHANTS, OLD_KEY, v3_pay
from worker.errors import SignatureError, UnknownMerchantError, ValidationError
from worker.iotpay.body import NotifyBody, decode_body
from worker.ledger.intake import verify
from worker.merchants import Merchant, Merchants

TZ = ZoneInfo("America/Vancouver")
VERIFIED = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
ROTATED = Merchants({MCH: Merchant(MCH, (KEY,), "")})  # OLD_KEY removed


def _body(params: dict) -> NotifyBody:
    return decode_body(json.dumps(params).encode(), "application/json")


def test_a_body_is_authenticated_then_validated():
    notify = verify(_body(v3_pay("PC1", 100)), MERCHANTS, TZ)
    assert (notify.pay_order_id, notify.amount, notify.family) == ("PC1", 100, "v3")
    with pytest.raises(SignatureError):
        verify(_body(dict(v3_pay("PC1", 100), amount=101)), MERCHANTS, TZ)
    with pytest.raises(ValidationError, match="^amount:"):
        verify(_body(v3_pay("PC1", "1.5")), MERCHANTS, TZ)


def test_the_bodys_family_is_the_one_validated():
    usd = v3_pay("PC2", 100, currency="USD")
    with pytest.raises(ValidationError, match="V3 orders are CAD only"):
        verify(_body(usd), MERCHANTS, TZ)
    assert verify(decode_body(json.dumps(usd).encode(), "application/json", family="v1"), MERCHANTS, TZ).currency == "USD"


def test_a_key_removed_since_the_ingress_verified_is_taken_on_its_word_with_a_warning():
    body = _body(v3_pay("PC3", 100, key=OLD_KEY))
    with pytest.raises(SignatureError):
        verify(body, ROTATED, TZ)  # nobody verified it before
    with structlog.testing.capture_logs() as logs:
        assert verify(body, ROTATED, TZ, verified_at=VERIFIED).pay_order_id == "PC3"
    assert [(e["event"], e["verified_at"]) for e in logs] == [
        ("intake.key_rotated_out", VERIFIED.isoformat())]


def test_a_masked_body_needs_the_ingress_check_and_a_merchant_still_configured():
    masked = _body(dict(v3_pay("PC4", 100), cardNum="411111******1111"))  # its sign covered the full number
    with pytest.raises(ValidationError, match="^sign: body was masked but never verified"):
        verify(masked, MERCHANTS, TZ, pan_masked=True)
    assert verify(masked, MERCHANTS, TZ, pan_masked=True, verified_at=VERIFIED).card_num == "411111******1111"
    with pytest.raises(UnknownMerchantError):
        verify(masked, Merchants({}), TZ, pan_masked=True, verified_at=VERIFIED)
