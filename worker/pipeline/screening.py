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
from dataclasses import dataclass, field

from worker.errors import PermanentError, SignatureError, UnknownMerchantError, ValidationError
from worker.iotpay.authentication import authenticate
from worker.iotpay.body import decode_body
from worker.iotpay.channels import Family
from worker.iotpay.signature import SIGN_FIELD
from worker.merchants import Merchants


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
    ack: bytes  # the answer IOTPay expects: `SUCCESS` for a V3 (JSON) body, `success` for v1 form fields
    mch_id: str
    pay_order_id: str | None
    body: bytes = field(repr=False)  # what the inbox stores (card number masked)
    body_sha256: bytes = field(repr=False)  # of the body as it arrived
    pan_masked: bool = False


def screen(raw: bytes, content_type: str | None, merchants: Merchants) -> Screened:
    """Decode, authenticate (merchant and sign), mask the card number.

    Raises Refusal (status 415 when the body is neither JSON nor form fields, 400 for a
    malformed body or a missing sign or mchId, 403 for an unknown merchant or a bad sign).
    """
    try:
        body = decode_body(raw, content_type)
    except ValidationError as exc:
        if exc.field == "body" and exc.problem.startswith("neither"):
            raise Refusal(415, "body: neither JSON nor form fields", "unsupported_body") from None
        raise Refusal(400, str(exc), "malformed_body") from None
    try:
        merchant = authenticate(body.params, merchants)
    except UnknownMerchantError:
        raise Refusal(403, "mchId: unknown merchant", "unknown_merchant") from None
    except SignatureError:
        raise Refusal(403, "sign: does not verify", "bad_signature") from None
    except ValidationError as exc:
        if exc.problem == "missing" and exc.field in ("mchId", SIGN_FIELD):
            raise Refusal(400, str(exc), "missing_mch_id" if exc.field == "mchId" else "missing_sign") from None
        if exc.field == SIGN_FIELD:  # a sign of the wrong shape
            raise Refusal(403, str(exc), "bad_signature") from None
        raise Refusal(400, str(exc), "malformed_body") from None  # a value that cannot be signed
    kept = body.with_card_masked()
    order = body.params.get("payOrderId")
    return Screened(
        family=body.family,
        ack=body.ack,
        mch_id=merchant.mch_id,
        # the inbox lists rows by this text column; PostgreSQL refuses a NUL in a text (the body,
        # stored as bytes, keeps it, and the worker records why that notify cannot be posted)
        pay_order_id=str(order).replace("\x00", "\ufffd") if order not in (None, "") else None,
        body=kept.raw,
        body_sha256=hashlib.sha256(raw).digest(),
        pan_masked=kept.raw != raw,
    )
