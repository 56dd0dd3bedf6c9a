"""The settlement CSVs' columns and cell rules: what a row holds and how each cell is written.

Spreadsheet safety: every text cell is quoted (ids stay text) and a text cell that would start
with = + - @ (or tab, CR) is prefixed with an apostrophe. Numbers are numbers:
`signed_amount_cents`/`signed_amount` are negative for money out and never prefixed. Money is
given twice, integer cents and the same as a decimal string; the summary's decimal columns are
accounting amounts ('(12.34)' for a negative net).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date
from typing import Any

import pandas as pd

from worker import money

COLUMNS = [
    "settlement_date", "business_date", "record", "local_time", "utc_time", "pay_succ_time_raw", "mch_id", "channel",
    "pay_type", "pay_order_id", "original_order_id", "mch_order_no", "currency", "direction", "amount_cents",
    "amount", "signed_amount_cents", "signed_amount", "card_type", "card_num", "auth_num", "trans_num", "entry_id",
]
MONEY_COLUMNS = ("amount", "signed_amount")  # decimal strings, each beside its `_cents` column
INTEGER_COLUMNS = ("amount_cents", "signed_amount_cents", "entry_id")
NUMBER_COLUMNS = ("amount_cents", "amount", "signed_amount_cents", "signed_amount", "entry_id")
SUMMARY_COLUMNS = [
    "settlement_date", "mch_id", "currency", "section", "count", "gross_cents", "refunds_cents", "net_cents", "gross",
    "refunds", "net",
]
SUMMARY_TEXT_COLUMNS = ("mch_id", "currency", "section")
SUMMARY_MONEY_COLUMNS = ("gross", "refunds", "net")  # accounting amounts, each beside its `_cents` column
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def defuse(column: pd.Series) -> pd.Series:
    """Prefix text cells that a spreadsheet would run as a formula with an apostrophe."""
    text = column.astype("object")
    mask = text.str.startswith(FORMULA_STARTS).fillna(False).astype(bool)
    if mask.any():
        text = text.where(~mask, "'" + text.astype(str))
    return text


def settlement_frame(rows: list[tuple], names: list[str]) -> pd.DataFrame:
    """The CSV's frame of raw rows: money as strings beside the cents, text cells defused."""
    df = pd.DataFrame.from_records(rows, columns=names)
    for col in INTEGER_COLUMNS:
        df[col] = df[col].astype("int64")
    for col in MONEY_COLUMNS:
        df[col] = money.decimal_series(df[f"{col}_cents"])
    for col in COLUMNS:
        if col not in NUMBER_COLUMNS:
            df[col] = defuse(df[col])
    return df[COLUMNS]


def workbook_rows(rows: list[tuple], names: list[str]) -> Iterator[list[Any]]:
    """The same rows for the workbook: raw values in COLUMNS order, money in cents."""
    index = {n: i for i, n in enumerate(names)}
    cents = {c: index[f"{c}_cents"] for c in MONEY_COLUMNS}
    order = [cents.get(c, index.get(c)) for c in COLUMNS]
    return ([row[i] for i in order] for row in rows)


def summary_frame(rows: list[dict[str, Any]], day: date) -> pd.DataFrame:
    """The summary CSV's frame: the totals rows of one day, accounting amounts beside the cents."""
    # totals stay Python integers (object columns): a sum never wraps as an int64 would
    df = pd.DataFrame([{"settlement_date": str(day), **r} for r in rows],
                      columns=SUMMARY_COLUMNS[:8], dtype=object)
    for name in SUMMARY_MONEY_COLUMNS:
        df[name] = df[f"{name}_cents"].map(money.accounting)
    for col in SUMMARY_TEXT_COLUMNS:
        df[col] = defuse(df[col])
    return df[SUMMARY_COLUMNS]


def csv_bytes(df: pd.DataFrame, header: bool) -> bytes:
    """A frame as CSV bytes: UTF-8, LF line ends, every text cell quoted, missing cells empty."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, header=header, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n", na_rep="")
    return buf.getvalue().encode("utf-8")
