"""The export's pure helpers, without a database: money as strings (money.py), formula defusing, the
CSV frame and the workbook's raw rows (csv_cells.py), file names of every version, a folder checked
against its manifest (files.py), and the changes a restatement lists (export.py). Quick, so that
they run first for each mutant of those modules."""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from worker.money import decimal_series
from worker.reports.csv_cells import COLUMNS, defuse, settlement_frame, workbook_rows
from worker.reports.export import _changes
from worker.reports.files import file_names, manifest_bytes, manifest_name, matches


# ---------------------------------------------------------------------------------------------- money
@pytest.mark.parametrize(("cents", "text"), [
    (0, "0.00"), (5, "0.05"), (-5, "-0.05"), (100, "1.00"), (-100, "-1.00"), (123456, "1234.56"), (-123456, "-1234.56"),
    (99, "0.99"), (-1, "-0.01"), (1_000_000_000, "10000000.00"), (-9_223_372_036_854_775_807, "-92233720368547758.07"),
])
def test_money_strings_are_exact_decimal_text(cents, text):
    assert decimal_series(pd.Series([cents])).tolist() == [text]


def test_money_strings_take_text_cents_and_keep_the_index():
    got = decimal_series(pd.Series(["7", "-250"], index=[3, 9]))
    assert got.tolist() == ["0.07", "-2.50"] and got.index.tolist() == [3, 9]


# ---------------------------------------------------------------------------------------------- defuse
def _plain(col: pd.Series) -> list:
    return [None if pd.isna(x) else x for x in col.tolist()]


def test_defuse_prefixes_every_formula_start_and_nothing_else():
    cells = ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "a=b", "1-2", "", None, "'=x"]
    assert _plain(defuse(pd.Series(cells))) == ["'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tx", "'\rx", "a=b", "1-2", "",
                                                 None, "'=x"]


def test_defuse_leaves_a_clean_column_as_it_was():
    col = pd.Series(["PC1", None, "x"])
    out = defuse(col)
    assert _plain(out) == ["PC1", None, "x"] and out.dtype == object


# ---------------------------------------------------------------------------------------------- frame and raw rows
NAMES = [c for c in COLUMNS if c not in ("amount", "signed_amount")] + ["extra"]


def _row(**over) -> tuple:
    base = {c: f"v-{c}" for c in NAMES}
    base.update(amount_cents=1999, signed_amount_cents=-1999, entry_id=41, mch_order_no="=HYPERLINK(1)",
                card_num="-12", extra="x")
    base.update(over)
    return tuple(base[c] for c in NAMES)


def test_the_frame_has_the_columns_in_order_money_as_text_and_text_defused():
    df = settlement_frame([_row(), _row(amount_cents="250", signed_amount_cents="250", entry_id="42", card_num=None)], NAMES)
    assert list(df.columns) == COLUMNS
    assert df["amount"].tolist() == ["19.99", "2.50"] and df["signed_amount"].tolist() == ["-19.99", "2.50"]
    assert df["amount_cents"].tolist() == [1999, 250] and df["signed_amount_cents"].tolist() == [-1999, 250]
    assert df["entry_id"].tolist() == [41, 42] and str(df["entry_id"].dtype) == "int64"
    assert str(df["amount_cents"].dtype) == "int64" and str(df["signed_amount_cents"].dtype) == "int64"
    assert df["mch_order_no"].tolist() == ["'=HYPERLINK(1)", "'=HYPERLINK(1)"]
    assert _plain(df["card_num"]) == ["'-12", None]
    assert df["pay_order_id"].tolist() == ["v-pay_order_id"] * 2
    assert df["signed_amount"].tolist()[0] == "-19.99"  # a number column is never prefixed


def test_the_raw_rows_are_in_column_order_with_money_in_cents():
    rows = list(workbook_rows([_row(), _row(entry_id=7)], NAMES))
    expected = [{"amount": 1999, "signed_amount": -1999, "amount_cents": 1999, "signed_amount_cents": -1999,
                 "entry_id": 41, "mch_order_no": "=HYPERLINK(1)", "card_num": "-12"}.get(c, f"v-{c}") for c in COLUMNS]
    assert rows[0] == expected
    assert rows[1][COLUMNS.index("entry_id")] == 7 and len(rows[1]) == len(COLUMNS)


# ---------------------------------------------------------------------------------------------- names
def test_file_names_of_each_version():
    day = date(2025, 6, 13)
    assert file_names(day) == {"settlement": "settlement-2025-06-13.csv", "workbook": "settlement-2025-06-13.xlsx",
                               "summary": "summary-2025-06-13.csv", "manifest": "manifest-2025-06-13.json"}
    assert file_names(day, 1, "final") == file_names(day)
    assert file_names(day, 2, "restated") == {
        "settlement": "settlement-2025-06-13.v2.csv", "workbook": "settlement-2025-06-13.v2.xlsx",
        "summary": "summary-2025-06-13.v2.csv", "manifest": "manifest-2025-06-13.v2.json"}
    assert file_names(day, 1, "provisional")["settlement"] == "settlement-2025-06-13.provisional.csv"
    assert file_names(day, 3, "provisional")["manifest"] == "manifest-2025-06-13.provisional.json"
    assert file_names(day, 3)["workbook"] == "settlement-2025-06-13.v3.xlsx"


def test_manifest_name_reads_date_version_and_status():
    assert manifest_name({"settlement_date": "2025-06-13", "version": 2, "status": "restated"}) == \
        "manifest-2025-06-13.v2.json"
    assert manifest_name({"settlement_date": "2025-06-14", "version": 1, "status": "provisional"}) == \
        "manifest-2025-06-14.provisional.json"


# ---------------------------------------------------------------------------------------------- matches
def _folder(tmp_path: Path) -> tuple[Path, dict]:
    files = {"settlement-2025-06-13.csv": b"a,b\n", "summary-2025-06-13.csv": b"c\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    manifest = {"settlement_date": "2025-06-13", "version": 1, "status": "final",
                "files": {n: {"sha256": hashlib.sha256(d).hexdigest()} for n, d in files.items()}}
    (tmp_path / "manifest-2025-06-13.json").write_bytes(manifest_bytes(manifest))
    return tmp_path, manifest


def test_a_folder_that_matches_its_manifest_has_no_problems(tmp_path):
    folder, manifest = _folder(tmp_path)
    assert matches(folder, manifest) == []


def test_every_difference_from_the_manifest_is_named(tmp_path):
    folder, manifest = _folder(tmp_path)
    (folder / "summary-2025-06-13.csv").write_bytes(b"c\nd\n")
    (folder / "settlement-2025-06-13.csv").unlink()
    (folder / "manifest-2025-06-13.json").write_bytes(manifest_bytes({**manifest, "version": 1, "x": 1}))
    assert matches(folder, manifest) == [
        "manifest-2025-06-13.json: differs from the manifest recorded in the database",
        "settlement-2025-06-13.csv: missing",
        "summary-2025-06-13.csv: SHA-256 differs from its manifest",
    ]
    (folder / "manifest-2025-06-13.json").unlink()
    assert matches(folder, manifest)[0] == "manifest-2025-06-13.json: missing"


def test_manifest_bytes_are_sorted_indented_utf8_with_a_final_newline():
    assert manifest_bytes({"b": "é", "a": [1]}) == '{\n  "a": [\n    1\n  ],\n  "b": "é"\n}\n'.encode()


# ---------------------------------------------------------------------------------------------- restatement changes
def test_changes_list_added_removed_and_changed_entries_in_numeric_order():
    old = {"2": {"entry_id": "2", "amount": "1.00", "x": "a"}, "10": {"entry_id": "10", "amount": "2.00"},
           "3": {"entry_id": "3", "amount": "3.00"}}
    new = {"2": {"entry_id": "2", "amount": "1.50", "x": "a"}, "10": {"entry_id": "10", "amount": "2.00", "y": "n"},
           "9": {"entry_id": "9"}, "11": {"entry_id": "11"}, "3": {"entry_id": "3", "amount": "3.00"}}
    assert _changes(old, new) == {"known": True, "added": ["9", "11"], "removed": [], "changed": ["2", "10"],
                                  "fields_changed": {"2": ["amount"], "10": ["y"]}}
    assert _changes(new, old) == {"known": True, "added": [], "removed": ["9", "11"], "changed": ["2", "10"],
                                  "fields_changed": {"2": ["amount"], "10": []}}
    assert _changes(old, old) == {"known": True, "added": [], "removed": [], "changed": [], "fields_changed": {}}


def test_changes_without_the_old_file_cannot_be_listed():
    assert _changes(None, {"1": {}}) == {"known": False,
                                         "note": "the superseded settlement file is missing: changes cannot be listed"}


# ---------------------------------------------------------------------------------------------- the workbook's rows
def _reference_workbook(path: Path, rows: list[list], day: date) -> None:
    """The settlement sheet as XlsxWriter writes it one cell at a time (what workbook.py rendered
    before its rows were rendered on Arrow columns)."""
    import xlsxwriter

    from worker.money import units

    book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False,
                                           "strings_to_formulas": False, "strings_to_urls": False})
    bold, money = book.add_format({"bold": True}), book.add_format({"num_format": "#,##0.00;-#,##0.00"})
    when = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    sheet = book.add_worksheet("settlement")
    for c, name in enumerate(COLUMNS):
        sheet.write_string(0, c, name, bold)
    for r, rec in enumerate(rows, start=1):
        for c, value in enumerate(rec):
            name = COLUMNS[c]
            if value is None or value == "":
                continue
            if name in ("amount", "signed_amount"):
                sheet.write_number(r, c, units(value), money)
            elif name in ("amount_cents", "signed_amount_cents", "entry_id"):
                sheet.write_number(r, c, int(value))
            elif name == "local_time":
                sheet.write_datetime(r, c, datetime.fromisoformat(str(value)[:19]), when)
            else:
                sheet.write_string(r, c, str(value))
    book.close()


HOSTILE = [" lead", "trail ", "a&b<c>d</t>", "x\x01y\x1fz", "_x0041_", "\u00a0nb", "=1+1", "\ttab", "", None,
           "<r>raw</r>", "\u2028", "é✓"]


def test_the_workbook_rows_hold_what_xlsxwriter_writes_cell_by_cell(tmp_path):
    import openpyxl
    import pyarrow as pa

    from worker.reports.csv_cells import VALUE_COLUMNS
    from worker.reports.workbook import SettlementWorkbook

    day = date(2026, 11, 1)
    n = len(HOSTILE)
    values = {c: [f"v-{c}-{i}" for i in range(n)] for c in VALUE_COLUMNS}
    values.update(mch_order_no=HOSTILE, auth_num=list(reversed(HOSTILE)), original_order_id=[None] * n,
                  local_time=[f"2026-11-01T{i:02d}:{(i * 7) % 60:02d}:07-04:00" for i in range(n)],
                  amount_cents=[i * 997 + 1 for i in range(n)], entry_id=[10**12 + i for i in range(n)],
                  signed_amount_cents=[-(i * 997 + 1) if i % 2 else i * 997 + 1 for i in range(n)])
    table = pa.table({c: values[c] for c in VALUE_COLUMNS})
    book = SettlementWorkbook(tmp_path / "new.xlsx", COLUMNS, day, n)
    book.add(table.slice(0, 5))
    book.add(table.slice(5))  # chunks continue the row numbers
    book.close([])
    records = list(workbook_rows(zip(*(table.column(c).to_pylist() for c in VALUE_COLUMNS)), VALUE_COLUMNS))
    _reference_workbook(tmp_path / "ref.xlsx", records, day)

    def cells(path: Path) -> list:
        sheet = openpyxl.load_workbook(path)["settlement"]
        return [[(c.value, c.data_type, c.number_format) for c in row] for row in sheet.iter_rows()]

    got, want = cells(tmp_path / "new.xlsx"), cells(tmp_path / "ref.xlsx")
    # one difference, on purpose: XlsxWriter writes a text that looks like its own rich-text XML
    # ("<r>...</r>") into the file as XML (the cell comes back empty); here it is text like any other
    raw_xml = [(r, c) for r, row in enumerate(want) for c, cell in enumerate(row) if cell == ("", "s", "General")]
    assert [got[r][c][0] for r, c in raw_xml] == ["<r>raw</r>"] * 2
    for r, c in raw_xml:
        got[r][c] = want[r][c]
    assert len(got) == n + 1 and got == want
    assert [r[COLUMNS.index("mch_order_no")][0] for r in got[1:4]] == [" lead", "trail ", "a&b<c>d</t>"]
