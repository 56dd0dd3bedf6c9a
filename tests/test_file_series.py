"""Finance can trust the file series: no money outside it, restatements that keep history, alerts
that see new events, per-merchant totals, opt-in controls, and a workbook that keeps identifiers."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import openpyxl
import psycopg
import pytest

from tests.factories import MCH2
from tests.test_clock_jobs import clocks
from tests.test_reconcile_seed import MCH, TORONTO, at, expect, post
from worker.gateway.expected_refunds import ExpectedRefund, record_refund
from worker.ledger.outcome import Outcome
from worker.reports.alerts import AlertSink
from worker.reports.businessday import business_day, last_closed_day
from worker.clock import Clock
from worker.reports.export import export_day
from worker.reports.files import read_rows
from worker.reports.reconcile import reconcile
from worker.reports.verify import verify_files

UTC = timezone.utc
AFTER = datetime(2027, 1, 1, tzinfo=UTC)


def day(n: int) -> date:
    return date(2026, 11, n)


def noon(d: date) -> datetime:
    return at(f"{d} 12:00:00")


def export(conn, d, out, **kw):
    kw.setdefault("now", AFTER)
    return export_day(conn, d, TORONTO, out, **kw)


def filed(conn, pay_order_id: str) -> list[date]:
    """The days whose file holds this order's entries (one per entry: exactly one file)."""
    rows = conn.execute("SELECT x.export_date FROM filed_entries x JOIN journal_entries je ON je.id = x.entry_id "
                        "WHERE je.pay_order_id = %s", (pay_order_id,)).fetchall()
    conn.rollback()
    return [r[0] for r in rows]


def verify(conn, out, now=None):
    """files verify as the clock runs it right after closing the last exported day."""
    if now is None:
        (last,) = conn.execute("SELECT max(export_date) FROM settlement_exports").fetchone()
        conn.rollback()
        now = business_day(last, TORONTO).end + timedelta(minutes=30)
    return verify_files(conn, out, TORONTO, now=now)


class Hook:
    def __init__(self) -> None:
        self.bodies: list[dict] = []

    def sink(self, **kw) -> AlertSink:
        def handler(request: httpx.Request) -> httpx.Response:
            self.bodies.append(json.loads(request.content))
            return httpx.Response(200)

        return AlertSink("https://hooks.example.test/T", transport=httpx.MockTransport(handler),
                         sleep=lambda s: None, **kw)


# ------------------------------------------------------------------ the series

def test_clock_down_for_11_days_closes_every_day_in_order_and_verifies(db_url, conn, tmp_path):
    for n in range(1, 12):
        assert post(conn, f"PC-{n}", 100 * n, noon(day(n))).outcome is Outcome.POSTED
    [clock] = clocks(db_url, tmp_path, {}, n=1)
    outcomes = clock.nightly(at("2026-11-12 00:15:00"))
    assert list(outcomes) == [str(day(n)) for n in range(1, 12)] and set(outcomes.values()) == {"done"}
    report = verify(conn, tmp_path, now=at("2026-11-12 00:16:00"))
    assert report.ok, report.findings
    assert (report.closed_days, report.first_day, report.last_day) == (11, "2026-11-01", "2026-11-11")
    assert report.totals == [{"mch_id": MCH, "currency": "CAD", "files_net_cents": 6600, "files_net": "66.00",
                              "ledger_net_cents": 6600, "ledger_net": "66.00"}]
    for n in range(1, 12):
        assert filed(conn, f"PC-{n}") == [day(n)]
    # every manifest names the one before it: a chain
    links = [json.loads((tmp_path / str(day(n)) / f"manifest-{day(n)}.json").read_text())["previous_manifest"]
             for n in range(1, 12)]
    assert links[0] is None and [x["settlement_date"] for x in links[1:]] == [str(day(n)) for n in range(1, 11)]


def test_a_close_failing_six_nights_is_alerted_never_skipped_and_verified_until_it_closes(db_url, conn, tmp_path,
                                                                                          monkeypatch):
    for n in range(1, 9):
        post(conn, f"PC-{n}", 1000 + n, noon(day(n)))
    [clock] = clocks(db_url, tmp_path, {}, n=1)
    hook = Hook()
    clock.sink = hook.sink()
    assert clock.nightly(at("2026-11-02 00:15:00")) == {"2026-11-01": "done"}
    real = Clock.close_day
    failing = {day(2)}

    def flaky(self, d, now):
        if d in failing:
            raise OSError(28, "No space left on device")
        return real(self, d, now)

    monkeypatch.setattr(Clock, "close_day", flaky)
    for night in range(3, 9):  # six nights
        now = at(f"2026-11-{night:02d} 00:15:00")
        assert clock.nightly(now) == {"2026-11-02": "failed"}
        report = verify(conn, tmp_path, now=now + timedelta(hours=2))
        assert not report.ok and any("2026-11-02 ended but has no files" in f.detail for f in report.findings)
    with psycopg.connect(db_url) as c:
        attempts, status = c.execute("SELECT attempts, status FROM job_runs WHERE job = 'nightly' "
                                     "AND slot = '2026-11-02'").fetchone()
    assert (attempts, status) == (6, "failed")  # never given up
    close_alerts = [b for b in hook.bodies if b["kind"] == "close_failed"]
    assert len(close_alerts) == 6  # the first night, then once a day while it lasts
    assert "No space left on device" in close_alerts[0]["text"] and "2026-11-02" in close_alerts[0]["text"]
    failing.clear()
    outcomes = clock.nightly(at("2026-11-09 00:15:00"))
    assert list(outcomes) == [str(day(n)) for n in range(2, 9)] and set(outcomes.values()) == {"done"}
    report = verify(conn, tmp_path, now=at("2026-11-09 02:00:00"))
    assert report.ok, report.findings
    assert report.closed_days == 8


def test_the_minute_retry_waits_for_its_backoff(db_url, tmp_path, monkeypatch):
    [clock] = clocks(db_url, tmp_path, {}, n=1)
    monkeypatch.setattr(Clock, "close_day", lambda self, d, now: (_ for _ in ()).throw(OSError("disk full")))
    now = datetime.now(UTC)
    assert set(clock.nightly(now).values()) == {"failed"}
    assert set(clock.nightly(now, retry=True).values()) == {"waiting"}  # within a minute of the failure


def test_an_old_day_exported_late_while_a_late_entry_waits(conn, tmp_path):
    post(conn, "PC-A", 100, noon(day(10)))
    post(conn, "PC-B", 200, noon(day(11)))
    export(conn, day(10), tmp_path)
    export(conn, day(11), tmp_path)
    post(conn, "PC-LATE", 300, at("2026-11-10 23:00:00"))  # arrives after its day was closed
    export(conn, day(9), tmp_path)  # an old day exported by hand, late
    assert filed(conn, "PC-LATE") == []
    r = export(conn, day(12), tmp_path)
    assert [x["pay_order_id"] for x in read_rows(r.files["settlement"])] == ["PC-LATE"]
    assert filed(conn, "PC-LATE") == [day(12)]
    assert verify(conn, tmp_path).ok


def test_an_entry_dated_before_the_first_file_is_in_exactly_one_file(conn, tmp_path):
    post(conn, "PC-GOLIVE", 500, noon(day(20)))
    export(conn, day(20), tmp_path)
    export(conn, day(21), tmp_path)
    post(conn, "PC-BACKFILL", 700, noon(day(3)))  # a backfill from before go-live
    report = verify(conn, tmp_path)
    assert report.ok and report.entries_awaiting_next_file == 1
    r = export(conn, day(22), tmp_path)
    rows = list(read_rows(r.files["settlement"]))
    assert [(x["pay_order_id"], x["record"], x["business_date"]) for x in rows] == \
        [("PC-BACKFILL", "prior_day_adjustment", "2026-11-03")]
    assert filed(conn, "PC-BACKFILL") == [day(22)]
    report = verify(conn, tmp_path)
    assert report.ok and report.totals[0]["files_net_cents"] == 1200


def test_two_restates_keep_three_versions_and_list_their_changes(conn, tmp_path):
    post(conn, "PC-1", 1000, noon(day(20)))
    first = export(conn, day(20), tmp_path)
    v1 = {p.name: p.read_bytes() for p in first.folder.iterdir()}
    nothing = export(conn, day(20), tmp_path, restate=True)
    assert nothing.status == "no_change" and {p.name: p.read_bytes() for p in first.folder.iterdir()} == v1
    with conn.transaction():
        conn.execute("UPDATE orders SET card_num = '432567******9999' WHERE pay_order_id = 'PC-1'")
    second = export(conn, day(20), tmp_path, restate=True)
    post(conn, "PC-2", 250, at("2026-11-20 23:30:00"))  # a late entry of that day, in no file yet
    third = export(conn, day(20), tmp_path, restate=True)
    assert (second.status, third.status) == ("restated", "restated")
    assert sorted(p.name for p in first.folder.iterdir()) == sorted(
        [f"{kind}-2026-11-20{suffix}.{ext}" for suffix in ("", ".v2", ".v3")
         for kind, ext in (("settlement", "csv"), ("settlement", "xlsx"), ("summary", "csv"), ("manifest", "json"))])
    assert {n: b for n, b in ((p.name, p.read_bytes()) for p in first.folder.iterdir()) if n in v1} == v1
    m2 = json.loads((first.folder / "manifest-2026-11-20.v2.json").read_text())
    m3 = json.loads((first.folder / "manifest-2026-11-20.v3.json").read_text())
    assert m2["supersedes"]["version"] == 1 and m2["changes"]["changed"] == [str(filed_entry(conn, "PC-1"))]
    assert m2["changes"]["fields_changed"] == {str(filed_entry(conn, "PC-1")): ["card_num"]}
    v2_sha = hashlib.sha256((first.folder / "manifest-2026-11-20.v2.json").read_bytes()).hexdigest()
    assert m3["supersedes"] == {"version": 2, "name": "manifest-2026-11-20.v2.json", "sha256": v2_sha}
    assert (m3["changes"]["added"], m3["changes"]["removed"], m3["changes"]["changed"]) == \
        ([str(filed_entry(conn, "PC-2"))], [], [])
    assert m3["totals"]["CAD"]["net_cents"] == 1250
    with conn.transaction():
        versions = conn.execute("SELECT version, status FROM settlement_files ORDER BY version").fetchall()
    assert versions == [(1, "final"), (2, "restated"), (3, "restated")]
    assert verify(conn, tmp_path).ok


def filed_entry(conn, pay_order_id: str) -> int:
    (eid,) = conn.execute("SELECT id FROM journal_entries WHERE pay_order_id = %s", (pay_order_id,)).fetchone()
    conn.rollback()
    return eid


# ------------------------------------------------------------------ per merchant

def test_two_merchants_in_one_currency_have_their_own_totals_equal_to_check_date(db_url, redis_url, conn, tmp_path):
    post(conn, "PC-A1", 1000, noon(day(20)))
    post(conn, "PC-A2", 300, noon(day(20)))
    post(conn, "RP-A1", 100, noon(day(20)), pay_type="refund", original="PC-A1")
    post(conn, "PC-B1", 5000, noon(day(20)), mch_id=MCH2)
    r = export(conn, day(20), tmp_path)
    summary = [x for x in read_rows(r.files["summary"]) if x["section"] == "total"]
    assert [(x["mch_id"], x["currency"], x["count"], x["net_cents"]) for x in summary] == \
        [(MCH, "CAD", "3", "1200"), (MCH2, "CAD", "1", "5000")]
    assert r.manifest["totals_by_merchant"] == [
        {"mch_id": MCH, "currency": "CAD", "section": "total", "count": 3, "gross_cents": 1300, "refunds_cents": 100,
         "net_cents": 1200},
        {"mch_id": MCH2, "currency": "CAD", "section": "total", "count": 1, "gross_cents": 5000, "refunds_cents": 0,
         "net_cents": 5000}]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_SETTLEMENT_TZ="America/Toronto")
    out = subprocess.run([str(Path(sys.executable).parent / "iotledger"), "check", "--date", "2026-11-20", "--json"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    checked = {(m["mch_id"], m["currency"]): m["net_cents"] for m in json.loads(out.stdout)["day"]["merchants"]}
    assert checked == {(x["mch_id"], x["currency"]): int(x["net_cents"]) for x in summary}


def test_the_summary_alert_equals_the_summary_csv(db_url, conn, tmp_path):
    post(conn, "PC-A1", 1000, noon(day(20)))
    post(conn, "RP-A1", 250, noon(day(20)), pay_type="refund", original="PC-A1")
    post(conn, "PC-B1", 5000, noon(day(20)), mch_id=MCH2)
    [clock] = clocks(db_url, tmp_path, {}, n=1)
    hook = Hook()
    clock.sink = hook.sink()
    assert clock.nightly(at("2026-11-21 00:15:00")) == {"2026-11-20": "done"}
    (alert,) = [b for b in hook.bodies if b["kind"] == "daily_summary"]
    csv_rows = list(read_rows(tmp_path / "2026-11-20" / "summary-2026-11-20.csv"))
    ints = ("count", "gross_cents", "refunds_cents", "net_cents")
    assert alert["details"]["totals"] == [{**{k: x[k] for k in ("mch_id", "currency", "section")},
                                           **{k: int(x[k]) for k in ints}} for x in csv_rows]
    assert f"merchant {MCH} CAD: 2 transaction(s), gross 10.00, refunds 2.50, net 7.50." in alert["text"]
    assert f"merchant {MCH2} CAD: 1 transaction(s), gross 50.00, refunds 0.00, net 50.00." in alert["text"]


# ------------------------------------------------------------------ alerts see new events

def test_a_third_charge_and_a_second_conflict_are_new_alerts(conn):
    hook = Hook()
    sink = hook.sink()
    d = day(20)
    expect(conn, "MO-X", 1000, noon(d))
    post(conn, "PC-X1", 1000, noon(d), mch_order_no="MO-X")
    post(conn, "PC-X2", 1000, noon(d), mch_order_no="MO-X")
    post(conn, "PC-C", 700, noon(d))
    expect(conn, "MO-PC-C", 700, noon(d), pay_order_id="PC-C")
    assert post(conn, "PC-C", 800, noon(d)).outcome is Outcome.CONFLICT
    reconcile(conn, d, TORONTO, sink)
    sink.deliver_pending(conn)
    first = {b["dedup_key"] for b in hook.bodies}
    assert reconcile(conn, d, TORONTO, sink).new_alerts == 0  # the same facts again: nothing new
    post(conn, "PC-X3", 1000, noon(d), mch_order_no="MO-X")  # a third charge on the same merchant order
    assert post(conn, "PC-C", 900, noon(d)).outcome is Outcome.CONFLICT  # a second conflicting notify
    again = reconcile(conn, d, TORONTO, sink)
    sink.deliver_pending(conn)
    new = [b for b in hook.bodies if b["dedup_key"] not in first]
    assert sorted(b["details"]["class"] for b in new) == ["conflict", "duplicate_merchant_order"]
    dup = next(b for b in new if b["details"]["class"] == "duplicate_merchant_order")
    assert dup["details"]["pay_order_ids"] == ["PC-X1", "PC-X2", "PC-X3"]
    assert f"(merchant {MCH}, CAD 30.00)" in dup["text"]
    assert again.new_alerts == 2


def test_past_the_per_class_limit_one_summary_alert_replaces_the_rest(conn):
    hook = Hook()
    sink = hook.sink(per_class=3)
    for n in range(10):
        post(conn, f"PC-P{n}", 100, noon(day(20)), status=0)  # ten stuck_pending
    result = reconcile(conn, day(20), TORONTO, sink)
    assert result.counts == {"stuck_pending": 10}
    sink.deliver_pending(conn)
    kinds = sorted(b["kind"] for b in hook.bodies)
    assert kinds == ["mismatch"] * 3 + ["mismatch_summary"]
    summary = next(b for b in hook.bodies if b["kind"] == "mismatch_summary")
    assert summary["details"]["count"] == 7 and "iotledger reconcile --date 2026-11-20 --json" in summary["text"]
    assert reconcile(conn, day(20), TORONTO, sink).new_alerts == 0  # recorded: a re-run raises nothing


def test_reconcile_shows_the_days_totals_and_how_many_orders_matched(conn):
    expect(conn, "MO-PC-1", 1000, noon(day(20)), pay_order_id="PC-1")
    expect(conn, "MO-2", 400, noon(day(20)))
    post(conn, "PC-1", 1000, noon(day(20)))
    result = reconcile(conn, day(20), TORONTO)
    out = result.to_json()
    assert (out["expected_orders"], out["matched"]) == (2, 1)
    assert out["totals"] == [{"mch_id": MCH, "currency": "CAD", "entries": 1, "paid_cents": 1000, "paid": "10.00",
                              "refunded_cents": 0, "refunded": "0.00", "net_cents": 1000, "net": "10.00"}]


# ------------------------------------------------------------------ opt-in controls

def test_a_merchant_without_expected_orders_gets_no_unknown_to_merchant(conn):
    expect(conn, "MO-PC-A", 1000, noon(day(20)), pay_order_id="PC-A")
    post(conn, "PC-A", 1000, noon(day(20)))
    post(conn, "PC-UNREG", 2000, noon(day(20)))  # MCH records expected orders: this one is unknown
    post(conn, "PC-B", 3000, noon(day(20)), mch_id=MCH2)  # MCH2 never records any
    result = reconcile(conn, day(20), TORONTO)
    assert [(m.cls, m.subject) for m in result.mismatches] == [("unknown_to_merchant", "PC-UNREG")]
    assert result.to_json()["skipped"] == [{
        "class": "unknown_to_merchant", "mch_id": MCH2,
        "reason": "merchant has never recorded an expected order (iotledger expect / the expect_order actor)"}]


def test_an_unrequested_refund_is_flagged_for_a_merchant_who_records_refunds(conn):
    for mch in (MCH, MCH2):
        expect(conn, f"MO-{mch}", 10000, noon(day(20)), pay_order_id=f"PC-{mch}", mch_id=mch)
        post(conn, f"PC-{mch}", 10000, noon(day(20)), mch_id=mch)
    record_refund(conn, ExpectedRefund.from_dict({"mchId": MCH, "mchRefundNo": "RF-1", "originalOrderId": f"PC-{MCH}",
                                                  "amount": 1000, "requestedAt": noon(day(20)).isoformat()}))
    record_refund(conn, ExpectedRefund.from_dict({"mchId": MCH, "mchRefundNo": "RF-9", "originalOrderId": f"PC-{MCH}",
                                                  "amount": 500, "requestedAt": noon(day(20)).isoformat()}))
    post(conn, "RP-OK", 1000, noon(day(20)), pay_type="refund", original=f"PC-{MCH}", mch_order_no="RF-1")
    post(conn, "RP-INSIDER", 4000, noon(day(20)), pay_type="refund", original=f"PC-{MCH}", mch_order_no="RF-X")
    post(conn, "RP-OTHER", 300, noon(day(20)), pay_type="refund", original=f"PC-{MCH2}", mch_order_no="RF-Y",
         mch_id=MCH2)  # MCH2 does not record refunds: not compared
    result = reconcile(conn, day(20), TORONTO)
    assert sorted((m.cls, m.subject) for m in result.mismatches) == [
        ("refund_not_requested", "RP-INSIDER"), ("requested_refund_missing", f"{MCH}/RF-9")]
    insider = next(m for m in result.mismatches if m.cls == "refund_not_requested")
    assert (insider.ledger_amount, insider.details["original_order_id"]) == (4000, f"PC-{MCH}")
    assert {"class": "refund_not_requested", "mch_id": MCH2,
            "reason": "merchant has never recorded a requested refund (iotledger expect-refund / the expect_refund "
                      "actor)"} in result.to_json()["skipped"]


# ------------------------------------------------------------------ the CSV and the workbook as finance imports them

def test_the_workbook_keeps_identifiers_as_text_and_its_totals_equal_the_csv(conn, tmp_path):
    post(conn, "PC-ZERO", 1999, noon(day(20)), mch_order_no="000123")
    post(conn, "PC-LONG", 250000, noon(day(20)), mch_order_no="2026113012345678901")
    post(conn, "RP-LONG", 1, noon(day(20)), pay_type="refund", original="PC-LONG", mch_order_no="=1+1")
    post(conn, "PC-B", 700, noon(day(20)), mch_id=MCH2)
    r = export(conn, day(20), tmp_path)
    assert r.manifest["files"]["settlement-2026-11-20.xlsx"]["complete"] is True
    book = openpyxl.load_workbook(r.files["workbook"])
    sheet = book["settlement"]
    header = [c.value for c in sheet[1]]
    rows = [dict(zip(header, (c.value for c in row))) for row in sheet.iter_rows(min_row=2)]
    by_id = {x["pay_order_id"]: x for x in rows}
    assert by_id["PC-ZERO"]["mch_order_no"] == "000123"
    assert by_id["PC-LONG"]["mch_order_no"] == "2026113012345678901"
    assert by_id["RP-LONG"]["mch_order_no"] == "=1+1" and sheet.cell(4, header.index("mch_order_no") + 1).data_type == "s"
    assert by_id["PC-LONG"]["mch_id"] == MCH and isinstance(by_id["PC-LONG"]["mch_id"], str)
    assert by_id["PC-LONG"]["amount"] == 2500.00 and by_id["RP-LONG"]["signed_amount"] == -0.01
    assert sheet.cell(2, header.index("amount") + 1).number_format == "#,##0.00;-#,##0.00"
    local = by_id["PC-ZERO"]["local_time"]
    assert isinstance(local, datetime) and local == datetime(2026, 11, 20, 12, 0, 0)  # Toronto wall time
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref.startswith("A1:")
    totals_sheet = book["totals"]
    t_header = [c.value for c in totals_sheet[1]]
    totals = [dict(zip(t_header, (c.value for c in row))) for row in totals_sheet.iter_rows(min_row=2)]
    csv_totals = list(read_rows(r.files["summary"]))
    assert [(t["mch_id"], t["currency"], t["section"], t["count"], t["net_cents"]) for t in totals] == \
        [(x["mch_id"], x["currency"], x["section"], int(x["count"]), int(x["net_cents"])) for x in csv_totals]
    # the CSV: a signed net column sums to the net; the raw paySuccTime is kept
    csv_rows = list(read_rows(r.files["settlement"]))
    assert sum(int(x["signed_amount_cents"]) for x in csv_rows if x["mch_id"] == MCH) == 1999 + 250000 - 1
    assert {x["pay_order_id"]: x["pay_succ_time_raw"] for x in csv_rows}["PC-ZERO"] == "2026-11-20 09:00:00"


def test_a_workbook_given_fewer_rows_says_so_and_a_closed_day_keeps_its_count(conn, tmp_path):
    for i in range(3):
        post(conn, f"PC-{i}", 100 + i, noon(day(20)) + timedelta(minutes=i))
    r = export(conn, day(20), tmp_path, workbook_limit=2)
    assert r.manifest["files"]["settlement-2026-11-20.xlsx"] | {"sha256": "", "bytes": 0} == {
        "rows": 2, "complete": False, "sha256": "", "bytes": 0}
    sheet = openpyxl.load_workbook(r.files["workbook"])["settlement"]
    assert [row[9].value for row in sheet.iter_rows(min_row=2)] == ["PC-0", "PC-1"]  # pay_order_id
    assert [x["pay_order_id"] for x in read_rows(r.files["settlement"])] == ["PC-0", "PC-1", "PC-2"]
    original = {k: v.read_bytes() for k, v in r.files.items()}
    for f in r.files.values():
        f.unlink()
    again = export(conn, day(20), tmp_path)  # regenerated with the count it was closed with
    assert again.status == "restored" and {k: v.read_bytes() for k, v in again.files.items()} == original


def test_a_day_above_the_workbook_limit_has_no_workbook_and_verify_knows_it(conn, tmp_path):
    for i in range(3):
        post(conn, f"PC-{i}", 100 + i, noon(day(20)) + timedelta(minutes=i))
    post(conn, "PC-NEXT", 100, noon(day(21)))
    r = export(conn, day(20), tmp_path, workbook_max_rows=2)
    assert sorted(p.name for p in r.folder.iterdir()) == [
        "manifest-2026-11-20.json", "settlement-2026-11-20.csv", "summary-2026-11-20.csv"]
    assert sorted(r.files) == ["manifest", "settlement", "summary"]
    assert sorted(r.manifest["files"]) == ["settlement-2026-11-20.csv", "summary-2026-11-20.csv"]
    assert {k: v for k, v in r.manifest["workbook_omitted"].items() if k != "note"} == {
        "rows": 3, "workbook_max_rows": 2}
    assert "IOTLEDGER_WORKBOOK_MAX_ROWS" in r.manifest["workbook_omitted"]["note"]
    assert [x["pay_order_id"] for x in read_rows(r.files["settlement"])] == ["PC-0", "PC-1", "PC-2"]
    # a day at the limit has its workbook, complete
    r21 = export(conn, day(21), tmp_path, workbook_max_rows=1)
    assert r21.manifest["files"]["settlement-2026-11-21.xlsx"]["complete"] is True
    assert "workbook_omitted" not in r21.manifest
    assert verify(conn, tmp_path).ok
    # a closed day given back keeps what it was closed with, whatever the limit is now
    original = {k: v.read_bytes() for k, v in r.files.items()}
    r.files["settlement"].unlink()
    again = export(conn, day(20), tmp_path)
    assert again.status == "restored" and {k: v.read_bytes() for k, v in again.files.items()} == original
    assert not (r.folder / "settlement-2026-11-20.xlsx").exists()
    # a workbook put where the series has none is not part of it
    (r.folder / "settlement-2026-11-20.xlsx").write_bytes(b"PK forged")
    report = verify(conn, tmp_path)
    assert [(f.check, f.file) for f in report.findings] == [("file", "settlement-2026-11-20.xlsx")]
    assert "says the day has no workbook (3 rows, more than 2)" in report.findings[0].detail


def test_a_provisional_export_is_named_as_provisional(conn, tmp_path):
    post(conn, "PC-1", 1000, noon(day(20)))
    r = export(conn, day(20), tmp_path, now=at("2026-11-20 15:00:00"))
    assert r.status == "provisional"
    assert sorted(p.name for p in r.folder.iterdir()) == [
        "manifest-2026-11-20.provisional.json", "settlement-2026-11-20.provisional.csv",
        "settlement-2026-11-20.provisional.xlsx", "summary-2026-11-20.provisional.csv"]
    final = export(conn, day(20), tmp_path)
    assert final.status == "final" and final.files["settlement"].name == "settlement-2026-11-20.csv"


# ------------------------------------------------------------------ files verify finds what is wrong

@pytest.mark.slow
def test_files_verify_names_a_deleted_file_and_an_edited_row(db_url, redis_url, conn, tmp_path):
    yesterday = last_closed_day(datetime.now(UTC) - timedelta(hours=1), TORONTO)
    before = yesterday - timedelta(days=1)
    post(conn, "PC-1", 1000, noon(before))
    post(conn, "PC-2", 2000, noon(before))
    export(conn, before, tmp_path)
    r = export(conn, yesterday, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_SETTLEMENT_TZ="America/Toronto")
    cmd = [str(Path(sys.executable).parent / "iotledger"), "files", "verify", "--out", str(tmp_path)]
    ok = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("ok"), ok.stdout + ok.stderr
    csv_path = tmp_path / str(before) / f"settlement-{before}.csv"
    text = csv_path.read_text()
    csv_path.write_text(text.replace(",2000,", ",200,", 1))  # a row edited by hand
    edited = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert edited.returncode == 1
    found = json.loads(edited.stdout)["findings"]
    eid = filed_entry(conn, "PC-2")
    assert any(f["check"] == "entry" and f["entry_ids"] == [eid] and "edited" in f["detail"] for f in found)
    assert any(f["check"] == "file" and f["file"] == f"settlement-{before}.csv" for f in found)
    csv_path.unlink()  # a file deleted
    deleted = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert deleted.returncode == 1
    assert f"settlement-{before}.csv is missing" in deleted.stdout
    assert f"2 entr(y/ies) of {before} are in no file on disk" in deleted.stdout
    assert r.status == "final"


def test_a_day_exported_by_hand_is_still_reconciled_and_summarised_by_the_clock(db_url, conn, tmp_path):
    post(conn, "PC-1", 1000, noon(day(20)))
    by_hand = export(conn, day(20), tmp_path)
    [clock] = clocks(db_url, tmp_path, {}, n=1)
    hook = Hook()
    clock.sink = hook.sink()
    assert clock.nightly(at("2026-11-21 00:15:00")) == {"2026-11-20": "done"}
    with psycopg.connect(db_url) as c:
        assert c.execute("SELECT business_date FROM reconcile_runs").fetchall() == [(day(20),)]
    assert [b["kind"] for b in hook.bodies] == ["daily_summary"]
    assert {p.name: p.read_bytes() for p in by_hand.folder.iterdir()} == \
        {p.name: p.read_bytes() for p in (tmp_path / "2026-11-20").iterdir()}


def test_expected_refunds_by_the_actor_are_idempotent_and_contradictions_refused(db_url, conn):
    from worker.errors import ValidationError
    from worker.gateway.actors import close_pools, expect_refund

    refund = {"mchId": MCH, "mchRefundNo": "RF-1", "originalOrderId": "PC-1", "amount": 500,
              "requestedAt": "2026-11-20T10:00:00-05:00"}
    try:
        expect_refund(refund, db_url)
        expect_refund(refund, db_url)  # the same again: nothing changes
        with pytest.raises(ValidationError, match="amount"):
            expect_refund({**refund, "amount": 600}, db_url)
        with pytest.raises(ValidationError, match="requestedAt"):
            expect_refund({**refund, "mchRefundNo": "RF-2", "requestedAt": "2026-11-20 10:00"}, db_url)
    finally:
        close_pools()
    rows = conn.execute("SELECT mch_refund_no, amount FROM expected_refunds").fetchall()
    assert rows == [("RF-1", 500)]


# ------------------------------------------------------------------ a file of other content in the way

def test_a_foreign_file_in_the_way_refuses_the_export_and_records_nothing_every_time(db_url, redis_url, conn, tmp_path):
    post(conn, "PC-1", 1000, noon(day(20)))
    folder = tmp_path / str(day(20))
    folder.mkdir()
    foreign = folder / f"settlement-{day(20)}.csv"
    foreign.write_text("FOREIGN FILE - finance copy\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_SETTLEMENT_TZ="America/Toronto")
    cmd = [str(Path(sys.executable).parent / "iotledger"), "export", "--date", str(day(20)), "--out", str(tmp_path)]
    for _ in range(2):  # the second attempt must not take the refused first for its own altered file
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "exists with other content" in r.stderr and "nothing recorded" in r.stderr
        assert foreign.read_text() == "FOREIGN FILE - finance copy\n"
        assert sorted(p.name for p in folder.iterdir()) == [foreign.name]  # no temporary file left
        assert conn.execute("SELECT count(*) FROM settlement_files").fetchone() == (0,)
        assert filed(conn, "PC-1") == []
        conn.rollback()
    foreign.unlink()
    assert subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60).returncode == 0
    assert filed(conn, "PC-1") == [day(20)]


def test_restoring_a_file_altered_on_disk_keeps_the_altered_copy_beside_it(conn, tmp_path):
    post(conn, "PC-1", 1000, noon(day(20)))
    first = export(conn, day(20), tmp_path)
    path = first.files["settlement"]
    recorded = path.read_bytes()
    path.write_bytes(recorded.replace(b",1000,", b",100,"))  # edited by hand after it was handed out
    again = export(conn, day(20), tmp_path)
    assert again.status == "restored"
    assert path.read_bytes() == recorded
    [aside] = [p for p in path.parent.iterdir() if p.name.startswith(f"{path.name}.altered-")]
    assert aside.read_bytes() == recorded.replace(b",1000,", b",100,")  # nothing handed out is lost
