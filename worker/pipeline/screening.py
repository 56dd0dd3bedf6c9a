"""Screening a notify body at the door: is it ours to keep?

The ingress keeps a body only when it decodes as JSON or form fields, names a configured
merchant and carries a `sign` that verifies under one of that merchant's keys, so that nobody
on the internet can fill the inbox. Field values are NOT validated here: a notify IOTPay
signed is the gateway's word even when a field is odd; the worker records why it cannot post
it (naming the field), and `iotledger replay` can take it again once the code is fixed.

Card numbers are stored masked only. A body carrying a full card number is stored with the
number masked and marked `pan_masked`; since the sign covered the full number, the worker
cannot verify that body again and relies on the check made here (`verified_at`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from worker.errors import PermanentError, SignatureError, UnknownMerchantError, ValidationError
from worker.iotpay import signature
from worker.iotpay.cards import mask_pan
from worker.iotpay.notify import Family, decode_body
from worker.merchants import Merchants

CARD_FIELD = "cardNum"


class Refusal(PermanentError):
    """A body the ingress will not keep: HTTP status, a short reason, and a metric label."""

    def __init__(self, status: int, reason: str, label: str) -> None:
        self.status = status
        self.reason = reason
        self.label = label
        super().__init__(reason)


@dataclass(frozen=True)
class Screened:
    """A body worth keeping, ready for the inbox."""

    family: Family
    is_json: bool
    mch_id: str
    pay_order_id: str | None
    body: bytes = field(repr=False)  # what the inbox stores (card number masked)
    body_sha256: bytes = field(repr=False)  # of the body as it arrived
    pan_masked: bool = False

    @property
    def ack(self) -> bytes:
        """The answer IOTPay expects: `SUCCESS` for a V3 (JSON) body, `success` for v1 form fields."""
        return b"SUCCESS" if self.is_json else b"success"


def _is_json(raw: bytes, content_type: str | None) -> bool:
    ctype = (content_type or "").split(";")[0].strip().lower()
    return ctype == "application/json" or (not ctype and raw.lstrip().startswith(b"{"))


def mask_body(raw: bytes, params: dict[str, Any], is_json: bool) -> tuple[bytes, bool]:
    """The body with a full card number masked, and whether anything was masked.

    The number is replaced where it stands, so the rest of the body stays byte for byte as it
    came; when it cannot be found verbatim (escaped in the body), the body is re-encoded.
    """
    card = params.get(CARD_FIELD)
    if isinstance(card, int) and not isinstance(card, bool):  # a JSON number is a card number too
        card = str(card)
    if not isinstance(card, str) or mask_pan(card) == card:
        return raw, False
    masked_params = dict(params, **{CARD_FIELD: mask_pan(card)})
    text = raw.decode("utf-8")
    if text.count(card) == 1:
        candidate = text.replace(card, masked_params[CARD_FIELD]).encode("utf-8")
        try:
            if decode_body(candidate, "application/json" if is_json else "application/x-www-form-urlencoded")[1] == masked_params:
                return candidate, True
        except ValidationError:
            pass
    if is_json:
        return json.dumps(masked_params, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), True
    return urlencode(masked_params).encode("utf-8"), True


def screen(raw: bytes, content_type: str | None, merchants: Merchants) -> Screened:
    """Decode, check merchant and sign, mask the card number.

    Raises Refusal (status 415 when the body is neither JSON nor form fields, 400 for a
    malformed body or a missing sign or mchId, 403 for an unknown merchant or a bad sign).
    """
    try:
        family, params = decode_body(raw, content_type)
    except ValidationError as exc:
        if exc.field == "body" and exc.problem.startswith("neither"):
            raise Refusal(415, "body: neither JSON nor form fields", "unsupported_body") from None
        raise Refusal(400, str(exc), "malformed_body") from None
    mch_id = params.get("mchId")
    if mch_id is None or mch_id == "":
        raise Refusal(400, "mchId: missing", "missing_mch_id")
    if params.get(signature.SIGN_FIELD) in (None, ""):
        raise Refusal(400, "sign: missing", "missing_sign")
    try:
        merchant = merchants.require(str(mch_id))
        signature.verify(params, merchant.keys)
    except UnknownMerchantError:
        raise Refusal(403, "mchId: unknown merchant", "unknown_merchant") from None
    except SignatureError:
        raise Refusal(403, "sign: does not verify", "bad_signature") from None
    except ValidationError as exc:  # a sign of the wrong shape, or a value that cannot be signed
        if exc.field == signature.SIGN_FIELD:
            raise Refusal(403, str(exc), "bad_signature") from None
        raise Refusal(400, str(exc), "malformed_body") from None
    is_json = _is_json(raw, content_type)
    body, masked = mask_body(raw, params, is_json)
    order = params.get("payOrderId")
    return Screened(
        family=family,
        is_json=is_json,
        mch_id=str(mch_id),
        # the inbox lists rows by this text column; PostgreSQL refuses a NUL in a text (the body,
        # stored as bytes, keeps it, and the worker records why that notify cannot be posted)
        pay_order_id=str(order).replace("\x00", "\ufffd") if order not in (None, "") else None,
        body=body,
        body_sha256=hashlib.sha256(raw).digest(),
        pan_masked=masked,
    )
