"""The posting rules' findings in full: the exact reason, details and dedup key of each conflict,
status regression, content change and unknown status; every step a non-success notify can take on
an order with nothing booked; a refused notify sent again; a duplicate answered by a query; the
date of an entry without paySuccTime. Written for the mutants of worker/ledger/posting.py that
the other ledger tests let live."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest

from tests.factories import KEY, MCH, v3_pay, v3_refund
from tests.ledger_helpers import TZ, entries, exceptions, order_state, post, refundable
from worker.iotpay.notify import parse_params
from worker.iotpay.signature import signed
from worker.ledger.outcome import Outcome
from worker.ledger.posting import fingerprint


def _found(conn: psycopg.Connection, kind: str) -> list[tuple[str, str, dict[str, Any], str]]:
    """(pay_order_id, reason, details, dedup_key) of the exceptions of one kind, in order."""
    rows = conn.execute("SELECT pay_order_id, reason, details, dedup_key FROM ledger_exceptions WHERE kind = %s "
                        "ORDER BY id", (kind,)).fetchall()
    conn.rollback()
    return [tuple(r) for r in rows]


def _fp(params: dict[str, Any]) -> str:
    return fingerprint(parse_params(params, TZ))


def _order(conn: psycopg.Connection, pay_order_id: str, *columns: str) -> tuple:
    row = conn.execute(f"SELECT {', '.join(columns)} FROM orders WHERE pay_order_id = %s", (pay_order_id,)).fetchone()
    conn.rollback()
    return tuple(row)


# ---------------------------------------------------------------------------------------------- conflicts
def test_a_conflict_names_every_differing_field_in_order_with_both_values(conn):
    assert post(conn, v3_pay("PC1", 1000)).outcome is Outcome.POSTED
    other = signed({**v3_pay("PC1", 1000), "payType": "refund", "originalOrderId": "PC0", "amount": 1001}, KEY)
    r = post(conn, other)
    assert r.outcome is Outcome.CONFLICT
    assert r.reason == ("same order id, different pay_type ('pay' recorded, 'refund' received), original_order_id "
                        "(None recorded, 'PC0' received), amount (1000 recorded, 1001 received)")
    (found,) = _found(conn, "conflict")
    assert found == ("PC1", r.reason, {"differences": {
        "pay_type": {"recorded": "pay", "received": "refund"},
        "original_order_id": {"recorded": None, "received": "PC0"},
        "amount": {"recorded": 1000, "received": 1001}}, "status": 2}, f"conflict:PC1:{_fp(other)}")
    # another different content is another finding; the first posted content stands
    assert post(conn, v3_pay("PC1", 1200, status=9)).outcome is Outcome.CONFLICT
    assert [f[2]["differences"] for f in _found(conn, "conflict")][1] == {"amount": {"recorded": 1000, "received": 1200}}
    assert _found(conn, "conflict")[1][2]["status"] == 9
    assert order_state(conn, "PC1") == ("posted", 2, None)
    assert entries(conn) == [("PC1", "pay", 1000, None)]


# ---------------------------------------------------------------------------------------------- regressions
def test_a_regression_records_every_detail_once_per_received_status(conn):
    post(conn, v3_pay("PC1", 1000))
    before = datetime.now(timezone.utc)
    r = post(conn, v3_pay("PC1", 1000, status=9), source="query")
    assert r.outcome is Outcome.STATUS_REGRESSION
    assert r.reason == ("gateway reports status 9 (failed) for an order recorded posted with status 2; "
                        "the ledger is unchanged, a person decides")
    assert post(conn, v3_pay("PC1", 1000, status=4)).outcome is Outcome.STATUS_REGRESSION
    assert post(conn, v3_pay("PC1", 1000, status=9)).outcome is Outcome.STATUS_REGRESSION  # again: no new row
    first, second = _found(conn, "status_regression")
    at = datetime.fromisoformat(first[2].pop("at"))
    assert before <= at <= datetime.now(timezone.utc)
    assert first == ("PC1", r.reason, {"recorded_status": 2, "received_status": 9, "state": "posted", "source": "query",
                                       "mch_id": MCH, "amount": 1000, "currency": "CAD", "pay_type": "pay"},
                     "status_regression:PC1:2:9")
    assert (second[3], second[2]["received_status"], second[2]["source"]) == ("status_regression:PC1:2:4", 4, "notify")
    assert order_state(conn, "PC1") == ("posted", 2, None)


def test_a_parked_refund_reported_failed_records_the_same_reason_it_returns(conn):
    post(conn, v3_refund("RP1", "PC1", 300))
    r = post(conn, v3_refund("RP1", "PC1", 300, status=4))
    assert r.outcome is Outcome.FAILED
    assert r.reason == ("the gateway reports status 4 (failed) for this refund after a success; "
                        "it is not released when its original posts")
    ((oid, reason, details, key),) = _found(conn, "status_regression")
    assert (oid, reason, key, details["state"], details["pay_type"]) == ("RP1", r.reason, "status_regression:RP1:2:4",
                                                                         "parked", "refund")
    assert order_state(conn, "RP1") == ("failed", 4, r.reason)


# ---------------------------------------------------------------------------------------------- content changes
def test_a_content_change_keeps_the_old_content_in_full_and_replaces_it(conn):
    first = v3_pay("CP1", 1000, status=0, mch_order_no="A1")
    second = v3_pay("CP1", 1150, status=1, mch_order_no="A2")
    post(conn, first)
    r = post(conn, second)
    assert (r.outcome, r.reason) == (Outcome.PENDING, "status 1: not paid yet")
    ((oid, reason, details, key),) = _found(conn, "content_changed")
    assert reason == "the gateway changed the content of an order with nothing posted (pending): amount 1000 -> 1150"
    common = {"mch_id": MCH, "pay_type": "pay", "original_order_id": None, "currency": "CAD"}
    assert details == {"recorded": {**common, "amount": 1000, "mch_order_no": "A1", "status": 0},
                       "received": {**common, "amount": 1150, "mch_order_no": "A2", "status": 1},
                       "state": "pending", "source": "notify"}
    assert (oid, key) == ("CP1", f"content_changed:CP1:{_fp(first)}:{_fp(second)}")
    assert _order(conn, "CP1", "amount", "mch_order_no", "status", "state", "fingerprint") == \
        (1150, "A2", 1, "pending", _fp(second))
    # the newer word posts as it stands now
    assert post(conn, v3_pay("CP1", 1150, mch_order_no="A2")).outcome is Outcome.POSTED
    assert entries(conn) == [("CP1", "pay", 1150, None)]


# ---------------------------------------------------------------------------------------------- nothing booked yet
def test_every_step_of_a_non_success_order_with_nothing_booked(conn):
    assert post(conn, v3_pay("PC1", 1000, status=0)).outcome is Outcome.PENDING
    again = post(conn, v3_pay("PC1", 1000, status=1))
    assert (again.outcome, again.reason) == (Outcome.DUPLICATE, "already pending")
    unknown = post(conn, v3_pay("PC1", 1000, status=7))
    assert (unknown.outcome, unknown.reason) == (Outcome.UNKNOWN_STATUS, "undocumented status 7")
    assert order_state(conn, "PC1") == ("unknown", 7, None)
    assert _found(conn, "unknown_status") == [("PC1", "status 7 is not documented; kept, not final", {"status": 7},
                                               "unknown_status:PC1:7")]
    assert post(conn, v3_pay("PC1", 1000, status=8)).reason == "already unknown"
    back = post(conn, v3_pay("PC1", 1000, status=0))
    assert (back.outcome, back.reason) == (Outcome.PENDING, "status 0: not paid yet")
    assert order_state(conn, "PC1") == ("pending", 0, None)
    failed = post(conn, v3_pay("PC1", 1000, status=9))
    assert (failed.outcome, failed.reason) == (Outcome.FAILED, "status 9: failed at the gateway")
    assert order_state(conn, "PC1") == ("failed", 9, None)
    assert post(conn, v3_pay("PC1", 1000, status=4)).reason == "already failed"
    assert _found(conn, "status_regression") == [] and entries(conn) == []
    # a failed order the gateway never called a success may still succeed: it posts
    assert post(conn, v3_pay("PC1", 1000, status=3)).outcome is Outcome.POSTED
    assert order_state(conn, "PC1")[:2] == ("posted", 3)


def test_an_unknown_order_whose_content_changes_is_recorded_with_the_new_status(conn):
    post(conn, v3_pay("PC1", 1000, status=7))
    r = post(conn, v3_pay("PC1", 1200, status=8))
    assert (r.outcome, r.reason) == (Outcome.UNKNOWN_STATUS, "undocumented status 8")
    assert _order(conn, "PC1", "amount", "status", "state") == (1200, 8, "unknown")
    assert [k for _, _, _, k in _found(conn, "unknown_status")] == ["unknown_status:PC1:7", "unknown_status:PC1:8"]


def test_a_parked_refund_reported_pending_with_another_amount_keeps_the_amount_of_its_success(conn):
    # the regression changes nothing: the success (300) stands and is what the pay releases
    post(conn, v3_refund("RP1", "PC1", 300))
    r = post(conn, v3_refund("RP1", "PC1", 250, status=0))
    assert r.outcome is Outcome.STATUS_REGRESSION
    assert _order(conn, "RP1", "state", "status", "amount") == ("parked", 2, 300)
    assert [x[1] for x in exceptions(conn)] == ["status_regression"]
    assert [x.outcome for x in post(conn, v3_pay("PC1", 1000)).released] == [Outcome.POSTED]
    assert entries(conn) == [("PC1", "pay", 1000, None), ("RP1", "refund", 300, "PC1")]


def test_a_failed_order_reported_pending_with_another_amount_keeps_its_content(conn):
    post(conn, v3_pay("PC1", 1000, status=9))
    assert post(conn, v3_pay("PC1", 1200, status=0)).outcome is Outcome.STATUS_REGRESSION
    assert _order(conn, "PC1", "state", "status", "amount") == ("failed", 9, 1000)
    assert [x[1] for x in exceptions(conn)] == ["status_regression"]


def test_a_failed_order_reported_failed_with_another_amount_takes_it(conn):
    post(conn, v3_pay("PC1", 1000, status=9))
    r = post(conn, v3_pay("PC1", 1200, status=4))
    assert (r.outcome, r.reason) == (Outcome.FAILED, "status 4: failed at the gateway")
    assert _order(conn, "PC1", "state", "status", "amount") == ("failed", 4, 1200)
    assert [x[1] for x in exceptions(conn)] == ["content_changed"]


# ---------------------------------------------------------------------------------------------- settled orders
def test_a_refused_refund_sent_again_is_refused_for_its_first_reason_once(conn):
    post(conn, v3_pay("PC1", 1000))
    first = post(conn, v3_refund("RP1", "PC1", 1500))
    assert first.outcome is Outcome.REJECTED
    again = post(conn, v3_refund("RP1", "PC1", 1500, status=3))
    assert (again.outcome, again.reason) == (Outcome.REJECTED, first.reason)
    assert [x[1] for x in exceptions(conn)] == ["over_refund"]
    assert order_state(conn, "RP1") == ("rejected", 2, first.reason)


def test_a_duplicate_pay_answered_by_a_query_compares_the_refundable_a_notify_does_not(conn):
    post(conn, v3_pay("PC1", 1000))
    post(conn, v3_refund("RP1", "PC1", 100))
    dup = post(conn, v3_pay("PC1", 1000, refundable=1000))  # as it was when the pay succeeded
    assert (dup.outcome, dup.reason) == (Outcome.DUPLICATE, "already posted")
    assert _found(conn, "refundable_mismatch") == []
    assert post(conn, v3_pay("PC1", 1000, refundable=900), source="query").outcome is Outcome.DUPLICATE
    assert _found(conn, "refundable_mismatch") == []  # the gateway agrees now
    assert post(conn, v3_pay("PC1", 1000, refundable=950), source="query").outcome is Outcome.DUPLICATE
    assert _found(conn, "refundable_mismatch") == [
        ("PC1", "gateway states refundable 950 cents, ledger has 900 cents", {"gateway": 950, "ledger": 900},
         "refundable_mismatch:PC1:950:900")]


def test_a_posted_refund_stating_a_refundable_is_compared_with_zero(conn):
    post(conn, v3_pay("PC1", 1000))
    assert post(conn, signed({**v3_refund("RP1", "PC1", 100), "refundable": 5}, KEY)).outcome is Outcome.POSTED
    assert [(f[0], f[2]) for f in _found(conn, "refundable_mismatch")] == [("RP1", {"gateway": 5, "ledger": 0})]
    assert refundable(conn, "PC1") == (100, 900)


# ---------------------------------------------------------------------------------------------- entry dates
def test_an_entry_without_pay_succ_time_is_dated_when_the_order_was_first_heard_of(conn):
    post(conn, v3_pay("PC1", 1000, status=0, when=""))
    (first_seen,) = _order(conn, "PC1", "first_seen_at")
    assert post(conn, v3_pay("PC1", 1000, when="")).outcome is Outcome.POSTED
    before = datetime.now(timezone.utc)
    assert post(conn, v3_pay("PC2", 500, when="")).outcome is Outcome.POSTED
    after = datetime.now(timezone.utc)
    rows = dict(conn.execute("SELECT pay_order_id, occurred_at FROM journal_entries").fetchall())
    conn.rollback()
    assert rows["PC1"] == first_seen
    assert before <= rows["PC2"] <= after


@pytest.mark.parametrize("source", ["notify", "query"])
def test_a_pending_order_that_succeeds_keeps_the_fields_of_the_success(conn, source):
    post(conn, v3_pay("PC1", 1000, status=0, authNum=""))
    assert post(conn, v3_pay("PC1", 1000, authNum="Z9"), source=source).outcome is Outcome.POSTED
    assert _order(conn, "PC1", "state", "status", "auth_num", "source") == ("posted", 2, "Z9", source)


def test_a_parked_refund_reported_pending_then_success_again_stays_parked_not_a_regression(conn):
    post(conn, v3_refund("RP1", "PC1", 300))
    assert post(conn, v3_refund("RP1", "PC1", 300, status=0)).outcome is Outcome.STATUS_REGRESSION
    again = post(conn, v3_refund("RP1", "PC1", 300))  # only a failed record is judged by its past success
    assert again.outcome is Outcome.PARKED
    assert len(_found(conn, "status_regression")) == 1
    assert [x.outcome for x in post(conn, v3_pay("PC1", 1000)).released] == [Outcome.POSTED]


def test_one_cent_is_the_smallest_amount_posted(conn):
    assert post(conn, v3_pay("PC1", 1)).outcome is Outcome.POSTED
    assert post(conn, v3_refund("RP1", "PC1", 1)).outcome is Outcome.POSTED
    assert entries(conn) == [("PC1", "pay", 1, None), ("RP1", "refund", 1, "PC1")]
    assert refundable(conn, "PC1") == (1, 0)


@pytest.mark.parametrize("amount", [0, -300])
def test_a_non_positive_amount_is_rejected_with_the_amount_in_its_details(conn, amount):
    r = post(conn, v3_pay("PC1", amount))
    assert (r.outcome, r.reason) == (Outcome.REJECTED, f"amount must be > 0 cents, got {amount}")
    assert _found(conn, "non_positive_amount") == [("PC1", r.reason, {"amount": amount}, "non_positive_amount:PC1")]
    assert order_state(conn, "PC1") == ("rejected", 2, r.reason) and entries(conn) == []


def test_a_query_recovering_a_pay_with_a_wrong_refundable_records_the_mismatch(conn):
    post(conn, v3_refund("RP1", "PC1", 300))
    r = post(conn, v3_pay("PC1", 1000, refundable=1000), source="query")  # the gateway forgot the refund
    assert r.outcome is Outcome.POSTED and [x.outcome for x in r.released] == [Outcome.POSTED]
    assert _found(conn, "refundable_mismatch") == [
        ("PC1", "gateway states refundable 1000 cents, ledger has 700 cents", {"gateway": 1000, "ledger": 700},
         "refundable_mismatch:PC1:1000:700")]


def test_a_failed_refund_keeps_its_reason_when_a_later_failed_notify_changes_its_amount(conn):
    post(conn, v3_refund("RP1", "PC1", 300))
    first = post(conn, v3_refund("RP1", "PC1", 300, status=9))
    again = post(conn, v3_refund("RP1", "PC1", 250, status=4))
    assert (again.outcome, again.reason) == (Outcome.FAILED, "status 4: failed at the gateway")
    assert _order(conn, "RP1", "state", "status", "reason", "amount") == ("failed", 4, first.reason, 250)


def test_a_pay_reusing_a_refund_id_names_the_original_it_lacks(conn):
    post(conn, v3_pay("PC1", 1000))
    post(conn, v3_refund("RP1", "PC1", 300))
    r = post(conn, v3_pay("RP1", 300))
    assert r.outcome is Outcome.CONFLICT
    assert r.reason == ("same order id, different pay_type ('refund' recorded, 'pay' received), original_order_id "
                        "('PC1' recorded, None received)")
    (found,) = _found(conn, "conflict")
    assert found[2]["differences"] == {"pay_type": {"recorded": "refund", "received": "pay"},
                                       "original_order_id": {"recorded": "PC1", "received": None}}
