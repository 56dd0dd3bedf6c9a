"""Money for people and programs: integer cents, and the same as a decimal string, side by side.

No float ever touches an amount: 123456 -> "1234.56", -5 -> "-0.05". The one exception is a
spreadsheet cell, which holds a double: `units` gives it, for the workbook only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


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
    """Integer cents (or their text) -> '1234.56' / '-0.05' strings, vectorised, no float on the way
    (the index is kept)."""
    import pandas as pd
    import pyarrow as pa

    cents = cents.astype("int64")
    return pd.Series(decimal_cells(pa.array(cents.to_numpy())).to_pylist(), index=cents.index, dtype="object")


def decimal_cells(cents: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """An Arrow column of integer cents -> '1234.56' / '-0.05' strings, a column at a time, no float on
    the way. Raises pyarrow.ArrowInvalid for the one int64 without a magnitude (-2**63)."""
    import pyarrow as pa  # the ingress imports this module too, and never needs Arrow
    import pyarrow.compute as pc

    magnitude = pc.abs_checked(cents)
    whole = pc.divide(magnitude, 100)  # integer division: magnitudes are never negative
    frac = pc.subtract(magnitude, pc.multiply(whole, 100))
    text = pc.binary_join_element_wise(pc.cast(whole, pa.string()), pc.utf8_lpad(pc.cast(frac, pa.string()), 2, "0"),
                                       ".")
    return pc.if_else(pc.less(cents, 0), pc.binary_join_element_wise("-", text, ""), text)


def units(cents: int) -> float:
    """Integer cents as a number of currency units, for a spreadsheet cell (a double) and nothing else."""
    return int(cents) / 100


def fields(name: str, cents: int | None) -> dict[str, Any]:
    """`{name}_cents` and `{name}` (decimal string) for one amount; both None when unknown."""
    if cents is None:
        return {f"{name}_cents": None, name: None}
    return {f"{name}_cents": int(cents), name: decimal(int(cents))}
