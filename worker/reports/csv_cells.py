"""The settlement CSVs' columns and cell rules: what a row holds and how each cell is written.

Spreadsheet safety: every text cell is quoted (ids stay text) and a text cell that would start
with = + - @ (or tab, CR) is prefixed with an apostrophe. Numbers are numbers:
`signed_amount_cents`/`signed_amount` are negative for money out and never prefixed. Money is
given twice, integer cents and the same as a decimal string; the summary's decimal columns are
accounting amounts ('(12.34)' for a negative net).

The settlement rows are formatted a column at a time on Arrow arrays and written by Arrow's CSV
writer: PostgreSQL's plain text of each value (export_rows) becomes the row's values
(`row_values`: the settlement date, the record, ISO times with their offset, the signed amount),
then the CSV's cells (`settlement_table`: decimal strings, defused text), then bytes
(`table_csv`). A million rows never become a million Python objects. Its quoting is the csv module's QUOTE_NONNUMERIC that the summary is written with:
every text cell quoted (an empty or missing one as ""), numbers bare, LF line ends, UTF-8, so
the bytes are the same as when pandas wrote the rows. The pandas helpers (`defuse`,
`settlement_frame`) are the same rules for a Series or a list of rows.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

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
_FORMULA_STARTS = pa.array(FORMULA_STARTS)
_WRITE = pacsv.WriteOptions(include_header=False, quoting_style="needed")  # strings quoted, numbers bare
_WRITE_HEADER = pacsv.WriteOptions(include_header=True, quoting_style="needed")


def defuse_cells(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Prefix text cells that a spreadsheet would run as a formula with an apostrophe (nulls stay null)."""
    mask = pc.is_in(pc.utf8_slice_codeunits(text, 0, 1), value_set=_FORMULA_STARTS)
    if not pc.any(mask).as_py():
        return text
    return pc.if_else(mask, pc.binary_join_element_wise("'", text, ""), text)


def defuse(column: pd.Series) -> pd.Series:
    """`defuse_cells` for a pandas Series of text (None stays missing); an object Series back."""
    text = column.astype("object")
    out = defuse_cells(pa.array(text, type=pa.string(), from_pandas=True))
    return pd.Series(out.to_pylist(), index=text.index, dtype="object")


def raw_types(names: list[str]) -> dict[str, pa.DataType]:
    """The Arrow type of each column of the raw rows (export_rows): the integer columns, text for the rest."""
    return {n: pa.int64() if n in INTEGER_COLUMNS else pa.string() for n in names}


VALUE_COLUMNS = [c for c in COLUMNS if c not in MONEY_COLUMNS]  # a row's values: money in cents only
PRIOR_DAY_ADJUSTMENT = "prior_day_adjustment"


def row_values(raw: pa.Table, day: date) -> pa.Table:
    """The values of the file's rows (VALUE_COLUMNS) from export_rows' raw rows, PostgreSQL's text
    for each value in an ISO session: `local_time` `2026-11-01 01:30:00-04` becomes
    `2026-11-01T01:30:00-04:00`, `utc_time` `2026-11-01 05:30:00` becomes `2026-11-01T05:30:00Z`
    (a fraction of a second, should one come, is dropped as to_char's HH24:MI:SS did), an entry of an earlier business
    day is a prior_day_adjustment, money out is negative in `signed_amount_cents`. Raises
    ValueError for a time PostgreSQL would not write in an ISO session."""
    n = raw.num_rows
    business = raw.column("business_date")
    amount = raw.column("amount_cents")
    local = _whole_seconds(raw.column("local_time"))
    width = pc.binary_length(local)
    if not pc.all(pc.is_in(width, value_set=pa.array([22, 25, 28], pa.int32()))).as_py():
        raise ValueError("local_time: not an ISO timestamp with a zone offset")
    local = pc.if_else(pc.equal(width, 22), pc.binary_join_element_wise(local, ":00", ""),  # -04 -> -04:00
                       pc.utf8_slice_codeunits(local, 0, 25))  # +05:53:28 (a zone's old local mean time) -> +05:53
    utc = _whole_seconds(raw.column("utc_time"))
    if not pc.all(pc.equal(pc.binary_length(utc), 19)).as_py():
        raise ValueError("utc_time: not an ISO timestamp")
    values = {
        "settlement_date": pa.repeat(pa.scalar(str(day)), n),
        "business_date": business,
        "record": pc.if_else(pc.less(business, str(day)), PRIOR_DAY_ADJUSTMENT, "transaction"),
        "local_time": pc.utf8_replace_slice(local, 10, 11, "T"),
        "utc_time": pc.binary_join_element_wise(pc.utf8_replace_slice(utc, 10, 11, "T"), "Z", ""),
        "signed_amount_cents": pc.if_else(pc.equal(raw.column("direction"), "in"), amount, pc.negate_checked(amount)),
    }
    return pa.table([values[c] if c in values else raw.column(c) for c in VALUE_COLUMNS], names=VALUE_COLUMNS)


def _whole_seconds(text: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if pc.any(pc.match_substring(text, ".")).as_py():
        return pc.replace_substring_regex(text, r"\.\d+", "")
    return text


def settlement_table(raw: pa.Table) -> pa.Table:
    """The CSV's cells of the rows' values (row_values): COLUMNS in order, money as decimal strings
    beside the cents, text cells defused, missing text cells null."""
    cells = []
    for col in COLUMNS:
        if col in MONEY_COLUMNS:
            cells.append(money.decimal_cells(raw.column(f"{col}_cents")))
        elif col in INTEGER_COLUMNS:
            cells.append(raw.column(col))
        else:
            cells.append(defuse_cells(raw.column(col)))
    return pa.table(cells, names=COLUMNS)


def settlement_frame(rows: list[tuple], names: list[str]) -> pd.DataFrame:
    """`settlement_table` for rows' values given as tuples (integers may come as text), as a DataFrame."""
    df = pd.DataFrame.from_records(rows, columns=names)
    types = raw_types(names)
    raw = pa.table({n: pa.array(df[n].astype("int64") if n in INTEGER_COLUMNS else df[n].astype("object"),
                                type=types[n], from_pandas=True) for n in names})
    return settlement_table(raw).to_pandas()


def table_csv(table: pa.Table, header: bool) -> pa.Buffer:
    """Settlement cells as CSV bytes: every text cell quoted (a missing one as ""), numbers bare, LF, UTF-8."""
    filled = pa.table([pc.fill_null(c, "") if pa.types.is_string(c.type) else c for c in table.columns],
                      names=table.column_names)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(filled, sink, _WRITE_HEADER if header else _WRITE)
    return sink.getvalue()


def workbook_rows(rows: Iterable[tuple], names: list[str]) -> Iterator[list[Any]]:
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
