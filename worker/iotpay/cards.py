"""Card numbers are stored masked only: first six and last four digits at most."""

from __future__ import annotations

import re

_CARD_FIELD_RUN = re.compile(r"\d[\d -]{10,}\d")
_PAN_IN_TEXT = re.compile(r"(?<!\d)\d{13,19}(?!\d)")


def mask_pan(value: str) -> str:
    """Mask a cardNum value: any run of 12+ digits becomes BIN6 + '*' + last4.

    Values already masked (432567******2266, XXXXXXXXXXXX1166) come back unchanged.
    """

    def _mask(m: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", m.group(0))
        if len(digits) < 12:
            return m.group(0)
        return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]

    return _CARD_FIELD_RUN.sub(_mask, value)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def redact_pans(text: str) -> str:
    """Mask every 13-19 digit run in free text that passes the Luhn check (for log lines)."""
    return _PAN_IN_TEXT.sub(lambda m: mask_pan(m.group(0)) if _luhn_ok(m.group(0)) else m.group(0), text)
