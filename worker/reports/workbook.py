"""The settlement workbook (`settlement-D.xlsx`) beside the CSV.

A spreadsheet that opens the CSV destroys identifiers (a 19-digit mchOrderNo becomes
2.02611301234568e+18, `000123` becomes 123). In the workbook every identifier is a text cell,
money is a number with two decimals, local times are real date-times in the business day's
zone, the header row is frozen with filters, and a second sheet holds the totals per merchant
and currency (from the same query as the summary CSV). Text cells are stored as text, so no
formula defence is needed or applied here: the workbook carries the gateway's values as they are.

How it is written: XlsxWriter builds the workbook (styles and number formats, the frozen header,
the filter, the totals sheet, the document's properties) with the settlement sheet's header row
only. The sheet's data rows are rendered to SpreadsheetML a chunk at a time on Arrow columns
(`sheet_rows`): the cells XlsxWriter writes in its constant-memory mode (inline strings with its
escapes, numbers, date-times as serial numbers with a format), deflated straight into the file as
the rows stream. Rows never become Python objects: XlsxWriter writing 23 cells a row one call at
a time took 90 of the 100 seconds of a million-row export.

A day with more rows than IOTLEDGER_WORKBOOK_MAX_ROWS gets no workbook at all (export.py decides,
the manifest says so): its CSV is the file.

The bytes are reproducible: the document's creation time is the settlement date, and every zip
member carries XlsxWriter's fixed timestamp.
"""

from __future__ import annotations

import contextlib
import io
import re
import zipfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import xlsxwriter
from xlsxwriter.utility import xl_col_to_name

from worker import money
from worker.config import EXCEL_MAX_ROWS
from worker.reports.csv_cells import INTEGER_COLUMNS, MONEY_COLUMNS, SUMMARY_COLUMNS, SUMMARY_MONEY_COLUMNS, \
    SUMMARY_TEXT_COLUMNS

# Excel holds 1,048,576 rows per sheet: a day beyond that gets the first MAX_ROWS rows in its
# workbook, and its manifest says the workbook is not complete
MAX_ROWS = EXCEL_MAX_ROWS
TIME_COLUMNS = ("local_time",)
# the summary CSV's columns but settlement_date (the sheet is the day's)
TOTAL_COLUMNS = tuple(c for c in SUMMARY_COLUMNS if c != "settlement_date")
SHEET = "xl/worksheets/sheet1.xml"  # the settlement sheet, the first XlsxWriter adds
# zlib's fastest level for the rows (XlsxWriter's parts keep its own): the rows are most of the
# file's bytes and of its time; level 1 writes them about three times faster, 30 % larger
ROWS_COMPRESSLEVEL = 1
EXCEL_SERIAL_1970 = 25569.0  # the serial number of 1970-01-01 (Excel counts days from 1899-12-30)
SECONDS_PER_DAY = 86400.0

# what XlsxWriter's constant-memory writer does to a string cell, in this order
_XML_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))
_NEEDS_EXCEL_ESCAPE = r"[\x{00}-\x{08}\x{0b}-\x{1f}\x{fffe}\x{ffff}]|_x[0-9a-fA-F]{4}_"
_NEEDS_ANY_ESCAPE = _NEEDS_EXCEL_ESCAPE + "|[&<>]"
_PRESERVE = r"^[\s\x{0b}\x{85}\pZ]|[\s\x{0b}\x{85}\pZ]$"  # Python's \s: XlsxWriter adds xml:space="preserve"
_EXCEL_ESCAPED = re.compile("(_x[0-9a-fA-F]{4}_)")
_CONTROL = re.compile(r"([\x00-\x08\x0b-\x1f])")


def excel_escape(text: str) -> str:
    """A control character as Excel's _xHHHH_ (a literal _xHHHH_ protected as _x005F_xHHHH_),
    as XlsxWriter writes it."""
    text = _EXCEL_ESCAPED.sub(r"_x005F\1", text)
    text = _CONTROL.sub(lambda m: f"_x{ord(m.group(1)):04X}_", text)
    return text.replace("\ufffe", "_xFFFE_").replace("\uffff", "_xFFFF_")


class SettlementWorkbook:
    """Stream a day's rows into the workbook (`add`, a chunk at a time), then `close()` with the
    totals. `rows` is how many data rows the settlement sheet will hold (its dimension and
    filter); `add` takes no more than that."""

    def __init__(self, path: Path, columns: list[str], day: date, rows: int) -> None:
        self.path = path
        self.columns = columns
        self.day = day
        self.planned = rows
        self.rows = 0
        self._styles: dict[str, int] = {}
        parts = _members(self._template([]))
        names = list(parts)
        self._before = names[:names.index(SHEET)]
        self._parts = parts
        sheet = parts[SHEET][1]
        cut = sheet.index(b"</sheetData>")
        one_row = f'<dimension ref="A1:{xl_col_to_name(len(columns) - 1)}1"/>'.encode()
        if sheet.count(one_row) != 1:
            raise RuntimeError("XlsxWriter's settlement sheet has no dimension where it is expected")
        self._head = sheet[:cut].replace(one_row, f'<dimension ref="A1:{xl_col_to_name(len(columns) - 1)}'
                                                  f'{rows + 1}"/>'.encode())
        self._tail = sheet[cut:]
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True)
        try:
            for name in self._before:
                info, data = parts[name]
                self._zip.writestr(info, data)
            info = _copy_info(parts[SHEET][0])
            info._compresslevel = ROWS_COMPRESSLEVEL  # zipfile has no public way to set it per member
            self._sheet = self._zip.open(info, "w", force_zip64=rows > 100_000)
            self._sheet.write(self._head)
        except BaseException:
            self._zip.close()
            raise

    def add(self, raw: pa.Table) -> None:
        """Append raw rows (export_rows' columns, money in `_cents`) below those already added.
        Raises ValueError beyond the rows planned."""
        if self.rows + raw.num_rows > self.planned:
            raise ValueError(f"{self.rows + raw.num_rows} rows for a workbook planned with {self.planned}")
        self._sheet.write(sheet_rows(raw, self.columns, self.rows + 2, self._styles))
        self.rows += raw.num_rows

    def close(self, totals: list[dict[str, Any]]) -> None:
        """Write the totals sheet (per merchant, currency and section) and the rest of the file.
        Raises RuntimeError when XlsxWriter's parts would not be the ones the file began with."""
        try:
            self._sheet.write(self._tail)
            self._sheet.close()
            final = _members(self._template(totals))
            names = list(final)
            if names[:names.index(SHEET)] != self._before or any(
                    final[n][1] != self._parts[n][1] for n in (*self._before, SHEET)):
                raise RuntimeError("XlsxWriter's parts changed between the start and the end of the workbook")
            for name in names[names.index(SHEET) + 1:]:
                info, data = final[name]
                self._zip.writestr(info, data)
        finally:
            self._zip.close()

    def discard(self) -> None:
        """Close the file half written (the caller removes it); never raises."""
        with contextlib.suppress(Exception):
            self._sheet.close()
        with contextlib.suppress(Exception):
            self._zip.close()

    def _template(self, totals: list[dict[str, Any]]) -> bytes:
        """The workbook as XlsxWriter writes it with the settlement sheet's header only."""
        buf = io.BytesIO()
        book = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_numbers": False,
                                         "strings_to_formulas": False, "strings_to_urls": False})
        book.set_properties({"created": datetime(self.day.year, self.day.month, self.day.day),
                             "title": f"IOTPay settlement {self.day}"})
        bold = book.add_format({"bold": True})
        money_format = book.add_format({"num_format": "#,##0.00;-#,##0.00"})
        when = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        sheet = book.add_worksheet("settlement")
        sheet.freeze_panes(1, 0)
        for c, name in enumerate(self.columns):
            sheet.write_string(0, c, name, bold)
            if name in MONEY_COLUMNS:  # the column's format too: it registers the style the rows use
                sheet.set_column(c, c, None, money_format)
            elif name in TIME_COLUMNS:
                sheet.set_column(c, c, None, when)
        sheet.autofilter(0, 0, max(self.planned, 1), len(self.columns) - 1)
        totals_sheet = book.add_worksheet("totals")
        totals_sheet.freeze_panes(1, 0)
        for c, name in enumerate(TOTAL_COLUMNS):
            totals_sheet.write_string(0, c, name, bold)
        for r, t in enumerate(totals, start=1):
            for c, name in enumerate(TOTAL_COLUMNS):
                if name in SUMMARY_TEXT_COLUMNS:
                    totals_sheet.write_string(r, c, str(t[name]))
                elif name in SUMMARY_MONEY_COLUMNS:
                    totals_sheet.write_number(r, c, money.units(t[f"{name}_cents"]), money_format)
                else:
                    totals_sheet.write_number(r, c, int(t[name]))
        totals_sheet.autofilter(0, 0, max(len(totals), 1), len(TOTAL_COLUMNS) - 1)
        book.close()
        self._styles = {"money": money_format.xf_index, "time": when.xf_index}
        return buf.getvalue()


def _members(xlsx: bytes) -> dict[str, tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(xlsx)) as z:
        return {i.filename: (i, z.read(i)) for i in z.infolist()}


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    out = zipfile.ZipInfo(info.filename, info.date_time)
    out.compress_type = info.compress_type
    out.external_attr = info.external_attr
    out.create_system = info.create_system
    return out


def sheet_rows(raw: pa.Table, columns: list[str], first_row: int, styles: dict[str, int]) -> bytes:
    """SpreadsheetML `<row>` elements of raw rows (export_rows' columns), the first numbered
    `first_row`: the cells of `columns` in order, as XlsxWriter writes them in constant-memory
    mode. Empty and missing values get no cell."""
    n = raw.num_rows
    if n == 0:
        return b""
    numbers = pc.cast(pa.array(range(first_row, first_row + n), pa.int64()), pa.string())
    parts: list[Any] = ['<row r="', numbers, '">']
    for c, name in enumerate(columns):
        ref = f'<c r="{xl_col_to_name(c)}'
        if name in MONEY_COLUMNS:
            cell = [f'" s="{styles["money"]}"><v>', money.decimal_cells(raw.column(f"{name}_cents")), "</v></c>"]
        elif name in INTEGER_COLUMNS:
            cell = ['"><v>', pc.cast(raw.column(name), pa.string()), "</v></c>"]
        elif name in TIME_COLUMNS:
            cell = [f'" s="{styles["time"]}"><v>', _serial(raw.column(name)), "</v></c>"]
        else:
            text = _text(raw.column(name))
            space: Any = ""
            if pc.any(pc.not_equal(pc.utf8_trim_whitespace(text), text)).as_py():
                space = pc.if_else(pc.match_substring_regex(text, _PRESERVE), ' xml:space="preserve"', "")
            cell = ['" t="inlineStr"><is><t', space, ">", text, "</t></is></c>"]
        if pc.any(pc.is_null(cell[-2])).as_py():  # a cell only where there is a value
            parts.append(pc.binary_join_element_wise(ref, numbers, *cell, ""))
        else:
            parts.extend([ref, numbers, *cell])
    parts.append("</row>")
    rows = pc.binary_join_element_wise(*parts, "", null_handling="replace", null_replacement="")
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    # the rows' text lies end to end in the array's data buffer, between its first and last offsets
    offsets = pa.Array.from_buffers(pa.int32(), n + 1, [None, rows.buffers()[1]], offset=rows.offset)
    return rows.buffers()[2][offsets[0].as_py():offsets[n].as_py()].to_pybytes()


def _text(column: Any) -> Any:
    """A text column as XlsxWriter writes it: Excel's escapes, then XML's; empty is missing."""
    text = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
    if not pc.any(pc.match_substring_regex(text, _NEEDS_ANY_ESCAPE)).as_py():
        return text
    if pc.any(pc.match_substring_regex(text, _NEEDS_EXCEL_ESCAPE)).as_py():
        text = pa.array([None if v is None else excel_escape(v) for v in text.to_pylist()], pa.string())
    for plain, escaped in _XML_ESCAPES:
        text = pc.replace_substring(text, plain, escaped)
    return text


def _serial(local_time: Any) -> Any:
    """Local wall-clock times (text beginning `YYYY-MM-DDTHH:MI:SS`) as Excel serial numbers."""
    wall = pc.strptime(pc.utf8_slice_codeunits(local_time, 0, 19), format="%Y-%m-%dT%H:%M:%S", unit="s")
    seconds = pc.cast(pc.cast(wall, pa.int64()), pa.float64())
    return pc.cast(pc.add(pc.divide(seconds, SECONDS_PER_DAY), EXCEL_SERIAL_1970), pa.string())
