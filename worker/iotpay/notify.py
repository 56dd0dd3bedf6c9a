"""Parse a V3 JSON notify or a v1 notify (form fields, all strings) into one typed value.

Every validation error names the field and the problem. Unknown fields are kept, since they
are part of the signed text; the raw body is kept too. A card number that arrives unmasked is
masked in the typed value and in `fields`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from worker.errors import ValidationError
from worker.iotpay.cards import mask_pan

Family = Literal["v3", "v1"]
PAY_TYPES = frozenset({"pay", "refund", "void"})
CURRENCIES = frozenset({"CAD", "USD"})
V3_CURRENCIES = frozenset({"CAD"})
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


def detect_family(params: dict[str, Any]) -> Family:
    """v1 notifies carry only strings (form fields); V3 carries JSON numbers."""
    values = [v for k, v in params.items() if k != "sign"]
    return "v1" if all(isinstance(v, str) for v in values) else "v3"


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


# A notify is flat; a little nesting is tolerated (signed as JSON text), thousands of brackets are not.
MAX_JSON_DEPTH = 32
# digits of a JSON integer: far beyond any amount, far below Python's int-parsing limit
MAX_INT_DIGITS = 40


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys are unique: a repeated key makes the signed text ambiguous."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValidationError("body", f"key {key[:40]!r} appears twice")
        out[key] = value
    return out


def _int_text(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValidationError("body", f"a number has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _float_text(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValidationError("body", "a number is out of range")
    return value


def _constant(name: str) -> float:
    raise ValidationError("body", f"{name} is not JSON")


def _check_text(value: str) -> None:
    # A NUL character is left alone here: it signs and stores as bytes; PostgreSQL refuses it in
    # a text, so the worker records that notify as failed, naming it (it was the gateway's word).
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("body", "a field is not valid Unicode (a lone surrogate)") from None


def _check_values(data: Any) -> None:
    """Depth at most MAX_JSON_DEPTH, every text storable and signable. Iterative: no recursion to exhaust."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValidationError("body", f"nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                stack.extend((v, depth + 1) for v in value.values())
            else:
                stack.extend((v, depth + 1) for v in value)


def load_json(text: str, field: str = "body") -> Any:
    """Strict JSON: no repeated key, no NaN or Infinity, no number out of range, no lone surrogate
    in a text (it cannot be signed or stored), at most MAX_JSON_DEPTH deep. Raises
    ValidationError(field, ...)."""
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_int=_int_text, parse_float=_float_text,
                          parse_constant=_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError(field, f"invalid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:  # the C parser recurses per bracket; thousands of them end here
        raise ValidationError(field, f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValidationError as exc:
        raise ValidationError(field, exc.problem) from None
    try:
        _check_values(data)
    except ValidationError as exc:
        raise ValidationError(field, exc.problem) from None
    return data


def decode_body(raw: bytes, content_type: str | None) -> tuple[Family, dict[str, Any]]:
    """Decode an HTTP notify body: JSON (V3) or form fields (v1, optionally `params=<json>`).

    Raises ValidationError("body", ...) when it is neither, and for JSON load_json refuses.
    """
    ctype = (content_type or "").split(";")[0].strip().lower()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("body", "not UTF-8 text") from None
    stripped = text.lstrip()
    if ctype == "application/json" or (not ctype and stripped.startswith("{")):
        data = load_json(text)
        if not isinstance(data, dict):
            raise ValidationError("body", "JSON body must be an object")
        return "v3", data  # IOTPay notifies V3 as JSON and v1 as form fields, whatever the values' types
    if ctype in ("application/x-www-form-urlencoded", "") and "=" in text:
        try:
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, encoding="utf-8", errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise ValidationError("body", "malformed form body") from None
        form = dict(pairs)
        if len(form) != len(pairs):
            raise ValidationError("body", "a form field appears twice")
        _check_values(form)
        if set(form) == {"params"}:  # v1 request style: params=<json>
            inner = load_json(form["params"], "params")
            if not isinstance(inner, dict):
                raise ValidationError("params", "must be a JSON object")
            return detect_family(inner), inner
        return "v1", form
    raise ValidationError("body", f"neither JSON nor form fields (Content-Type {content_type or 'missing'!r})")


def parse_body(raw: bytes, content_type: str | None, gateway_tz: ZoneInfo, *,
               max_amount: int = DEFAULT_MAX_AMOUNT_CENTS) -> Notify:
    """Decode and validate an HTTP notify body. Raises ValidationError naming the field."""
    family, params = decode_body(raw, content_type)
    return parse_params(params, gateway_tz, raw=raw, family=family, max_amount=max_amount)
