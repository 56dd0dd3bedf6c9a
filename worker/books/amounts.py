"""Amounts as documents write them -> integer cents, never through a float.

`decimal` text: an optional sign or parentheses for a negative, an optional `$`, digits with
optional thousands separators, and at most two decimals (`1,234.56`, `-0.05`, `(12.30)`, `$7`);
with `decimal_separator = ","` the roles of `.` and `,` swap (`1.234,56`), and a space may group
thousands. `cents` text: a whole number of cents (`123456`, `-5`).
"""

from __future__ import annotations

import re
from decimal import Decimal

_GROUPED = {".": re.compile(r"^(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?$"),
            ",": re.compile(r"^(\d{1,3}(?:[. ]\d{3})+|\d+)(?:,(\d{1,2}))?$")}
_CENTS = re.compile(r"^\d+$")
MAX_CENTS = 10**15  # far inside a bigint, as IOTLEDGER_MAX_AMOUNT_CENTS's limit


def parse_amount(text: str, *, unit: str = "decimal", decimal_separator: str = ".") -> int:
    """Parse one amount into integer cents. Raises ValueError saying why (the caller names line and column)."""
    raw = text.strip()
    body, negative = raw, False
    if body.startswith("(") and body.endswith(")"):
        body, negative = body[1:-1].strip(), True
    if body[:1] in "+-" and body:
        negative, body = negative ^ (body[0] == "-"), body[1:].strip()
    if body.startswith("$"):
        body = body[1:].strip()
    if unit == "cents":
        if not _CENTS.match(body):
            raise ValueError(f"{text!r} is not a whole number of cents")
        cents = int(body)
    else:
        m = _GROUPED[decimal_separator].match(body)
        if not m:
            raise ValueError(f"{text!r} is not an amount with at most two decimals")
        whole = re.sub(r"[,. ]", "", m.group(1))
        cents = int(whole) * 100 + int((m.group(2) or "").ljust(2, "0"))
    if cents > MAX_CENTS:
        raise ValueError(f"{text!r} is beyond {MAX_CENTS} cents")
    return -cents if negative else cents


def decimal_cents(value: Decimal) -> int:
    """An exact Decimal amount (OFX's TRNAMT) -> cents. Raises ValueError for a fraction of a cent."""
    cents = value * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"{value} has a fraction of a cent")
    if abs(cents) > MAX_CENTS:
        raise ValueError(f"{value} is beyond {MAX_CENTS} cents")
    return int(cents)
