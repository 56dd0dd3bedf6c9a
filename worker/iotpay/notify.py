"""Validate a V3 JSON notify or a v1 notify (form fields, all strings) into one typed value.

The fields come decoded from worker/iotpay/body.py (a notify body), or from a gateway answer.
Every validation error names the field and the problem. Unknown fields are kept, since they
are part of the signed text; the raw body is kept too. A card number that arrives unmasked is
masked in the typed value and in `fields`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from worker.errors import ValidationError
from worker.iotpay.body import decode_body, detect_family
from worker.iotpay.cards import mask_pan
from worker.iotpay.channels import CURRENCIES, V3_CURRENCIES, Family

PAY_TYPES = frozenset({"pay", "refund", "void"})
KNOWN_FIELDS = frozenset(
    {
        "payOrderId", "mchId", "mchOrderNo", "originalOrderId", "amount", "currency", "payType",
        "refundable", "status", "invoiceNum", "paySuccTime", "cardNum", "cardType", "expiryDate",
        "authNum", "transNum", "channel", "channelId", "channelOrderNo", "sign",
    }
)
# The largest amount one order may carry, in cents (IOTLEDGER_MAX_AMOUNT_CENTS): $10,000,000.00.
# Far above any single card payment, far below where sums of many could leave a bigint.
DEFAULT_MAX_AMOUNT_CENTS = 1_000_000_000
STATUS_MAX = 2**31 - 1  # the gateway's status is an int
# a V3 time this far from now (either way) cannot be a real transaction time
MAX_TIME_SKEW_DAYS = 3660
_V3_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_INT = re.compile(r"^-?\d+$")


@dataclass(frozen=True)
class Notify:
    """One asynchronous notify (or query result) from IOTPay, validated."""

    family: Family
    mch_id: str
    pay_order_id: str
    mch_order_no: str | None
    original_order_id: str | None
    pay_type: str
    amount: int
    currency: str
    status: int
    refundable: int | None
    pay_succ_time: datetime | None
    channel: str | None
    card_type: str | None
    card_num: str | None
    auth_num: str | None
    trans_num: str | None
    invoice_num: str | None
    sign: str | None
    fields: dict[str, Any] = field(repr=False)  # every field as received (cardNum masked)
    raw: bytes = field(default=b"", repr=False)

    @property
    def extra(self) -> dict[str, Any]:
        """Fields this code does not know (kept, they are signed)."""
        return {k: v for k, v in self.fields.items() if k not in KNOWN_FIELDS}

    @property
    def is_refund(self) -> bool:
        """True for a refund or void (it carries an originalOrderId)."""
        return self.pay_type in ("refund", "void")


def _str(params: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ValidationError(name, "missing")
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ValidationError(name, f"must be a string, got {type(value).__name__}")
    return value


def _int(params: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise ValidationError(name, "missing")
        return None
    if isinstance(value, bool):
        raise ValidationError(name, f"must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        raise ValidationError(name, f"must be integer cents, got {value!r}")
    if isinstance(value, str) and _INT.match(value.strip()) and value.strip() == value:
        return int(value)
    raise ValidationError(name, f"must be an integer, got {value!r}")


def _money(params: dict[str, Any], name: str, *, required: bool, max_amount: int) -> int | None:
    value = _int(params, name, required=required)
    if value is not None and abs(value) > max_amount:
        raise ValidationError(name, f"{value} cents is beyond the largest amount accepted ({max_amount} cents, "
                                    "IOTLEDGER_MAX_AMOUNT_CENTS)")
    return value


def parse_pay_succ_time(value: Any, gateway_tz: ZoneInfo, *, now: datetime | None = None) -> datetime | None:
    """`YYYY-MM-DD HH:MM:SS` in the gateway's zone (V3) or epoch milliseconds (v1) -> aware UTC.

    Raises ValidationError("paySuccTime", ...) for a malformed value, or one more than
    MAX_TIME_SKEW_DAYS from now.
    """
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) or isinstance(value, str) and value.isascii() \
            and value.isdigit():  # ASCII only: str.isdigit() also accepts superscripts and other scripts' digits
        ms = int(value)
        if not 10**11 <= ms < 10**14:
            raise ValidationError("paySuccTime", f"epoch milliseconds out of range: {value!r}")
        when = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    elif isinstance(value, str) and _V3_TIME.match(value):
        try:
            local = datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
        except ValueError:
            raise ValidationError("paySuccTime", f"not a valid date and time: {value!r}") from None
        try:
            when = local.replace(tzinfo=gateway_tz).astimezone(timezone.utc)
        except (OverflowError, ValueError):
            raise ValidationError("paySuccTime", f"{value!r} is out of range") from None
    else:
        raise ValidationError("paySuccTime", f"expected 'YYYY-MM-DD HH:MM:SS' or epoch ms, got {value!r}")
    now = now or datetime.now(timezone.utc)
    if abs(when - now) > timedelta(days=MAX_TIME_SKEW_DAYS):
        raise ValidationError("paySuccTime", f"{value!r} is more than {MAX_TIME_SKEW_DAYS} days from now")
    return when


def parse_params(params: dict[str, Any], gateway_tz: ZoneInfo, *, raw: bytes = b"", family: Family | None = None,
                 max_amount: int = DEFAULT_MAX_AMOUNT_CENTS) -> Notify:
    """Validate a decoded notify. Raises ValidationError naming the field.

    A notify that names an originalOrderId is a refund or void and must say so in payType:
    with payType missing or `pay` it is refused (never booked as income).
    """
    if not isinstance(params, dict):
        raise ValidationError("body", "must be an object of fields")
    family = family or detect_family(params)
    fields = dict(params)
    card_num = _str(params, "cardNum", required=False)
    if card_num is not None:
        card_num = mask_pan(card_num)
        fields["cardNum"] = card_num
    stated_type = _str(params, "payType", required=False)
    pay_type = (stated_type or "pay").lower()
    if pay_type not in PAY_TYPES:
        raise ValidationError("payType", f"must be one of pay, refund, void; got {params.get('payType')!r}")
    currency = _str(params, "currency", required=True)
    if currency not in CURRENCIES:
        raise ValidationError("currency", f"unsupported currency {currency!r} (CAD or USD)")
    if family == "v3" and currency not in V3_CURRENCIES:
        raise ValidationError("currency", f"V3 orders are CAD only, got {currency!r}")
    original = _str(params, "originalOrderId", required=False)
    if pay_type in ("refund", "void") and original is None:
        raise ValidationError("originalOrderId", f"missing on a {pay_type}")
    if pay_type == "pay" and original is not None:
        # a refund or void names its original; without payType=refund/void we cannot tell which
        raise ValidationError("payType", f"{'missing' if stated_type is None else repr(stated_type)} on a notify "
                                         f"that names originalOrderId {original!r}: a refund or void must say "
                                         "payType=refund or payType=void; not booked")
    status = _int(params, "status", required=True)
    assert status is not None
    if not 0 <= status <= STATUS_MAX:
        raise ValidationError("status", f"out of range: {status}")
    amount = _money(params, "amount", required=True, max_amount=max_amount)
    assert amount is not None
    return Notify(
        family=family,
        mch_id=_str(params, "mchId", required=True) or "",
        pay_order_id=_str(params, "payOrderId", required=True) or "",
        mch_order_no=_str(params, "mchOrderNo", required=False),
        original_order_id=original,
        pay_type=pay_type,
        amount=amount,
        currency=currency,
        status=status,
        refundable=_money(params, "refundable", required=False, max_amount=max_amount),
        pay_succ_time=parse_pay_succ_time(params.get("paySuccTime"), gateway_tz),
        channel=_str(params, "channel", required=False) or _str(params, "channelId", required=False),
        card_type=_str(params, "cardType", required=False),
        card_num=card_num,
        auth_num=_str(params, "authNum", required=False),
        trans_num=_str(params, "transNum", required=False),
        invoice_num=_str(params, "invoiceNum", required=False),
        sign=_str(params, "sign", required=False),
        fields=fields,
        raw=raw,
    )


def parse_body(raw: bytes, content_type: str | None, gateway_tz: ZoneInfo, *,
               max_amount: int = DEFAULT_MAX_AMOUNT_CENTS) -> Notify:
    """Decode and validate an HTTP notify body. Raises ValidationError naming the field."""
    body = decode_body(raw, content_type)
    return parse_params(body.params, gateway_tz, raw=raw, family=body.family, max_amount=max_amount)
