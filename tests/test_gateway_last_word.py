"""The ledger follows the gateway's last word: the eight ways it could be booked wrong or go unseen.

Each test reproduces one case of the money-safety review (a status moving backwards, a refund
without payType, a pending order whose content changes, a success after a failed record, a
refund taken for a pay, a pay and a refund sharing one id, a parked query resolved for nothing,
sums beyond int64) and asserts ledger rows, exceptions, alerts, expected-order rows and exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.factories import KEY, MCH, MERCHANTS, MERCHANTS_JSON, v1_pay, v3_pay, v3_refund
from tests.ledger_helpers import TZ, balances, entries, exceptions, order_state, post, refundable
from tests.test_pipeline_process import put
from tests.test_reconcile_seed import TORONTO
from tests.test_sweep_recovery import env_factory, expected_row  # noqa: F401 - fixture
from worker.config import Settings
from worker.errors import PermanentError, ValidationError
from worker.gateway.schedule import Schedule
from worker.iotpay.signature import signed
from worker.ledger.checks import run_checks
from worker.ledger.notify_file import ingest_lines
from worker.ledger.outcome import Outcome
from worker.ledger.views import order_view
from worker.pipeline import process
from worker.reports.alerts import AlertSink, alert_exceptions, alert_give_ups
from worker.reports.reconcile import reconcile
from worker.simulator import NotifyPolicy

PAY_DAY = date(2025, 6, 13)  # v3_pay's paySuccTime, 2025-06-13 20:04:12 Vancouver = 23:04 Toronto


def _regressions(conn: psycopg.Connection) -> list[dict]:
    rows = conn.execute("SELECT pay_order_id, details FROM ledger_exceptions WHERE kind = 'status_regression' "
                        "ORDER BY id").fetchall()
    conn.rollback()
    return [{"id": r[0], **r[1]} for r in rows]


def _hook() -> tuple[AlertSink, list[dict]]:
    calls: list[dict] = []

    def hook(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(200)

    return AlertSink("https://hooks.example.test/T", transport=httpx.MockTransport(hook), sleep=lambda s: None), calls


# ------------------------------------------------------------------ 1. a status that moves backwards

@pytest.mark.parametrize("later", [9, 4, 0])
def test_a_posted_pay_reported_failed_or_pending_is_a_recorded_and_alerted_regression(conn, later):
    assert post(conn, v3_pay("PC1", 1000)).outcome is Outcome.POSTED
    r = post(conn, v3_pay("PC1", 1000, status=later))
    assert r.outcome is Outcome.STATUS_REGRESSION and f"status {later}" in r.reason
    # the ledger did not change by itself
    assert order_state(conn, "PC1")[:2] == ("posted", 2)
    assert balances(conn, MCH) == {"clearing": 1000, "sales": -1000, "refunds": 0}
    (reg,) = _regressions(conn)
    assert (reg["id"], reg["recorded_status"], reg["received_status"], reg["source"], reg["state"]) == \
        ("PC1", 2, later, "notify", "posted")
    assert datetime.fromisoformat(reg["at"]).tzinfo is not None
    # the same contradiction again is one finding, not two
    assert post(conn, v3_pay("PC1", 1000, status=later)).outcome is Outcome.STATUS_REGRESSION
    assert len(_regressions(conn)) == 1
    # `iotledger order` shows it
    assert [x["kind"] for x in order_view(conn, "PC1")["exceptions"]] == ["status_regression"]
    sink, calls = _hook()
    if later in (4, 9):  # a posted pay reported failed: alerted at once (the clock's minute job), once
        assert alert_exceptions(conn, sink) == 1
        assert alert_exceptions(conn, sink) == 0
        assert sink.deliver_pending(conn) == (1, 0)
        assert f"merchant {MCH}, CAD 10.00" in calls[0]["text"] and "status_regression on PC1" in calls[0]["text"]
    else:  # a late pending notify is likely a reordering: the nightly reconcile alerts it
        assert alert_exceptions(conn, sink) == 0
    # listed by reconcile for the order's day, and alerted by it unless the minute job already did
    result = reconcile(conn, PAY_DAY, TORONTO, sink)
    assert [(m.cls, m.subject) for m in result.mismatches if m.cls == "status_regression"] == [("status_regression", "PC1")]
    sink.deliver_pending(conn)
    regression_alerts = [c for c in calls if "PC1" in c["text"] and "status_regression" in c["text"]]
    assert len(regression_alerts) == 1 and f"merchant {MCH}, CAD 10.00" in regression_alerts[0]["text"]
    assert run_checks(conn).ok


def test_a_rejected_refund_reported_failed_is_recorded_not_ignored(conn):
    post(conn, v3_pay("PC1", 1000))
    assert post(conn, v3_refund("RP1", "PC1", 1500)).outcome is Outcome.REJECTED
    assert post(conn, v3_refund("RP1", "PC1", 1500, status=9)).outcome is Outcome.STATUS_REGRESSION
    assert order_state(conn, "RP1")[0] == "rejected"
    assert [(r["id"], r["recorded_status"], r["received_status"]) for r in _regressions(conn)] == [("RP1", 2, 9)]


def test_a_failed_order_reported_pending_later_stays_failed_and_is_recorded(conn):
    post(conn, v3_pay("PC1", 1000, status=9))
    assert post(conn, v3_pay("PC1", 1000, status=0)).outcome is Outcome.STATUS_REGRESSION
    assert order_state(conn, "PC1")[:2] == ("failed", 9)
    assert [(r["recorded_status"], r["received_status"]) for r in _regressions(conn)] == [(9, 0)]


def test_a_parked_refund_the_gateway_reports_failed_is_never_released(conn):
    assert post(conn, v3_refund("RP1", "PC1", 300)).outcome is Outcome.PARKED
    r = post(conn, v3_refund("RP1", "PC1", 300, status=9))
    assert r.outcome is Outcome.FAILED and "not released" in r.reason
    assert order_state(conn, "RP1") == ("failed", 9, r.reason)
    assert [(x["recorded_status"], x["received_status"], x["state"]) for x in _regressions(conn)] == [(2, 9, "parked")]
    pay = post(conn, v3_pay("PC1", 1000))
    assert pay.outcome is Outcome.POSTED and pay.released == ()
    assert refundable(conn, "PC1") == (0, 1000)
    assert entries(conn) == [("PC1", "pay", 1000, None)]


def test_a_late_pending_notify_does_not_unpark_a_parked_refund(conn):
    post(conn, v3_refund("RP1", "PC1", 300))
    assert post(conn, v3_refund("RP1", "PC1", 300, status=0)).outcome is Outcome.STATUS_REGRESSION
    assert order_state(conn, "RP1")[:2] == ("parked", 2)
    assert post(conn, v3_pay("PC1", 1000)).released[0].outcome is Outcome.POSTED
    assert refundable(conn, "PC1") == (300, 700)


def test_the_sweep_never_resolves_a_posted_order_as_failed(env_factory, db_url):  # noqa: F811
    env = env_factory(policy=NotifyPolicy(seed=11, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    order = env.create(mchId=MCH, mchOrderNo="REV-1", amount=4200, status=2)
    # the success notify reached the ledger without its mchOrderNo, so the sweep cannot settle it
    # from the ledger and asks the gateway, which now says failed
    body = json.loads(env.ctl.get(f"/_sim/orders/{order['payOrderId']}/notify-body").json()["body"])
    body.pop("mchOrderNo")
    with psycopg.connect(db_url) as conn:
        assert post_sim(conn, body).outcome is Outcome.POSTED
    env.ctl.post(f"/_sim/orders/{order['payOrderId']}/fail", json={"status": 9})
    env.expect(order, now - timedelta(minutes=5))
    report = env.sweep(now)
    assert (report.queried, report.paid, report.failed) == (1, 1, 0)
    row = expected_row(db_url, "REV-1")
    assert (row["resolution"], row["pay_order_id"], row["last_status"]) == ("paid", order["payOrderId"], 9)
    with psycopg.connect(db_url) as conn:
        (reg,) = _regressions(conn)
        assert (reg["id"], reg["received_status"], reg["source"]) == (order["payOrderId"], 9, "query")
        assert balances(conn, MCH)["clearing"] == 4200


def post_sim(conn: psycopg.Connection, params: dict) -> object:
    """Post a notify body taken from the simulator (and changed by the test), signed again."""
    return post(conn, signed(params, KEY))


# ------------------------------------------------------------------ 2. a refund is never income

@pytest.mark.parametrize("pay_type", [None, "pay", "PAY"])
def test_a_notify_naming_an_original_without_refund_pay_type_is_refused_naming_both_fields(conn, pay_type):
    params = {k: v for k, v in v3_refund("RP1", "PC1", 300).items() if k not in ("payType", "sign")}
    if pay_type is not None:
        params["payType"] = pay_type
    post(conn, v3_pay("PC1", 1000))
    with pytest.raises(ValidationError) as exc:
        post(conn, signed(params, KEY))
    assert exc.value.field == "payType" and "originalOrderId" in str(exc.value) and "'PC1'" in str(exc.value)
    assert entries(conn) == [("PC1", "pay", 1000, None)]
    assert balances(conn, MCH)["clearing"] == 1000 and refundable(conn, "PC1") == (0, 1000)


def test_a_v1_notify_with_an_original_and_no_pay_type_is_refused(conn):
    params = {k: v for k, v in v1_pay("P02", 500).items() if k != "sign"}
    params["originalOrderId"] = "P01"
    with pytest.raises(ValidationError, match="payType"):
        post(conn, signed(params, KEY))
    assert entries(conn) == []


@pytest.fixture
def settings(db_url, redis_url, queue_name) -> Settings:
    return Settings.from_env({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON,
                              "IOTLEDGER_QUEUE": queue_name})


def test_a_refund_without_pay_type_through_the_worker_is_kept_failed_and_reported(conn, settings):
    post(conn, v3_pay("PC1", 1000))
    params = {k: v for k, v in v3_refund("RP1", "PC1", 300).items() if k not in ("payType", "sign")}
    row_id = put(conn, settings, signed(params, KEY), now=datetime.now(timezone.utc))
    with pytest.raises(PermanentError):
        process.handle(conn, row_id, settings)
    state, reason = conn.execute("SELECT state, reason FROM inbox WHERE id = %s", (row_id,)).fetchone()
    conn.rollback()
    assert state == "failed" and reason.startswith("payType: missing") and "originalOrderId 'PC1'" in reason
    sink, calls = _hook()
    today = datetime.now(TORONTO).date()
    result = reconcile(conn, today, TORONTO, sink)
    (m,) = [m for m in result.mismatches if m.cls == "notify_not_posted"]
    assert (m.subject, m.pay_order_id, m.details["reason"]) == (f"inbox/{row_id}", "RP1", reason)
    assert sink.deliver_pending(conn)[0] >= 1
    (alert,) = [c for c in calls if c["dedup_key"].startswith(f"mismatch:notify_not_posted:inbox/{row_id}:")]
    assert "(merchant 10000701, CAD 3.00)" in alert["text"] and "payType: missing" in alert["text"]


# ------------------------------------------------------------------ 3. nothing final, nothing frozen

def test_a_pending_order_whose_amount_changes_posts_the_new_amount_and_keeps_the_old(conn):
    assert post(conn, v3_pay("CP1", 1000, status=0)).outcome is Outcome.PENDING
    r = post(conn, v3_pay("CP1", 1150, status=2, tip=150))  # a tip on a POS order
    assert r.outcome is Outcome.POSTED
    assert entries(conn) == [("CP1", "pay", 1150, None)]
    assert balances(conn, MCH)["clearing"] == 1150 and refundable(conn, "CP1") == (0, 1150)
    (x,) = [x for x in order_view(conn, "CP1")["exceptions"] if x["kind"] == "content_changed"]
    assert x["details"]["recorded"]["amount"] == 1000 and x["details"]["received"]["amount"] == 1150
    assert "amount 1000 -> 1150" in x["reason"]
    view = order_view(conn, "CP1")
    assert (view["amount_cents"], view["amount"], view["state"], view["status"]) == (1150, "11.50", "posted", 2)
    # once posted, other content is a conflict: the first posted content stands
    assert post(conn, v3_pay("CP1", 1200)).outcome is Outcome.CONFLICT
    assert entries(conn) == [("CP1", "pay", 1150, None)]


def test_a_failed_order_that_succeeds_with_other_content_posts(conn):
    post(conn, v3_pay("PC1", 1000, status=9))
    assert post(conn, v3_pay("PC1", 900)).outcome is Outcome.POSTED
    assert entries(conn) == [("PC1", "pay", 900, None)]
    assert [x[1] for x in exceptions(conn)] == ["content_changed"]


def test_a_pending_order_changing_content_while_still_pending_is_updated(conn):
    post(conn, v3_pay("CP1", 1000, status=0))
    assert post(conn, v3_pay("CP1", 1100, status=1)).outcome is Outcome.PENDING
    assert conn.execute("SELECT amount, status, state FROM orders").fetchone() == (1100, 1, "pending")
    conn.rollback()


def test_a_parked_refund_whose_amount_changes_posts_the_new_amount(conn):
    post(conn, v3_refund("RP1", "PC1", 300))
    assert post(conn, v3_refund("RP1", "PC1", 250)).outcome is Outcome.PARKED
    pay = post(conn, v3_pay("PC1", 1000))
    assert [r.outcome for r in pay.released] == [Outcome.POSTED]
    assert entries(conn)[1] == ("RP1", "refund", 250, "PC1")


def test_replay_of_a_changed_pending_order_posts_instead_of_conflicting(conn, settings):
    first = put(conn, settings, v3_pay("CP1", 1000, status=0), now=datetime.now(timezone.utc))
    second = put(conn, settings, v3_pay("CP1", 1150), now=datetime.now(timezone.utc))
    assert process.handle(conn, first, settings).outcome == "pending"
    assert process.handle(conn, second, settings).outcome == "posted"
    assert process.handle(conn, second, settings, force=True).outcome == "duplicate"
    assert entries(conn) == [("CP1", "pay", 1150, None)]


def test_the_sweep_posts_a_pending_pos_order_that_succeeded_with_a_tip(env_factory, db_url):  # noqa: F811
    env = env_factory(policy=NotifyPolicy(seed=12, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    order = env.create(mchId=MCH, mchOrderNo="TIP-1", amount=1150, status=2, channel="PF_CC")
    env.expect(order, now - timedelta(minutes=5), with_id=True)
    # what the ledger heard first: the order pending at 10.00, before the tip
    body = json.loads(env.ctl.get(f"/_sim/orders/{order['payOrderId']}/notify-body").json()["body"])
    body.update(amount=1000, status=0, refundable=1000)
    with psycopg.connect(db_url) as conn:
        assert post_sim(conn, body).outcome is Outcome.PENDING
    report = env.sweep(now)
    assert (report.queried, report.paid) == (1, 1)
    row = expected_row(db_url, "TIP-1")
    assert (row["resolution"], row["last_status"]) == ("paid", 2)
    with psycopg.connect(db_url) as conn:
        assert entries(conn) == [(order["payOrderId"], "pay", 1150, None)]
        assert [x[1] for x in exceptions(conn)] == ["content_changed"]


# ------------------------------------------------------------------ 4. nothing acknowledged goes unreported

def test_a_success_refused_after_a_failed_record_is_reported_and_the_sweep_keeps_asking(
        env_factory, db_url, redis_url, queue_name):  # noqa: F811
    env = env_factory(policy=NotifyPolicy(seed=13, drop_rate=1.0))
    settings = Settings.from_env({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTLEDGER_QUEUE": queue_name,
                                  "IOTPAY_MERCHANTS": MERCHANTS_JSON})
    now = datetime.now(timezone.utc)
    order = env.create(mchId=MCH, mchOrderNo="F-OK", amount=2500, status=9)
    env.expect(order, now - timedelta(minutes=5), with_id=True)
    body = json.loads(env.ctl.get(f"/_sim/orders/{order['payOrderId']}/notify-body").json()["body"])
    with psycopg.connect(db_url) as conn:
        failed = put(conn, settings, signed({**body, "status": 9}, KEY), now=now)
        assert process.handle(conn, failed, settings).outcome == "failed"
        # then IOTPay notifies the success; we acknowledged it, the worker refuses it (a time that cannot be)
        success = put(conn, settings, signed({**body, "status": 2, "paySuccTime": "9999-12-31 23:59:59"}, KEY),
                      now=now)
        with pytest.raises(ValidationError, match="paySuccTime"):
            process.handle(conn, success, settings)
        assert conn.execute("SELECT state FROM inbox WHERE id = %s", (success,)).fetchone() == ("failed",)
        conn.rollback()
        result = reconcile(conn, datetime.now(TORONTO).date(), TORONTO)
        listed = {m.subject: m for m in result.mismatches if m.cls == "notify_not_posted"}
        assert list(listed) == [f"inbox/{success}"]
        assert listed[f"inbox/{success}"].details["reason"].startswith("paySuccTime: '9999-12-31 23:59:59'")
        assert listed[f"inbox/{success}"].details["order_state"] == "failed"
    # the sweep does not settle the order on its failed record: it asks the gateway again
    report = env.sweep(now)
    assert report.settled == 0 and env.queries() == 1
    row = expected_row(db_url, "F-OK")
    assert row["resolved_at"] is None and row["next_query_at"] is not None


# ------------------------------------------------------------------ 5. the sweep checks what it is told

def test_a_refund_found_by_merchant_order_number_is_not_the_answer_about_a_pay(env_factory, db_url):  # noqa: F811
    env = env_factory(policy=NotifyPolicy(seed=14, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    paid = env.create(mchId=MCH, mchOrderNo="P-1", amount=2000, status=2)
    # the merchant's refund number collides with the number of an order whose pay never happened
    assert env.ctl.post("/v3/cc_refund", json=signed({
        "mchId": MCH, "mchRefundNo": "X-1", "loginName": "jack", "refundAmount": 500,
        "payOrderId": paid["payOrderId"]}, KEY)).json()["retCode"] == "SUCCESS"
    env.expect({"mchId": MCH, "mchOrderNo": "X-1", "amount": 500, "currency": "CAD", "channel": "PF_CC"},
               now - timedelta(minutes=5))
    report = env.sweep(now)
    assert (report.errors, report.paid) == (1, 0)
    row = expected_row(db_url, "X-1")
    assert row["resolved_at"] is None and row["pay_order_id"] is None and row["next_query_at"] is not None
    assert "answered with a refund" in row["last_error"]
    with psycopg.connect(db_url) as conn:
        assert entries(conn) == []
    # reconcile: the expected order is unpaid, whatever the checkout recorded as its id
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE expected_orders SET pay_order_id = 'RP-SOME-REFUND' WHERE mch_order_no = 'X-1'")
        conn.commit()
        conn.execute("INSERT INTO orders (pay_order_id, mch_id, pay_type, original_order_id, currency, amount, status,"
                     " state, fingerprint, source) VALUES ('RP-SOME-REFUND', %s, 'refund', 'PC-X', 'CAD', 500, 2,"
                     " 'parked', 'f', 'notify')", (MCH,))
        conn.commit()
        result = reconcile(conn, datetime.now(TORONTO).date(), TORONTO)
    assert [m.subject for m in result.mismatches if m.cls == "expected_not_paid"] == [f"{MCH}/X-1"]


# ------------------------------------------------------------------ 6. races end as outcomes

def test_a_pay_and_a_refund_with_one_id_at_the_same_moment_end_as_posted_and_conflict(db_url):
    with psycopg.connect(db_url) as conn:
        post(conn, v3_pay("PC0", 100_000))
    for i in range(25):
        oid = f"X{i}"
        notifies = [v3_pay(oid, 1000), v3_refund(oid, "PC0", 300)]
        start = threading.Barrier(2)
        outcomes: list[object] = []

        def run(params: dict) -> None:
            with psycopg.connect(db_url) as c:
                start.wait()
                try:
                    outcomes.append(post(c, params).outcome)
                except Exception as exc:  # noqa: BLE001 - the assertion below names it
                    outcomes.append(exc)

        threads = [threading.Thread(target=run, args=(n,)) for n in notifies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(map(str, outcomes)) == sorted([str(Outcome.POSTED), str(Outcome.CONFLICT)]), outcomes
    with psycopg.connect(db_url) as conn:
        assert run_checks(conn).ok
        n = conn.execute("SELECT count(*) FROM journal_entries WHERE pay_order_id LIKE 'X%%'").fetchone()[0]
    assert n == 25


def test_ingest_reports_a_line_postgresql_refuses_and_goes_on(conn):
    lines = [json.dumps(v3_pay("PC1", 100)), json.dumps(v3_pay("PC2", 200, invoiceNum="a\x00b")),
             json.dumps(v3_pay("PC3", 300))]
    summary = ingest_lines(conn, lines, MERCHANTS, TZ)
    assert dict(summary.counts) == {"posted": 2, "rejected": 1}
    (bad,) = summary.details
    assert bad["line"] == 2 and bad["pay_order_id"] == "PC2" and "PC2" in bad["reason"]
    assert [e[0] for e in entries(conn)] == ["PC1", "PC3"]


def test_replay_reports_a_row_postgresql_refuses_and_goes_on(conn, settings):
    bad = put(conn, settings, v3_pay("PC2", 200, invoiceNum="a\x00b"))
    good = put(conn, settings, v3_pay("PC3", 300))
    results = process.replay(conn, [bad, good], settings)
    assert isinstance(results[0], PermanentError) and "PC2" in str(results[0])
    assert results[1].outcome == "posted"
    assert conn.execute("SELECT state FROM inbox WHERE id = %s", (bad,)).fetchone() == ("failed",)
    conn.rollback()


# ------------------------------------------------------------------ 7. a parked query resolved for nothing

def test_a_parked_refund_whose_original_is_itself_a_refund_runs_to_give_up_and_alerts(env_factory, db_url):  # noqa: F811
    env = env_factory(policy=NotifyPolicy(seed=15, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    paid = env.create(mchId=MCH, mchOrderNo="P-7", amount=2000, status=2)
    refund = env.ctl.post("/v3/cc_refund", json=signed({
        "mchId": MCH, "mchRefundNo": "R-7", "loginName": "jack", "refundAmount": 500,
        "payOrderId": paid["payOrderId"]}, KEY)).json()["retData"]
    # a refund notify naming that refund as its original: parked, its "original" is queried
    with psycopg.connect(db_url) as conn:
        r = post(conn, v3_refund("RP-ODD", refund["payOrderId"], 100))
        assert r.outcome is Outcome.PARKED
    schedule = Schedule(give_up_after=timedelta(hours=1))
    t, passes = now, 0
    while True:
        env.sweep(t, schedule)
        passes += 1
        with psycopg.connect(db_url) as conn:
            row = conn.execute("SELECT resolved_at, gave_up_at, last_error FROM parked_queries").fetchone()
        if row[1] is not None or passes > 40:
            break
        assert row[0] is None, "resolved although its refund is still parked"
        t += timedelta(minutes=10)
    assert row[0] is None and row[1] is not None and "answered with a refund" in row[2]
    with psycopg.connect(db_url) as conn:
        assert order_state(conn, "RP-ODD")[0] == "parked"
        sink, calls = _hook()
        assert alert_give_ups(conn, sink) == 1
        assert sink.deliver_pending(conn) == (1, 0)
    assert refund["payOrderId"] in calls[0]["text"]


# ------------------------------------------------------------------ 8. sums cannot overflow

def test_an_amount_beyond_the_ceiling_is_a_validation_error_naming_the_field(conn):
    for field, params in [("amount", v3_pay("PC1", 2**62)), ("refundable", v3_pay("PC2", 100, refundable=10**12)),
                          ("amount", v1_pay("P1", 10**30))]:
        with pytest.raises(ValidationError) as exc:
            post(conn, params)
        assert exc.value.field == field and "IOTLEDGER_MAX_AMOUNT_CENTS" in str(exc.value)
    assert post(conn, v3_pay("PC3", 1_000_000_000)).outcome is Outcome.POSTED  # the ceiling itself is fine
    assert entries(conn) == [("PC3", "pay", 1_000_000_000, None)]


def test_a_status_out_of_int_range_is_a_validation_error(conn):
    with pytest.raises(ValidationError, match="status"):
        post(conn, v3_pay("PC1", 100, status=2**31))


def _bulk_day(conn: psycopg.Connection, n: int, amount: int, when: datetime) -> None:
    """n pays of `amount` and one refund of each, written straight to the ledger (the triggers still check)."""
    conn.execute("INSERT INTO accounts (mch_id, currency, kind) SELECT %s, 'CAD', k FROM "
                 "unnest(ARRAY['clearing','sales','refunds']) k ON CONFLICT DO NOTHING", (MCH,))
    for kind, prefix, debit, credit, original in [("pay", "PB", "clearing", "sales", False),
                                                  ("refund", "RB", "refunds", "clearing", True)]:
        conn.execute(
            """INSERT INTO orders (pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount,
                                   status, state, fingerprint, source, pay_succ_time)
               SELECT %(p)s || g, %(m)s, 'MO' || %(p)s || g, %(k)s, CASE WHEN %(o)s THEN 'PB' || g END, 'CAD',
                      %(a)s, 2, 'posted', 'f', 'ingest', %(w)s FROM generate_series(1, %(n)s) g""",
            {"p": prefix, "m": MCH, "k": kind, "o": original, "a": amount if kind == "pay" else amount // 2,
             "w": when, "n": n})
        conn.execute(
            """WITH e AS (INSERT INTO journal_entries (pay_order_id, kind, original_order_id, mch_id, currency, amount,
                                                     occurred_at)
                          SELECT %(p)s || g, %(k)s, CASE WHEN %(o)s THEN 'PB' || g END, %(m)s, 'CAD', %(a)s, %(w)s
                          FROM generate_series(1, %(n)s) g RETURNING id, amount)
               INSERT INTO postings (entry_id, account_id, mch_id, currency, amount)
               SELECT e.id, a.id, %(m)s, 'CAD', CASE WHEN a.kind = %(d)s THEN e.amount ELSE -e.amount END
               FROM e JOIN accounts a ON a.mch_id = %(m)s AND a.currency = 'CAD' AND a.kind IN (%(d)s, %(c)s)""",
            {"p": prefix, "m": MCH, "k": kind, "o": original, "a": amount if kind == "pay" else amount // 2,
             "w": when, "n": n, "d": debit, "c": credit})
    conn.execute("""INSERT INTO expected_orders (mch_id, mch_order_no, pay_order_id, amount, currency, channel, family,
                                                 created_at, resolved_at, resolution)
                    SELECT %(m)s, 'MOPB' || g, 'PB' || g, %(a)s, 'CAD', 'PF_CC', 'v3', %(w)s, %(w)s, 'paid'
                    FROM generate_series(1, %(n)s) g""", {"m": MCH, "a": amount, "w": when, "n": n})
    conn.commit()


@pytest.mark.slow
def test_reconcile_and_export_exit_0_on_a_day_of_the_largest_allowed_amounts(db_url, redis_url, conn, tmp_path):
    # 10,000 pays at the largest amount the configuration allows: the day's gross is 10**19 cents,
    # beyond int64 (9.2 * 10**18). Every sum must be numeric or a Python integer.
    from worker.config import MAX_AMOUNT_LIMIT

    when = datetime(2026, 11, 20, 15, 0, tzinfo=TORONTO)
    _bulk_day(conn, 10_000, MAX_AMOUNT_LIMIT, when)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
    env.update(DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_SETTLEMENT_TZ="America/Toronto",
               IOTLEDGER_MAX_AMOUNT_CENTS=str(MAX_AMOUNT_LIMIT))
    cmd = [str(Path(sys.executable).parent / "iotledger")]
    rec = subprocess.run([*cmd, "reconcile", "--date", "2026-11-20", "--json"], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert rec.returncode == 0, rec.stdout[-2000:] + rec.stderr[-2000:]
    exp = subprocess.run([*cmd, "export", "--date", "2026-11-20"], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert exp.returncode == 0, exp.stderr[-2000:]
    summary = (tmp_path / "reports" / "2026-11-20" / "summary-2026-11-20.csv").read_text()
    gross, refunds = 10_000 * MAX_AMOUNT_LIMIT, 10_000 * (MAX_AMOUNT_LIMIT // 2)
    assert gross > 2**63
    total = [line for line in summary.splitlines() if '"total"' in line][0]
    assert f",{gross},{refunds},{gross - refunds}," in total, total
    chk = subprocess.run([*cmd, "check", "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert chk.returncode == 0, chk.stderr[-2000:]
    assert json.loads(chk.stdout)["currencies"]["CAD"]["net_cents"] == gross - refunds


# ------------------------------------------------------------------ found in review

def test_a_pay_with_the_id_of_a_parked_refund_is_a_conflict_not_a_replacement(conn):
    assert post(conn, v3_refund("X30", "P30", 700)).outcome is Outcome.PARKED
    assert post(conn, v3_pay("X30", 700)).outcome is Outcome.CONFLICT
    assert order_state(conn, "X30")[0] == "parked"
    released = post(conn, v3_pay("P30", 1000)).released
    assert [r.outcome for r in released] == [Outcome.POSTED]
    assert entries(conn) == [("P30", "pay", 1000, None), ("X30", "refund", 700, "P30")]


def test_a_pending_order_moving_to_another_merchant_is_a_conflict(conn):
    from tests.factories import KEY2, MCH2

    post(conn, v3_pay("PC1", 1000, status=0))
    assert post(conn, v3_pay("PC1", 1000, mch=MCH2, key=KEY2)).outcome is Outcome.CONFLICT
    assert entries(conn) == []


def test_a_refund_failed_after_its_success_is_not_reposted_by_a_resent_success(conn):
    post(conn, v3_refund("R10", "P10", 500))
    assert post(conn, v3_refund("R10", "P10", 500, status=4)).outcome is Outcome.FAILED
    again = post(conn, v3_refund("R10", "P10", 500))  # IOTPay re-sends the old success notify
    assert again.outcome is Outcome.STATUS_REGRESSION
    assert order_state(conn, "R10")[0] == "failed"
    assert post(conn, v3_pay("P10", 1000)).released == ()
    assert refundable(conn, "P10") == (0, 1000)
    assert [(r["recorded_status"], r["received_status"]) for r in _regressions(conn)] == [(2, 4), (4, 2)]


def test_the_sweep_settles_a_merchant_order_by_its_posted_pay_not_a_failed_one(env_factory, db_url):  # noqa: F811
    env = env_factory(policy=NotifyPolicy(seed=16, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    with psycopg.connect(db_url) as conn:
        for oid, status in (("F20", 9), ("P20", 2), ("F21", 9)):
            assert post(conn, v3_pay(oid, 800, mch_order_no="MO-20", status=status)).outcome in (
                Outcome.FAILED, Outcome.POSTED)
    env.expect({"mchId": MCH, "mchOrderNo": "MO-20", "amount": 800, "currency": "CAD", "channel": "PF_CC"},
               now - timedelta(minutes=5))
    report = env.sweep(now)
    assert report.settled == 1 and env.queries() == 0
    row = expected_row(db_url, "MO-20")
    assert (row["resolution"], row["pay_order_id"]) == ("paid", "P20")
