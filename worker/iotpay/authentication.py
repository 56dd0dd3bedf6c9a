"""Authenticating a notify: it names a configured merchant and its `sign` verifies under one of that
merchant's keys. The ingress does it before keeping a body, the ledger's intake before posting one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.errors import ValidationError
from worker.iotpay import signature
from worker.merchants import Merchant, Merchants


def authenticate(params: Mapping[str, Any], merchants: Merchants) -> Merchant:
    """The merchant whose key signed params.

    Raises ValidationError("mchId" or "sign", "missing") when either is absent,
    UnknownMerchantError for an mchId that is not configured, ValidationError for a sign of the
    wrong shape (field "sign") or a value that cannot be signed (its field), and SignatureError
    when the sign matches none of the merchant's keys.
    """
    mch_id = params.get("mchId")
    if mch_id is None or mch_id == "":
        raise ValidationError("mchId", "missing")
    if params.get(signature.SIGN_FIELD) in (None, ""):
        raise ValidationError(signature.SIGN_FIELD, "missing")
    merchant = merchants.require(str(mch_id))
    signature.verify(params, merchant.keys)
    return merchant
