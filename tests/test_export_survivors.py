"""Settlement export, the cases mutation testing found untested: cells starting with tab or CR, a day
whose net is negative (exact bytes), edited closed-day files and manifests, a prior-day section."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from tests.test_export_files import AFTER, export, p
from tests.test_reconcile_seed import at
from worker.money import decimal_series
from worker.reports.csv_cells import defuse
from worker.reports.files import read_rows

DAY = date(2026, 11, 20)


def test_defuse_prefixes_every_formula_start_and_nothing_else():
    cells = pd.Series(["=1+1", "+1", "-1", "@SUM(A1)", "\tcmd", "\r=1", "ok", "'=already", " =x", "", None])
    out = defuse(cells)
    assert out[:10].tolist() == [
        "'=1+1", "'+1", "'-1", "'@SUM(A1)", "'\tcmd", "'\r=1", "ok", "'=already", " =x", ""]
    assert pd.isna(out[10])  # written as an empty cell (na_rep)


def test_money_strings_are_exact_cents():
    assert decimal_series(pd.Series([0, 1, 10, 99, 100, 1999, 123456789])).tolist() == [
        "0.00", "0.01", "0.10", "0.99", "1.00", "19.99", "1234567.89"]


def test_cells_starting_with_tab_or_cr_are_defused_in_the_file(conn: psycopg.Connection, tmp_path: Path) -> None:
    p(conn, "PC-TAB", 100, at("2026-11-20 10:00:00"), mch_order_no="\t=HYPERLINK(1)", authNum="\r=2+3")
    r = export(conn, DAY, tmp_path)
    raw = r.files["settlement"].read_bytes()
    assert b'"\'\t=HYPERLINK(1)"' in raw and b'"\'\r=2+3"' in raw
    row = next(read_rows(r.files["settlement"]))
    assert row["mch_order_no"] == "'\t=HYPERLINK(1)" and row["auth_num"] == "'\r=2+3"


def seed_negative_day(conn: psycopg.Connection, out: Path) -> None:
    p(conn, "PC-OLD", 5000, at("2026-11-19 12:00:00"))  # the day before, closed in its own file
    export(conn, date(2026, 11, 19), out)
    p(conn, "RP-1", 3000, at("2026-11-20 09:00:00"), pay_type="refund", original="PC-OLD")
    p(conn, "RP-2", 1999, at("2026-11-20 10:00:00"), pay_type="refund", original="PC-OLD")
    p(conn, "PC-NEW", 250, at("2026-11-20 11:00:00"))


def test_a_refund_heavy_day_has_a_negative_net_written_exactly(conn: psycopg.Connection, tmp_path: Path) -> None:
    seed_negative_day(conn, tmp_path)
    r = export(conn, DAY, tmp_path)
    assert r.totals == {"CAD": {"count": 3, "gross_cents": 250, "refunds_cents": 4999, "net_cents": -4749}}
    assert r.files["summary"].read_bytes() == (
        b'"settlement_date","mch_id","currency","section","count","gross_cents","refunds_cents","net_cents","gross",'
        b'"refunds","net"\n'
        b'"2026-11-20","10000701","CAD","business_day",3,250,4999,-4749,"2.50","49.99","(47.49)"\n'
        b'"2026-11-20","10000701","CAD","total",3,250,4999,-4749,"2.50","49.99","(47.49)"\n')
    rows = list(read_rows(r.files["settlement"]))
    assert [(x["pay_order_id"], x["pay_type"], x["direction"], x["amount_cents"], x["amount"]) for x in rows] == [
        ("RP-1", "refund", "out", "3000", "30.00"), ("RP-2", "refund", "out", "1999", "19.99"),
        ("PC-NEW", "pay", "in", "250", "2.50")]
    assert [x["original_order_id"] for x in rows] == ["PC-OLD", "PC-OLD", ""]
    manifest = json.loads(r.files["manifest"].read_text())
    assert manifest["totals"] == r.totals and manifest["rows"] == {"business_day": 3, "prior_day_adjustments": 0}
    assert manifest["files"]["settlement-2026-11-20.csv"]["rows"] == 3
    assert manifest["files"]["summary-2026-11-20.csv"]["rows"] == 2
    for name, meta in manifest["files"].items():
        assert (r.folder / name).stat().st_size == meta["bytes"]


def test_a_prior_day_section_with_a_negative_net(conn: psycopg.Connection, tmp_path: Path) -> None:
    p(conn, "PC-1", 1000, at("2026-11-19 10:00:00"))
    export(conn, date(2026, 11, 19), tmp_path)
    p(conn, "RP-LATE", 400, at("2026-11-19 23:00:00"), pay_type="refund", original="PC-1")  # after the close
    p(conn, "PC-2", 100, at("2026-11-20 10:00:00"))
    r = export(conn, DAY, tmp_path)
    summary = r.files["summary"].read_text().splitlines()
    assert summary[1:] == [
        '"2026-11-20","10000701","CAD","business_day",1,100,0,100,"1.00","0.00","1.00"',
        '"2026-11-20","10000701","CAD","prior_day_adjustments",1,0,400,-400,"0.00","4.00","(4.00)"',
        '"2026-11-20","10000701","CAD","total",2,100,400,-300,"1.00","4.00","(3.00)"']
    assert r.totals["CAD"] == {"count": 2, "gross_cents": 100, "refunds_cents": 400, "net_cents": -300}
    assert r.manifest["rows"] == {"business_day": 1, "prior_day_adjustments": 1}
    assert r.manifest["prior_day_adjustment_dates"] == ["2026-11-19"]
    assert r.manifest["status"] == "final" and r.manifest["version"] == 1


@pytest.mark.parametrize("which", ["settlement", "summary", "manifest"])
def test_an_edited_closed_day_file_is_never_given_back_as_it_is(conn: psycopg.Connection, tmp_path: Path,
                                                                 which: str) -> None:
    seed_negative_day(conn, tmp_path)
    first = export(conn, DAY, tmp_path)
    original = {k: v.read_bytes() for k, v in first.files.items()}
    edit = {"settlement": (b'"19.99"', b'"1.99"'), "summary": (b'"49.99"', b'"0.00"'),
            "manifest": (b'"version": 1', b'"version": 1, "edited": true')}[which]
    edited = original[which].replace(*edit)
    assert edited != original[which]
    first.files[which].write_bytes(edited)
    again = export(conn, DAY, tmp_path)
    # the closed day is regenerated from the ledger and checked against the stored SHA-256s: the edit is gone,
    # and the export says it restored the files rather than giving them back as they were
    assert {k: v.read_bytes() for k, v in again.files.items()} == original
    assert again.status == "restored" and again.manifest == first.manifest


def test_files_left_intact_are_not_rewritten(conn: psycopg.Connection, tmp_path: Path) -> None:
    seed_negative_day(conn, tmp_path)
    first = export(conn, DAY, tmp_path)
    stamps = {k: v.stat().st_mtime_ns for k, v in first.files.items()}
    again = export(conn, DAY, tmp_path)
    assert again.status == "unchanged"
    assert {k: v.stat().st_mtime_ns for k, v in again.files.items()} == stamps


def test_an_open_day_is_provisional_and_records_nothing(conn: psycopg.Connection, tmp_path: Path) -> None:
    seed_negative_day(conn, tmp_path)
    r = export(conn, DAY, tmp_path, now=at("2026-11-20 23:59:59"))
    assert r.status == "provisional" and r.manifest["status"] == "provisional"
    assert r.totals["CAD"]["net_cents"] == -4749
    assert conn.execute("SELECT count(*) FROM settlement_exports WHERE export_date = %s", (DAY,)).fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM filed_entries WHERE export_date = %s", (DAY,)).fetchone() == (0,)
    final = export(conn, DAY, tmp_path, now=AFTER)
    assert final.status == "final" and final.manifest["status"] == "final"
    assert conn.execute("SELECT count(*) FROM filed_entries WHERE export_date = %s", (DAY,)).fetchone() == (3,)


def test_a_day_with_only_prior_day_adjustments_still_has_its_business_day_row(conn: psycopg.Connection,
                                                                            tmp_path: Path) -> None:
    p(conn, "PC-1", 1000, at("2026-11-19 10:00:00"))
    export(conn, date(2026, 11, 19), tmp_path)
    p(conn, "RP-LATE", 400, at("2026-11-19 23:00:00"), pay_type="refund", original="PC-1")  # after the close
    r = export(conn, DAY, tmp_path)
    assert r.files["summary"].read_text().splitlines()[1:] == [
        '"2026-11-20","10000701","CAD","business_day",0,0,0,0,"0.00","0.00","0.00"',
        '"2026-11-20","10000701","CAD","prior_day_adjustments",1,0,400,-400,"0.00","4.00","(4.00)"',
        '"2026-11-20","10000701","CAD","total",1,0,400,-400,"0.00","4.00","(4.00)"']
    assert r.manifest["rows"] == {"business_day": 0, "prior_day_adjustments": 1}
