"""What posting stores, read back: the order row keeps every key the gateway sent, and the journal entry
is dated by the gateway's paySuccTime (not by when it reached us)."""

from __future__ import annotations

from datetime import datetime, timezone

from tests.factories import MCH, v1_pay, v3_pay, v3_refund
from tests.ledger_helpers import post
from worker.ledger.outcome import Outcome

UTC = timezone.utc


def test_a_v3_pay_and_refund_are_stored_with_every_key_and_dated_by_the_gateway(conn):
    assert post(conn, v3_pay("PC1", 1000, mch_order_no="ORDER-77", when="2025-06-13 20:04:12")).outcome is Outcome.POSTED
    assert post(conn, v3_refund("RP1", "PC1", 300, when="2025-06-14 10:00:00")).outcome is Outcome.POSTED
    rows = conn.execute(
        "SELECT pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount, status, state, "
        "channel, card_type, card_num, auth_num, trans_num, invoice_num, pay_succ_time, source, posted_at IS NOT NULL "
        "FROM orders ORDER BY pay_order_id").fetchall()
    assert rows == [
        ("PC1", MCH, "ORDER-77", "pay", None, "CAD", 1000, 2, "posted", "PF_CC", "V", "432567******2266", "A1B2C3",
         "127052575142", "410194689376", datetime(2025, 6, 14, 3, 4, 12, tzinfo=UTC), "notify", True),
        ("RP1", MCH, "RRP1", "refund", "PC1", "CAD", 300, 2, "posted", "PF_CC", "V", "432567******2266", "A1B2C3",
         "127052575143", "410194689377", datetime(2025, 6, 14, 17, 0, tzinfo=UTC), "notify", True),
    ]
    entries = conn.execute("SELECT pay_order_id, kind, original_order_id, mch_id, currency, amount, occurred_at "
                           "FROM journal_entries ORDER BY id").fetchall()
    assert entries == [
        ("PC1", "pay", None, MCH, "CAD", 1000, datetime(2025, 6, 14, 3, 4, 12, tzinfo=UTC)),
        ("RP1", "refund", "PC1", MCH, "CAD", 300, datetime(2025, 6, 14, 17, 0, tzinfo=UTC)),
    ]


def test_a_v1_pay_is_dated_by_its_epoch_milliseconds(conn):
    assert post(conn, v1_pay("P1", 4999, when_ms=1706803830869)).outcome is Outcome.POSTED
    when = datetime(2024, 2, 1, 16, 10, 30, 869000, tzinfo=UTC)
    assert conn.execute("SELECT mch_order_no, currency, channel, pay_succ_time FROM orders").fetchone() == (
        "MP1", "USD", "WX_APP", when)
    assert conn.execute("SELECT occurred_at FROM journal_entries").fetchone() == (when,)
