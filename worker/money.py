"""Money for people and programs: integer cents, and the same as a decimal string, side by side.

No float ever touches an amount: 123456 -> "1234.56", -5 -> "-0.05". The one exception is a
spreadsheet cell, which holds a double: `units` gives it, for the workbook only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def decimal(cents: int) -> str:
    """Integer cents as a decimal string with two places."""
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"{sign}{whole}.{frac:02d}"


def accounting(cents: int) -> str:
    """Integer cents as an accounting amount: 1234 -> '12.34', -1234 -> '(12.34)'."""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"({whole}.{frac:02d})" if cents < 0 else f"{whole}.{frac:02d}"


def decimal_series(cents: pd.Series) -> pd.Series:
    """Integer cents -> '1234.56' / '-0.05' strings, vectorised, no float on the way (the index is kept)."""
    cents = cents.astype("int64")
    magnitude = cents.abs()
    text = (magnitude // 100).astype(str) + "." + (magnitude % 100).astype(str).str.zfill(2)
    return text.where(cents >= 0, "-" + text)


def units(cents: int) -> float:
    """Integer cents as a number of currency units, for a spreadsheet cell (a double) and nothing else."""
    return int(cents) / 100


def fields(name: str, cents: int | None) -> dict[str, Any]:
    """`{name}_cents` and `{name}` (decimal string) for one amount; both None when unknown."""
    if cents is None:
        return {f"{name}_cents": None, name: None}
    return {f"{name}_cents": int(cents), name: decimal(int(cents))}
