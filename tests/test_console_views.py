"""The read models the console and the command line share (worker/reports/views.py): a day's
totals per merchant are the whole-ledger query's over the same window, reversals included."""

from __future__ import annotations

from datetime import date, datetime, timezone

import psycopg
from psycopg.rows import dict_row

from tests.test_reconcile_seed import TORONTO, at, post
from tests.factories import MERCHANTS
from worker.ledger.checks import merchant_day_totals
from worker.ledger.views import order_view
from worker.reports import views
from worker.reports.businessday import business_day
from worker.sqlfiles import q


def _reverse(conn: psycopg.Connection, pay_order_id: str, when: datetime) -> None:
    """A correcting reversal of the order's entry, legs mirrored (as a person would post one)."""
    e = conn.execute("SELECT id, kind, mch_id, currency, amount FROM journal_entries WHERE pay_order_id = %s",
                     (pay_order_id,)).fetchone()
    rid = conn.execute(
        "INSERT INTO journal_entries (pay_order_id, kind, mch_id, currency, amount, reverses_entry_id, occurred_at) "
        "VALUES (%s, 'reversal', %s, %s, %s, %s, %s) RETURNING id", (pay_order_id, e[2], e[3], e[4], e[0], when)
    ).fetchone()[0]
    conn.execute("INSERT INTO postings (entry_id, account_id, mch_id, currency, amount) "
                 "SELECT %s, p.account_id, p.mch_id, p.currency, -p.amount FROM postings p WHERE p.entry_id = %s",
                 (rid, e[0]))
    conn.commit()


def test_a_days_totals_equal_the_ledger_totals_of_its_window_with_reversals(conn: psycopg.Connection) -> None:
    day = date(2026, 11, 20)
    post(conn, "PC-1", 10000, at("2026-11-20 00:00:00"))  # the first instant of the day
    post(conn, "PC-2", 2500, at("2026-11-20 23:59:59"))  # the last
    post(conn, "PC-3", 700, at("2026-11-21 00:00:00"))  # the next day
    post(conn, "RP-1", 3000, at("2026-11-20 12:00:00"), pay_type="refund", original="PC-1")
    post(conn, "RP-2", 1000, at("2026-11-20 13:00:00"), pay_type="refund", original="PC-1")
    post(conn, "PC-USD", 999, at("2026-11-20 12:00:00"), currency="USD")
    conn.commit()
    _reverse(conn, "RP-2", at("2026-11-20 14:00:00"))  # a refund posted in error, corrected the same day
    _reverse(conn, "PC-2", at("2026-11-21 09:00:00"))  # a pay reversed the next day: counts against that day
    bd = business_day(day, TORONTO)
    with conn.cursor(row_factory=dict_row) as cur:
        days = merchant_day_totals(cur, TORONTO.key, bd.start, business_day(date(2026, 11, 21), TORONTO).end)
        whole = {(r["mch_id"], r["currency"]): r for r in cur.execute(q("totals_by_merchant"),
                                                                      {"start": bd.start, "end": bd.end}).fetchall()}
    conn.rollback()
    first = {(t["mch_id"], t["currency"]): t for t in days if t["business_date"] == day}
    assert {k: (t["paid"], t["refunded"], t["pay_count"], t["refund_count"]) for k, t in first.items()} == \
        {k: (int(r["paid"]), int(r["refunded"]), int(r["pays"]), int(r["refunds"])) for k, r in whole.items()}
    assert (first[("10000701", "CAD")]["paid"], first[("10000701", "CAD")]["refunded"]) == (12500, 3000)
    second = {(t["mch_id"], t["currency"]): t for t in days if t["business_date"] == date(2026, 11, 21)}
    assert (second[("10000701", "CAD")]["paid"], second[("10000701", "CAD")]["pay_count"]) == (700 - 2500, 0)
    chart = views.overview(conn, TORONTO, now=datetime(2026, 11, 22, 12, tzinfo=timezone.utc))["chart"]
    cad = next(s for s in chart["series"] if s["currency"] == "CAD")
    assert {p["date"]: p["net_cents"] for p in cad["points"]}["2026-11-20"] == 12500 - 3000
    # an order's entries include its reversal (found by the entry it reverses, not by a scan)
    assert [e["kind"] for e in order_view(conn, "RP-2")["entries"]] == ["refund", "reversal"]
    chain = views.order_evidence(conn, "PC-1", MERCHANTS)
    assert sorted((e["pay_order_id"], e["kind"]) for e in chain["ledger_entries"]) == \
        [("PC-1", "pay"), ("RP-1", "refund"), ("RP-2", "refund"), ("RP-2", "reversal")]
    assert chain["refundable_cents"] == 10000 - 3000


def test_kept_day_totals_are_used_while_the_day_holds_the_same_entries_and_recomputed_after_a_late_one(
        conn: psycopg.Connection) -> None:
    post(conn, "PC-1", 10000, at("2026-11-20 10:00:00"))
    post(conn, "PC-2", 500, at("2026-11-19 10:00:00"))
    conn.commit()
    now = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)

    def net_of(day: str) -> int:
        chart = views.overview(conn, TORONTO, now=now)["chart"]
        return {p["date"]: p["net_cents"] for p in chart["series"][0]["points"]}[day]

    assert net_of("2026-11-20") == 10000
    kept = conn.execute("SELECT business_date, entries FROM day_totals_cache WHERE entries > 0 "
                        "ORDER BY business_date").fetchall()
    assert kept == [(date(2026, 11, 19), 1), (date(2026, 11, 20), 1)]
    assert conn.execute("SELECT count(*) FROM day_totals_cache").fetchone()[0] == 30
    # the kept figures are what is shown while the count holds (here altered by hand to prove it)
    conn.execute("UPDATE day_totals_cache SET totals = jsonb_set(totals, '{0,net}', '1') "
                 "WHERE business_date = '2026-11-20'")
    conn.commit()
    assert net_of("2026-11-20") == 1
    # a late notify dated that day changes the count: the day is computed again from the ledger
    post(conn, "PC-LATE", 700, at("2026-11-20 23:00:00"))
    conn.commit()
    assert net_of("2026-11-20") == 10700
    assert conn.execute("SELECT entries FROM day_totals_cache WHERE business_date = '2026-11-20'").fetchone() == (2,)
    assert net_of("2026-11-19") == 500
