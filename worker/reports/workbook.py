"""The settlement workbook (`settlement-D.xlsx`) beside the CSV, written with XlsxWriter.

A spreadsheet that opens the CSV destroys identifiers (a 19-digit mchOrderNo becomes
2.02611301234568e+18, `000123` becomes 123). In the workbook every identifier is a text cell,
money is a number with two decimals, local times are real date-times in the business day's
zone, the header row is frozen with filters, and a second sheet holds the totals per merchant
and currency (from the same query as the summary CSV). Text cells are stored as text, so no
formula defence is needed or applied here: the workbook carries the gateway's values as they are.

The bytes are reproducible: the document's creation time is the settlement date, and
XlsxWriter writes fixed timestamps into the zip.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import xlsxwriter

from worker import money
from worker.reports.csv_cells import INTEGER_COLUMNS, MONEY_COLUMNS, SUMMARY_COLUMNS, SUMMARY_MONEY_COLUMNS, \
    SUMMARY_TEXT_COLUMNS

# Excel holds 1,048,576 rows per sheet: a day beyond that gets the first MAX_ROWS rows in its
# workbook, and its manifest says the workbook is not complete
MAX_ROWS = 1_048_575
TIME_COLUMNS = ("local_time",)
# the summary CSV's columns but settlement_date (the sheet is the day's)
TOTAL_COLUMNS = tuple(c for c in SUMMARY_COLUMNS if c != "settlement_date")


class SettlementWorkbook:
    """Write rows as they stream, then the totals sheet; `close()` writes the file."""

    def __init__(self, path: Path, columns: list[str], day: date) -> None:
        self.path = path
        self.columns = columns
        self.rows = 0
        self.book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False,
                                                    "strings_to_formulas": False, "strings_to_urls": False})
        self.book.set_properties({"created": datetime(day.year, day.month, day.day),
                                  "title": f"IOTPay settlement {day}"})
        self.bold = self.book.add_format({"bold": True})
        self.money = self.book.add_format({"num_format": "#,##0.00;-#,##0.00"})
        self.when = self.book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.sheet = self.book.add_worksheet("settlement")
        self.sheet.freeze_panes(1, 0)
        for c, name in enumerate(columns):
            self.sheet.write_string(0, c, name, self.bold)
        self._money_idx = {columns.index(n) for n in MONEY_COLUMNS if n in columns}  # decimal strings in the CSV
        self._int_idx = {columns.index(n) for n in INTEGER_COLUMNS if n in columns}
        self._time_idx = {columns.index(n) for n in TIME_COLUMNS if n in columns}

    def add(self, records: Any) -> None:
        """Append rows whose values are in `columns` order: raw values (before any CSV cell rule),
        money columns in integer cents."""
        ws, r = self.sheet, self.rows
        for rec in records:
            r += 1
            for c, value in enumerate(rec):
                if value is None or value == "":
                    continue
                if c in self._money_idx:  # given in cents
                    ws.write_number(r, c, money.units(value), self.money)
                elif c in self._int_idx:
                    ws.write_number(r, c, int(value))
                elif c in self._time_idx:
                    ws.write_datetime(r, c, datetime.fromisoformat(str(value)[:19]), self.when)
                else:
                    ws.write_string(r, c, str(value))
        self.rows = r

    def close(self, totals: list[dict[str, Any]]) -> None:
        """Write the totals sheet (per merchant, currency and section) and the file."""
        last = len(self.columns) - 1
        self.sheet.autofilter(0, 0, max(self.rows, 1), last)
        sheet = self.book.add_worksheet("totals")
        sheet.freeze_panes(1, 0)
        for c, name in enumerate(TOTAL_COLUMNS):
            sheet.write_string(0, c, name, self.bold)
        for r, t in enumerate(totals, start=1):
            for c, name in enumerate(TOTAL_COLUMNS):
                if name in SUMMARY_TEXT_COLUMNS:
                    sheet.write_string(r, c, str(t[name]))
                elif name in SUMMARY_MONEY_COLUMNS:
                    sheet.write_number(r, c, money.units(t[f"{name}_cents"]), self.money)
                else:
                    sheet.write_number(r, c, int(t[name]))
        sheet.autofilter(0, 0, max(len(totals), 1), len(TOTAL_COLUMNS) - 1)
        self.book.close()
