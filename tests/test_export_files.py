"""Settlement export: golden files, byte-identical reruns, sums equal to the ledger, spreadsheet
safety, late events as prior-day adjustments, closed days, restatement, DST days, atomic writes."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from tests.test_reconcile_seed import TORONTO, at, post
from worker.ledger.outcome import Outcome
from worker.reports.csv_cells import NUMBER_COLUMNS
from worker.reports.export import ExportError, export_day
from worker.reports.files import read_rows
from worker.sqlfiles import q

UTC = timezone.utc
GOLDEN = Path(__file__).parent / "golden"
FALL_BACK = date(2026, 11, 1)  # 25 hours in Toronto
SPRING_FORWARD = date(2026, 3, 8)  # 23 hours
AFTER = datetime(2027, 1, 1, tzinfo=UTC)  # every day of these tests has closed by then


def p(conn, oid, amount, when, **kw):
    """Post with fixed authNum/transNum so the bytes never depend on test order."""
    kw.setdefault("authNum", f"AUTH{oid}")
    kw.setdefault("transNum", f"TR{oid}")
    result = post(conn, oid, amount, when, **kw)
    assert result.outcome is Outcome.POSTED, result
    return result


def seed_fall_back_day(conn: psycopg.Connection) -> None:
    """The 25-hour day: both 01:30s, both midnights, refunds, a void, USD, hostile text."""
    p(conn, "PC-LASTSEC-PREV", 111, at("2026-10-31 23:59:59"))  # previous day
    p(conn, "PC-MIDNIGHT", 1000, at("2026-11-01 00:00:00"), mch_order_no="0012345")
    p(conn, "PC-EDT-0130", 2000, datetime(2026, 11, 1, 5, 30, tzinfo=UTC))  # 01:30 EDT
    p(conn, "PC-EST-0130", 3000, datetime(2026, 11, 1, 6, 30, tzinfo=UTC))  # 01:30 EST, an hour later
    p(conn, "RP-PARTIAL", 750, at("2026-11-01 09:15:00"), pay_type="refund", original="PC-EDT-0130",
      mch_order_no="=HYPERLINK(\"http://evil\",\"click\")")
    p(conn, "RP-PARTIAL2", 250, at("2026-11-01 10:00:00"), pay_type="refund", original="PC-EDT-0130",
      mch_order_no="+1-555", authNum="@SUM(A1)", transNum="-2+3")
    p(conn, "RP-VOID", 3000, at("2026-11-01 11:00:00"), pay_type="void", original="PC-EST-0130")
    p(conn, "P-USD", 4999, at("2026-11-01 12:00:00"), currency="USD", channel="WX_APP")
    p(conn, "PC-LASTSEC", 1, at("2026-11-01 23:59:59"), channel="=cmd|'/c calc'!A0")
    p(conn, "PC-NEXTDAY", 222, at("2026-11-02 00:00:00"))  # next day


def export(conn, day, out, **kw):
    kw.setdefault("now", AFTER)
    return export_day(conn, day, TORONTO, out, **kw)


def test_golden_files_of_a_25_hour_day(conn: psycopg.Connection, tmp_path: Path) -> None:
    seed_fall_back_day(conn)
    export(conn, FALL_BACK - timedelta(days=1), tmp_path)  # the day before is closed first, as the clock does
    r = export(conn, FALL_BACK, tmp_path)
    assert r.status == "final" and r.day.hours == 25
    for key, name in (("settlement", "settlement-2026-11-01.csv"), ("summary", "summary-2026-11-01.csv"),
                      ("manifest", "manifest-2026-11-01.json")):
        got = r.files[key].read_bytes()
        if key == "manifest":  # the workbook's bytes are XlsxWriter's: its hash is checked by the manifest itself
            m = json.loads(got)
            m["files"]["settlement-2026-11-01.xlsx"].update(sha256="(xlsx)", bytes=0)
            m["previous_manifest"]["sha256"] = "(previous)"
            got = json.dumps(m, indent=2, sort_keys=True).encode() + b"\n"
        if os.environ.get("UPDATE_GOLDEN"):
            (GOLDEN / name).write_bytes(got)
        assert got == (GOLDEN / name).read_bytes(), f"{name} differs from tests/golden/{name}"
    rows = list(read_rows(r.files["settlement"]))
    ids = [row["pay_order_id"] for row in rows]
    assert "PC-LASTSEC-PREV" not in ids and "PC-NEXTDAY" not in ids
    assert ids[0] == "PC-MIDNIGHT" and ids[-1] == "PC-LASTSEC"
    times = {row["pay_order_id"]: (row["local_time"], row["utc_time"]) for row in rows}
    assert times["PC-EDT-0130"] == ("2026-11-01T01:30:00-04:00", "2026-11-01T05:30:00Z")
    assert times["PC-EST-0130"] == ("2026-11-01T01:30:00-05:00", "2026-11-01T06:30:00Z")
    assert times["PC-MIDNIGHT"] == ("2026-11-01T00:00:00-04:00", "2026-11-01T04:00:00Z")
    assert times["PC-LASTSEC"] == ("2026-11-01T23:59:59-05:00", "2026-11-02T04:59:59Z")


def test_23_hour_day_keeps_its_boundaries(conn: psycopg.Connection, tmp_path: Path) -> None:
    p(conn, "PC-A", 100, at("2026-03-07 23:59:59"))
    p(conn, "PC-B", 200, at("2026-03-08 00:00:00"))
    p(conn, "PC-C", 300, datetime(2026, 3, 8, 6, 59, 59, tzinfo=UTC))  # 01:59:59 EST
    p(conn, "PC-D", 400, datetime(2026, 3, 8, 7, 0, 0, tzinfo=UTC))  # 03:00:00 EDT
    p(conn, "PC-E", 500, at("2026-03-08 23:59:59"))
    p(conn, "PC-F", 600, at("2026-03-09 00:00:00"))
    export(conn, SPRING_FORWARD - timedelta(days=1), tmp_path)
    r = export(conn, SPRING_FORWARD, tmp_path)
    assert r.day.hours == 23
    rows = list(read_rows(r.files["settlement"]))
    assert [(x["pay_order_id"], x["local_time"]) for x in rows] == [
        ("PC-B", "2026-03-08T00:00:00-05:00"), ("PC-C", "2026-03-08T01:59:59-05:00"),
        ("PC-D", "2026-03-08T03:00:00-04:00"), ("PC-E", "2026-03-08T23:59:59-04:00")]
    assert r.manifest["hours"] == 23
    assert r.totals == {"CAD": {"count": 4, "gross_cents": 1400, "refunds_cents": 0, "net_cents": 1400}}


def test_two_exports_are_byte_identical(conn: psycopg.Connection, tmp_path: Path) -> None:
    seed_fall_back_day(conn)
    a = export(conn, FALL_BACK, tmp_path / "a")
    again = export(conn, FALL_BACK, tmp_path / "a")  # files there and intact: given back untouched
    b = export(conn, FALL_BACK, tmp_path / "b")  # another folder: regenerated from the ledger
    assert (a.status, again.status, b.status) == ("final", "unchanged", "restored")
    for key in ("settlement", "workbook", "summary", "manifest"):
        assert a.files[key].read_bytes() == b.files[key].read_bytes()
    # provisional exports of an open day are reproducible too, and record nothing
    p(conn, "PC-OPEN", 500, at("2026-11-05 10:00:00"))
    now = at("2026-11-05 12:00:00")
    c = export(conn, date(2026, 11, 5), tmp_path / "c", now=now)
    d = export(conn, date(2026, 11, 5), tmp_path / "d", now=now)
    assert c.status == d.status == "provisional"
    assert c.files["settlement"].read_bytes() == d.files["settlement"].read_bytes()
    assert conn.execute("SELECT count(*) FROM settlement_exports WHERE export_date = '2026-11-05'").fetchone() == (0,)
    assert [name for name in os.listdir(tmp_path / "a" / "2026-11-01") if name.startswith(".")] == []


def test_csv_sums_equal_the_ledger(conn: psycopg.Connection, tmp_path: Path) -> None:
    seed_fall_back_day(conn)
    export(conn, FALL_BACK - timedelta(days=1), tmp_path)
    r = export(conn, FALL_BACK, tmp_path)
    df = pd.read_csv(r.files["settlement"], dtype=str, keep_default_na=False)
    df["amount_cents"] = df["amount_cents"].astype("int64")
    # decimal strings agree with the cents, to the cent
    assert (df["amount"].str.replace(".", "", regex=False).astype("int64") == df["amount_cents"]).all()
    ledger = {row[0]: row for row in conn.execute(q("export_ledger_totals"), {"day": FALL_BACK}).fetchall()}
    summary = pd.read_csv(r.files["summary"], dtype=str, keep_default_na=False)
    for currency, entries, debits, credits in ledger.values():
        mine = df[df["currency"] == currency]
        gross = int(mine.loc[mine["direction"] == "in", "amount_cents"].sum())
        refunds = int(mine.loc[mine["direction"] == "out", "amount_cents"].sum())
        assert (len(mine), gross, refunds) == (entries, debits, credits)  # clearing Dr = pays, Cr = refunds
        total = summary[(summary["currency"] == currency) & (summary["section"] == "total")].iloc[0]
        assert (int(total["count"]), int(total["gross_cents"]), int(total["refunds_cents"]), int(total["net_cents"])) \
            == (entries, debits, credits, debits - credits)
    # and the whole day against the journal directly
    (net,) = conn.execute(
        "SELECT sum(CASE WHEN kind = 'pay' THEN amount ELSE -amount END) FROM journal_entries"
        " WHERE currency = 'CAD' AND occurred_at >= %s AND occurred_at < %s", (r.day.start, r.day.end)).fetchone()
    assert r.totals["CAD"]["net_cents"] == net == 1000 + 2000 + 3000 - 750 - 250 - 3000 + 1
    assert r.totals["USD"] == {"count": 1, "gross_cents": 4999, "refunds_cents": 0, "net_cents": 4999}


def test_no_cell_can_start_a_formula_and_ids_stay_text(conn: psycopg.Connection, tmp_path: Path) -> None:
    seed_fall_back_day(conn)
    r = export(conn, FALL_BACK, tmp_path)
    raw = r.files["settlement"].read_text(encoding="utf-8")
    with open(r.files["settlement"], newline="", encoding="utf-8") as fh:
        text_cells = [v for row in csv.DictReader(fh) for k, v in row.items() if k not in NUMBER_COLUMNS]
    assert text_cells and not [c for c in text_cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    # numbers are numbers: the signed amounts of money out are negative and never prefixed
    signed = {x["pay_order_id"]: (x["signed_amount_cents"], x["signed_amount"]) for x in read_rows(r.files["settlement"])}
    assert signed["RP-PARTIAL"] == ("-750", "-7.50") and signed["PC-MIDNIGHT"] == ("1000", "10.00")
    assert '"-7.50"' in raw and ",-750," in raw
    rows = {x["pay_order_id"]: x for x in read_rows(r.files["settlement"])}
    assert rows["RP-PARTIAL"]["mch_order_no"] == "'=HYPERLINK(\"http://evil\",\"click\")"
    assert rows["RP-PARTIAL2"]["mch_order_no"] == "'+1-555"
    assert rows["RP-PARTIAL2"]["auth_num"] == "'@SUM(A1)"
    assert rows["RP-PARTIAL2"]["trans_num"] == "'-2+3"
    assert rows["PC-LASTSEC"]["channel"] == "'=cmd|'/c calc'!A0"
    # ids are quoted text: leading zeros and long digit strings survive
    assert rows["PC-MIDNIGHT"]["mch_order_no"] == "0012345"
    assert '"0012345"' in raw and '"10000701"' in raw
    assert all(x["card_num"] == "432567******2266" for x in rows.values())


def test_late_events_become_prior_day_adjustments(conn: psycopg.Connection, tmp_path: Path) -> None:
    d1, d2, d3 = date(2026, 11, 20), date(2026, 11, 21), date(2026, 11, 22)
    p(conn, "PC-1", 1000, at("2026-11-20 10:00:00"))
    first = export(conn, d1, tmp_path)
    original = {k: v.read_bytes() for k, v in first.files.items()}
    # arrives after 2026-11-20 was closed, dated 23:59:59 that day
    p(conn, "PC-LATE", 500, at("2026-11-20 23:59:59"))
    p(conn, "RP-LATE", 200, at("2026-11-20 23:59:59"), pay_type="refund", original="PC-1")
    p(conn, "PC-2", 700, at("2026-11-21 00:00:00"))
    second = export(conn, d2, tmp_path)
    rows = list(read_rows(second.files["settlement"]))
    assert [(x["pay_order_id"], x["record"], x["business_date"], x["settlement_date"]) for x in rows] == [
        ("PC-2", "transaction", "2026-11-21", "2026-11-21"),
        ("PC-LATE", "prior_day_adjustment", "2026-11-20", "2026-11-21"),
        ("RP-LATE", "prior_day_adjustment", "2026-11-20", "2026-11-21")]
    assert second.manifest["rows"] == {"business_day": 1, "prior_day_adjustments": 2}
    assert second.manifest["prior_day_adjustment_dates"] == ["2026-11-20"]
    assert "prior_day_adjustment" in second.manifest["note"]
    sections = {(x["currency"], x["section"]): x for x in read_rows(second.files["summary"])}
    assert sections[("CAD", "prior_day_adjustments")]["net_cents"] == "300"
    assert sections[("CAD", "total")]["net_cents"] == "1000"
    # the closed day gives back its original files, even after they were deleted
    for f in first.files.values():
        f.unlink()
    again = export(conn, d1, tmp_path)
    assert again.status == "restored"
    assert {k: v.read_bytes() for k, v in again.files.items()} == original
    # another late one, then a restatement folds it into 2026-11-20 (version 2) and not into 2026-11-22
    p(conn, "PC-LATER", 300, at("2026-11-20 12:00:00"))
    restated = export(conn, d1, tmp_path, restate=True)
    assert restated.status == "restated" and restated.manifest["version"] == 2
    assert [x["pay_order_id"] for x in read_rows(restated.files["settlement"])] == ["PC-1", "PC-LATER"]
    third = export(conn, d3, tmp_path)
    assert third.manifest["rows"] == {"business_day": 0, "prior_day_adjustments": 0}
    # every entry is in exactly one file
    (n_entries,) = conn.execute("SELECT count(*) FROM journal_entries").fetchone()
    (n_exported, n_distinct) = conn.execute("SELECT count(*), count(DISTINCT entry_id) FROM filed_entries").fetchone()
    assert n_entries == n_exported == n_distinct == 5


def test_a_changed_closed_day_is_refused_and_nothing_is_half_written(conn: psycopg.Connection, tmp_path: Path) -> None:
    p(conn, "PC-1", 1000, at("2026-11-20 10:00:00"))
    first = export(conn, date(2026, 11, 20), tmp_path)
    keep = first.files["settlement"].read_bytes()
    first.files["manifest"].unlink()  # the files no longer prove themselves: regenerate and compare
    with conn.transaction():  # orders is the gateway's word, not append-only: say it changed
        conn.execute("UPDATE orders SET channel = 'UPI_EX' WHERE pay_order_id = 'PC-1'")
    with pytest.raises(ExportError, match="--restate"):
        export(conn, date(2026, 11, 20), tmp_path)
    assert first.files["settlement"].read_bytes() == keep
    assert sorted(os.listdir(first.folder)) == ["settlement-2026-11-20.csv", "settlement-2026-11-20.xlsx",
                                                "summary-2026-11-20.csv"]
    restated = export(conn, date(2026, 11, 20), tmp_path, restate=True)
    assert [x["channel"] for x in read_rows(restated.files["settlement"])] == ["UPI_EX"]
    assert json.loads(restated.files["manifest"].read_text())["version"] == 2
    for name, meta in restated.manifest["files"].items():
        assert hashlib.sha256((restated.folder / name).read_bytes()).hexdigest() == meta["sha256"]


def test_restating_an_open_day_is_refused(conn: psycopg.Connection, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not ended"):
        export(conn, date(2026, 11, 20), tmp_path, restate=True, now=at("2026-11-20 23:00:00"))
    assert export(conn, date(2026, 11, 20), tmp_path, now=at("2026-11-21 00:00:00") + timedelta(0)).status == "final"


def test_files_that_would_not_add_up_to_the_ledger_are_never_written(conn: psycopg.Connection, tmp_path: Path,
                                                                      monkeypatch) -> None:
    from worker.reports import export as export_module

    seed_fall_back_day(conn)
    real = export_module._write_files

    def off_by_a_cent(*args, **kwargs):
        manifest, files = real(*args, **kwargs)
        manifest["totals"]["CAD"]["gross_cents"] += 1
        return manifest, files

    monkeypatch.setattr(export_module, "_write_files", off_by_a_cent)
    with pytest.raises(ExportError, match="do not add up"):
        export(conn, FALL_BACK, tmp_path)
    assert not (tmp_path / str(FALL_BACK)).exists() or os.listdir(tmp_path / str(FALL_BACK)) == []
    assert conn.execute("SELECT count(*) FROM settlement_exports").fetchone() == (0,)


@pytest.mark.timeout(120)  # before the COPY was cancelled on an error, the rollback waited for ever
def test_an_error_while_the_rows_stream_cancels_the_copy_and_writes_nothing(conn: psycopg.Connection, tmp_path: Path,
                                                                             monkeypatch) -> None:
    from worker.reports import rows as rows_module
    from worker.reports.workbook import SettlementWorkbook

    seed_fall_back_day(conn)
    monkeypatch.setattr(rows_module, "CHUNK_ROWS", 2)  # several chunks: the error comes with the COPY half read

    def disk_full(self, records):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SettlementWorkbook, "add", disk_full)
    with pytest.raises(OSError, match="No space"):
        export(conn, FALL_BACK, tmp_path)
    assert not (tmp_path / str(FALL_BACK)).exists() or os.listdir(tmp_path / str(FALL_BACK)) == []
    assert conn.execute("SELECT count(*) FROM filed_entries").fetchone() == (0,)  # the connection still works
    monkeypatch.undo()
    monkeypatch.setattr(rows_module, "CHUNK_ROWS", 2)
    assert export(conn, FALL_BACK, tmp_path).manifest["rows"] == {"business_day": 8, "prior_day_adjustments": 1}
