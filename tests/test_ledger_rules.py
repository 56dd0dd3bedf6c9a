"""One test per posting rule, through verify-and-post on real PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.factories import KEY2, MCH, MCH2, OLD_KEY, v1_pay, v3_pay, v3_refund
from tests.ledger_helpers import balances, entries, exceptions, order_state, post, refundable
from worker.errors import SignatureError, UnknownMerchantError
from worker.iotpay.signature import signed
from worker.ledger.checks import run_checks
from worker.ledger.outcome import Outcome


@pytest.mark.parametrize("status", [2, 3])
def test_pay_debits_clearing_credits_sales_and_opens_refundable(conn, status):
    r = post(conn, v3_pay("PC1", 1999, status=status))
    assert r.outcome is Outcome.POSTED
    assert balances(conn, MCH) == {"clearing": 1999, "sales": -1999, "refunds": 0}
    assert refundable(conn, "PC1") == (0, 1999)
    assert entries(conn) == [("PC1", "pay", 1999, None)]


def test_a_key_being_rotated_out_still_verifies(conn):
    assert post(conn, v3_pay("PC1", 100, key=OLD_KEY)).outcome is Outcome.POSTED


def test_v1_notify_posts_in_its_currency(conn):
    assert post(conn, v1_pay("P01", 250000, currency="USD")).outcome is Outcome.POSTED
    assert balances(conn, MCH, "USD") == {"clearing": 250000, "sales": -250000, "refunds": 0}
    assert balances(conn, MCH, "CAD") == {}


def test_partial_refunds_draw_down_the_refundable(conn):
    post(conn, v3_pay("PC1", 1000))
    assert post(conn, v3_refund("RP1", "PC1", 300)).outcome is Outcome.POSTED
    assert post(conn, v3_refund("RP2", "PC1", 200)).outcome is Outcome.POSTED
    assert refundable(conn, "PC1") == (500, 500)
    assert balances(conn, MCH) == {"clearing": 500, "sales": -1000, "refunds": 500}
    assert entries(conn)[1:] == [("RP1", "refund", 300, "PC1"), ("RP2", "refund", 200, "PC1")]


def test_void_reverses_the_pay_in_full(conn):
    post(conn, v3_pay("PC1", 1000))
    assert post(conn, v3_refund("RP1", "PC1", 1000, pay_type="void")).outcome is Outcome.POSTED
    assert balances(conn, MCH) == {"clearing": 0, "sales": 0, "refunds": 0}
    assert refundable(conn, "PC1") == (1000, 0)
    assert entries(conn)[1] == ("RP1", "void", 1000, "PC1")


def test_a_gateway_void_notified_as_full_refund_empties_the_refundable(conn):
    post(conn, v3_pay("PC1", 1000))
    assert post(conn, v3_refund("RP1", "PC1", 1000)).outcome is Outcome.POSTED
    assert refundable(conn, "PC1") == (1000, 0)
    assert balances(conn, MCH)["clearing"] == 0


def test_a_partial_void_is_rejected(conn):
    post(conn, v3_pay("PC1", 1000))
    r = post(conn, v3_refund("RP1", "PC1", 400, pay_type="void"))
    assert r.outcome is Outcome.REJECTED and "in full" in r.reason
    assert exceptions(conn)[0][:2] == ("RP1", "void_not_full")


def test_the_same_notify_twice_posts_once(conn):
    msg = v3_pay("PC1", 1000)
    assert post(conn, msg).outcome is Outcome.POSTED
    assert post(conn, msg).outcome is Outcome.DUPLICATE
    post(conn, v3_refund("RP1", "PC1", 100))
    assert post(conn, v3_refund("RP1", "PC1", 100)).outcome is Outcome.DUPLICATE
    assert len(entries(conn)) == 2 and refundable(conn, "PC1") == (100, 900)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"amount": 1001}, "amount"), ({"payType": "refund", "originalOrderId": "PC0"}, "pay_type")],
)
def test_same_order_id_different_content_is_a_conflict_and_the_first_stands(conn, change, field):
    post(conn, v3_pay("PC1", 1000))
    r = post(conn, signed({**v3_pay("PC1", 1000), **change}, "test-key-0123456789abcdefghijklmn"))
    assert r.outcome is Outcome.CONFLICT and field in r.reason
    assert entries(conn) == [("PC1", "pay", 1000, None)]
    (oid, kind, reason), = exceptions(conn)
    assert (oid, kind) == ("PC1", "conflict") and field in reason
    # the same conflicting notify again is not recorded twice
    post(conn, signed({**v3_pay("PC1", 1000), **change}, "test-key-0123456789abcdefghijklmn"))
    assert len(exceptions(conn)) == 1


def test_refund_currency_conflict_with_a_refund_id(conn):
    post(conn, v3_pay("PC1", 1000))
    post(conn, v3_refund("RP1", "PC1", 100))
    r = post(conn, v3_refund("RP1", "PC1", 150))
    assert r.outcome is Outcome.CONFLICT and "amount (100 recorded, 150 received)" in r.reason
    assert refundable(conn, "PC1") == (100, 900)


def test_a_refund_before_its_pay_is_parked_then_posts_when_the_pay_arrives(conn):
    r = post(conn, v3_refund("RP1", "PC1", 300))
    assert r.outcome is Outcome.PARKED
    assert order_state(conn, "RP1")[0] == "parked" and entries(conn) == []
    r = post(conn, v3_pay("PC1", 1000))
    assert r.outcome is Outcome.POSTED
    assert [x.pay_order_id for x in r.released] == ["RP1"] and r.released[0].outcome is Outcome.POSTED
    assert order_state(conn, "RP1")[0] == "posted"
    assert refundable(conn, "PC1") == (300, 700)


def test_a_refund_parked_too_long_is_reported(conn):
    post(conn, v3_refund("RP1", "PC9", 300))
    assert run_checks(conn, parked_before=datetime.now(timezone.utc) - timedelta(hours=1)).parked_too_long == []
    report = run_checks(conn, parked_before=datetime.now(timezone.utc) + timedelta(seconds=1))
    assert [p["pay_order_id"] for p in report.parked_too_long] == ["RP1"]
    assert report.ok  # parked is not a violation, it is reported


def test_a_refund_beyond_the_refundable_is_rejected_with_reason(conn):
    post(conn, v3_pay("PC1", 1000))
    post(conn, v3_refund("RP1", "PC1", 800))
    r = post(conn, v3_refund("RP2", "PC1", 201))
    assert r.outcome is Outcome.REJECTED
    assert "exceeds the original's refundable 200" in r.reason
    assert order_state(conn, "RP2")[0] == "rejected"
    assert exceptions(conn)[-1][:2] == ("RP2", "over_refund")
    assert refundable(conn, "PC1") == (800, 200)


def test_a_parked_refund_beyond_the_pay_is_rejected_on_release(conn):
    post(conn, v3_refund("RP1", "PC1", 5000))
    r = post(conn, v3_pay("PC1", 1000))
    assert r.released[0].outcome is Outcome.REJECTED
    assert refundable(conn, "PC1") == (0, 1000)


def test_a_refund_in_another_currency_is_rejected(conn):
    post(conn, v1_pay("P1", 1000, currency="USD"))
    r = post(conn, v3_refund("RP1", "P1", 100, currency="CAD"))
    assert r.outcome is Outcome.REJECTED and "currency CAD differs from the original's USD" in r.reason
    assert exceptions(conn)[-1][:2] == ("RP1", "currency_mismatch")


def test_a_refund_from_another_merchant_is_rejected(conn):
    post(conn, v3_pay("PC1", 1000))
    r = post(conn, v3_refund("RP1", "PC1", 100, mch=MCH2, key=KEY2))
    assert r.outcome is Outcome.REJECTED and exceptions(conn)[-1][1] == "merchant_mismatch"


@pytest.mark.parametrize("amount", [0, -5])
def test_an_amount_of_zero_or_less_is_rejected(conn, amount):
    r = post(conn, v3_pay("PC1", amount))
    assert r.outcome is Outcome.REJECTED and "amount must be > 0" in r.reason
    assert entries(conn) == [] and exceptions(conn)[0][1] == "non_positive_amount"


def test_a_refundable_different_from_the_ledger_is_recorded_as_mismatch(conn):
    post(conn, v3_pay("PC1", 1000))
    post(conn, v3_refund("RP1", "PC1", 100))
    r = post(conn, v3_pay("PC1", 1000, refundable=950), source="query")  # gateway now says 950, ledger 900
    assert r.outcome is Outcome.DUPLICATE
    (oid, kind, reason), = exceptions(conn)
    assert (oid, kind) == ("PC1", "refundable_mismatch") and "950" in reason and "900" in reason


def test_a_first_pay_notify_stating_a_wrong_refundable_is_a_mismatch(conn):
    assert post(conn, v3_pay("PC1", 1000, refundable=999)).outcome is Outcome.POSTED
    assert exceptions(conn)[0][1] == "refundable_mismatch"


@pytest.mark.parametrize(("status", "outcome", "state"), [(0, Outcome.PENDING, "pending"), (1, Outcome.PENDING, "pending"),
                                                           (9, Outcome.FAILED, "failed"), (4, Outcome.FAILED, "failed"),
                                                           (7, Outcome.UNKNOWN_STATUS, "unknown")])
def test_non_success_statuses_are_recorded_not_posted(conn, status, outcome, state):
    r = post(conn, v3_pay("PC1", 1000, status=status))
    assert r.outcome is outcome
    assert order_state(conn, "PC1")[:2] == (state, status)
    assert entries(conn) == []


def test_a_pending_order_that_succeeds_later_posts_once(conn):
    post(conn, v3_pay("PC1", 1000, status=0))
    post(conn, v3_pay("PC1", 1000, status=1))
    assert post(conn, v3_pay("PC1", 1000, status=2)).outcome is Outcome.POSTED
    assert post(conn, v3_pay("PC1", 1000, status=3)).outcome is Outcome.DUPLICATE
    assert order_state(conn, "PC1")[:2] == ("posted", 2)
    assert len(entries(conn)) == 1


def test_a_late_pending_notify_does_not_undo_a_posted_order_and_is_recorded(conn):
    post(conn, v3_pay("PC1", 1000))
    assert post(conn, v3_pay("PC1", 1000, status=0)).outcome is Outcome.STATUS_REGRESSION
    assert order_state(conn, "PC1")[:2] == ("posted", 2)
    assert [x[:2] for x in exceptions(conn)] == [("PC1", "status_regression")]
    assert balances(conn, MCH)["clearing"] == 1000


def test_bad_signature_and_unknown_merchant_post_nothing(conn):
    with pytest.raises(SignatureError):
        post(conn, {**v3_pay("PC1", 1000), "amount": 1001})
    with pytest.raises(UnknownMerchantError):
        post(conn, v3_pay("PC1", 1000, mch="999"))
    assert entries(conn) == []


def test_cad_and_usd_of_one_merchant_stay_apart(conn):
    post(conn, v1_pay("P1", 700, currency="USD"))
    post(conn, v3_pay("PC1", 500))
    report = run_checks(conn)
    assert report.ok
    assert report.currencies["CAD"]["net"] == 500 and report.currencies["USD"]["net"] == 700


def test_a_pay_releasing_parked_refunds_compares_its_own_refundable_first(conn):
    post(conn, v3_refund("RP1", "PC1", 300))
    r = post(conn, v3_pay("PC1", 1000))  # states refundable 1000, as it was when the pay succeeded
    assert r.outcome is Outcome.POSTED and r.released[0].outcome is Outcome.POSTED
    assert exceptions(conn) == []
    assert refundable(conn, "PC1") == (300, 700)


def test_a_query_recovering_a_pay_compares_the_refundable_after_its_parked_refunds(conn):
    post(conn, v3_refund("RP1", "PC1", 300))
    r = post(conn, v3_pay("PC1", 1000, refundable=700), source="query")  # the gateway's current truth
    assert r.outcome is Outcome.POSTED and r.released[0].outcome is Outcome.POSTED
    assert exceptions(conn) == []


@pytest.mark.parametrize(("later", "state"), [(9, "failed"), (7, "unknown")])
def test_a_pending_order_that_fails_later_is_recorded_failed(conn, later, state):
    post(conn, v3_pay("PC1", 1000, status=0))
    post(conn, v3_pay("PC1", 1000, status=later))
    assert order_state(conn, "PC1")[:2] == (state, later)
    assert entries(conn) == []
