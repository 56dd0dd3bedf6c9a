"""Property: whatever the gateway says, in whatever order, the ledger follows it and loses nothing.

Random interleavings of notifies (through the inbox and the worker's own processing) and sweep
answers (posted with source "query") for a few orders: statuses moving both ways, content
changing while pending, refunds before their pays, refunds without payType, duplicates. After
every run:

* `check` holds;
* no refund was booked as a pay;
* every acknowledged notify ended posted, a duplicate, rejected with a reason, failed at the
  gateway, or is listed by reconcile;
* every reversal (a final or success record contradicted by a later non-success status) is
  recorded as a status_regression (asserted event by event); a byte-identical redelivery of a
  notify already stored is that notify again, already processed, and states nothing new.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import KEY, MERCHANTS_JSON, v3_pay, v3_refund
from tests.ledger_helpers import TZ
from tests.test_pipeline_process import put
from tests.test_reconcile_seed import TORONTO
from worker.config import Settings
from worker.errors import PermanentError
from worker.iotpay.notify import parse_params
from worker.iotpay.signature import signed
from worker.iotpay.status import classify
from worker.ledger.checks import run_checks
from worker.ledger.posting import fingerprint, post_notify
from worker.pipeline import process
from worker.reports.reconcile import reconcile

_run = itertools.count()
# order key -> (pay type, original key, amounts it may carry)
ORDERS = {"P1": ("pay", None, (1000, 1150)), "P2": ("pay", None, (500, 500)),
          "R1": ("refund", "P1", (300, 400)), "R2": ("refund", "P1", (800, 800)), "R3": ("refund", "P2", (200, 250))}
STATUSES = st.sampled_from([2, 2, 2, 3, 0, 1, 9, 4, 7])
EVENTS = st.tuples(st.sampled_from(sorted(ORDERS)), STATUSES, st.integers(0, 1),
                   st.sampled_from(["refund", "refund", "refund", None, "pay"]), st.sampled_from(["notify", "query"]))


def _params(prefix: str, key: str, status: int, variant: int, pay_type: str | None, when: str) -> dict[str, Any]:
    kind, original, amounts = ORDERS[key]
    oid = f"{prefix}{key}"
    if kind == "pay":
        return v3_pay(oid, amounts[variant], status=status, when=when, mch_order_no=oid)
    params = v3_refund(oid, f"{prefix}{original}", amounts[variant], status=status, when=when)
    if pay_type != "refund":
        params = {k: v for k, v in params.items() if k not in ("payType", "sign")}
        if pay_type is not None:
            params["payType"] = pay_type
        params = signed(params, KEY)
    return params


def _order(conn: psycopg.Connection, oid: str) -> tuple | None:
    row = conn.execute("SELECT state, status, fingerprint FROM orders WHERE pay_order_id = %s", (oid,)).fetchone()
    conn.rollback()
    return row


def _expects_regression(before: tuple | None, notify_fp: str, status: int) -> bool:
    if before is None or classify(status).value == "success":
        return False
    state, _, fp = before
    if state in ("posted", "rejected"):
        return fp == notify_fp
    if state == "parked":
        return True
    return state == "failed" and classify(status).value != "failed"


@pytest.fixture
def app_settings(db_url, redis_url, queue_name) -> Settings:
    return Settings.from_env({"DATABASE_URL": db_url, "REDIS_URL": redis_url, "IOTPAY_MERCHANTS": MERCHANTS_JSON,
                              "IOTLEDGER_QUEUE": queue_name})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(EVENTS, min_size=1, max_size=14))
def test_the_ledger_follows_the_gateway_and_loses_nothing(conn, app_settings, events):
    prefix = f"E{next(_run)}-"
    now = datetime.now(timezone.utc)
    when = now.astimezone(TZ).strftime("%Y-%m-%d %H:%M:%S")
    stored: set[int] = set()
    for key, status, variant, pay_type, source in events:
        params = _params(prefix, key, status, variant, pay_type, when)
        oid = f"{prefix}{key}"
        before = _order(conn, oid)
        try:
            notify = parse_params(params, TZ)
        except PermanentError:
            notify = None
        redelivered = False
        if source == "notify":
            row = put(conn, app_settings, params, now=now)
            # a byte-identical body is the same notify delivered again: the inbox keeps its first row,
            # which was processed in its time, so the redelivery states nothing new
            redelivered = row in stored
            stored.add(row)
            try:
                handled = process.handle(conn, row, app_settings)
            except PermanentError:
                handled = None
            if redelivered and handled is not None:
                assert handled.skipped, (oid, row)
        elif notify is not None:  # a sweep answer; one that does not parse is the query's error, not posted
            post_notify(conn, notify, source="query")
        if notify is not None and not redelivered and _expects_regression(before, fingerprint(notify), status):
            (n,) = conn.execute("SELECT count(*) FROM ledger_exceptions WHERE dedup_key = %s",
                                (f"status_regression:{oid}:{before[1]}:{status}",)).fetchone()
            conn.rollback()
            assert n == 1, f"reversal of {oid} ({before} -> status {status}) not recorded"

    assert run_checks(conn).ok
    # no refund booked as a pay, and every refund entry names its pay
    booked = conn.execute("SELECT pay_order_id, kind, original_order_id FROM journal_entries WHERE pay_order_id LIKE %s",
                          (prefix + "%",)).fetchall()
    conn.rollback()
    for oid, kind, original in booked:
        assert (kind == "pay") == (ORDERS[oid[len(prefix):]][0] == "pay"), (oid, kind)
        if kind != "pay":
            assert original == f"{prefix}{ORDERS[oid[len(prefix):]][1]}"

    # every acknowledged notify: posted, a duplicate / failed / rejected with a reason, or listed by reconcile
    listed: set[str] = set()
    for day in {now.astimezone(TORONTO).date(), datetime.now(TORONTO).date()}:
        listed |= {m.subject for m in reconcile(conn, day, TORONTO).mismatches}
    rows = conn.execute(
        """SELECT i.id, i.pay_order_id, i.state, i.outcome, i.reason, o.state AS order_state
           FROM inbox i LEFT JOIN orders o ON o.pay_order_id = i.pay_order_id
           WHERE i.pay_order_id LIKE %s""", (prefix + "%",)).fetchall()
    conn.rollback()
    for inbox_id, oid, state, outcome, reason, order_state in rows:
        if order_state == "posted":
            continue
        if state == "failed":
            assert f"inbox/{inbox_id}" in listed and reason, (inbox_id, oid, reason)
        elif order_state in ("failed", "rejected"):
            assert state == "done" and outcome in ("duplicate", "failed", "rejected", "status_regression",
                                                   "conflict", "pending", "unknown_status", "parked")
            if order_state == "rejected":
                assert oid in listed  # refund_beyond_original / ledger_exception, with its reason
        else:
            assert oid in listed, (oid, state, outcome, order_state)
