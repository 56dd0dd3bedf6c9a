"""The README's tables of the settlement files' columns are what the files hold: names, order, kinds."""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path

import openpyxl

from tests.test_reconcile_seed import at, post
from tests.test_reconcile_seed import TORONTO
from worker.reports.csv_cells import COLUMNS, SUMMARY_COLUMNS
from worker.reports.export import export_day
from worker.reports.files import read_rows

README = Path(__file__).resolve().parents[1] / "README.md"
KIND = {
    "integer": re.compile(r"^-?\d+$"),
    "decimal": re.compile(r"^(-?\d+\.\d\d|\(\d+\.\d\d\))$"),
    "date": re.compile(r"^\d{4}-\d{2}-\d{2}$"),
    "time": re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}([+-]\d{2}:\d{2}|Z)$"),
    "text": re.compile(r"^(?!=|\+|-|@|\t|\r).*$", re.S),
}


def table_after(marker: str) -> list[tuple[str, str]]:
    """(column, kind) rows of the first Markdown table after a line starting with marker."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    rows, seen = [], False
    for line in lines[start + 1:]:
        if line.startswith("|"):
            seen = True
            cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
            if cells[0] not in ("column", "---"):
                rows.append((cells[0], cells[1]))
        elif seen:
            break
    return rows


def test_the_readme_column_tables_are_the_files(conn, tmp_path):
    post(conn, "PC-1", 123456, at("2026-11-20 10:00:00"), mch_order_no="000123")
    post(conn, "RP-1", 456, at("2026-11-20 11:00:00"), pay_type="refund", original="PC-1", mch_order_no="-R1")
    post(conn, "PC-USD", 999, at("2026-11-20 12:00:00"), currency="USD", channel="WX_APP")
    r = export_day(conn, date(2026, 11, 20), TORONTO, tmp_path, now=datetime(2027, 1, 1, tzinfo=timezone.utc))
    settlement = table_after("`settlement-D.csv` and the workbook's `settlement` sheet")
    summary = table_after("`summary-D.csv` and the workbook's `totals` sheet")
    assert [c for c, _ in settlement] == COLUMNS
    assert [c for c, _ in summary] == SUMMARY_COLUMNS
    for path, table in ((r.files["settlement"], settlement), (r.files["summary"], summary)):
        raw = path.read_text(encoding="utf-8")
        rows = list(read_rows(path))
        assert list(rows[0]) == [c for c, _ in table] and len(rows) >= 3
        for row in rows:
            for column, kind in table:
                value = row[column]
                if value == "" and kind == "text":
                    continue
                assert KIND[kind].match(value), (path.name, column, kind, value)
                if kind == "text" and value.isdigit():
                    assert f'"{value}"' in raw  # an id made of digits is a quoted text cell
    # the refund-heavy sign conventions the tables state
    by_id = {x["pay_order_id"]: x for x in read_rows(r.files["settlement"])}
    assert (by_id["RP-1"]["direction"], by_id["RP-1"]["amount_cents"], by_id["RP-1"]["signed_amount_cents"]) == \
        ("out", "456", "-456")
    assert by_id["RP-1"]["mch_order_no"] == "'-R1"  # text that would start a formula is prefixed
    # the workbook: same columns; identifiers text, integers and decimals numbers, local_time a date-time
    book = openpyxl.load_workbook(r.files["workbook"])
    sheet = book["settlement"]
    assert [c.value for c in sheet[1]] == COLUMNS
    for row in sheet.iter_rows(min_row=2):
        for (column, kind), cell in zip(settlement, row):
            if cell.value is None:
                continue
            if column == "local_time":
                assert isinstance(cell.value, datetime)
            elif kind in ("integer",):
                assert isinstance(cell.value, int) or float(cell.value).is_integer(), (column, cell.value)
            elif kind == "decimal":
                assert isinstance(cell.value, (int, float)), (column, cell.value)
            else:
                assert cell.data_type == "s", (column, cell.value)
    assert [c.value for c in book["totals"][1]] == SUMMARY_COLUMNS[1:]
