"""Money for people and programs: integer cents, and the same as a decimal string, side by side.

No float ever touches an amount: 123456 -> "1234.56", -5 -> "-0.05".
"""

from __future__ import annotations

from typing import Any


def decimal(cents: int) -> str:
    """Integer cents as a decimal string with two places."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"{sign}{whole}.{frac:02d}"


def fields(name: str, cents: int | None) -> dict[str, Any]:
    """`{name}_cents` and `{name}` (decimal string) for one amount; both None when unknown."""
    if cents is None:
        return {f"{name}_cents": None, name: None}
    return {f"{name}_cents": int(cents), name: decimal(int(cents))}
