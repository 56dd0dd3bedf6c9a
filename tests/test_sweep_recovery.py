"""The sweep against the simulator over real HTTP, with real PostgreSQL and the ledger's own posting code.

Time is driven: the sweep takes `now`, the simulator's clock is set over its control API, so
"completes after 40 s" and "given up after the schedule" run in milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from structlog.testing import capture_logs

from tests.factories import MCH, MCH2, MERCHANTS, MERCHANTS_JSON
from tests.ledger_helpers import by_order, entries
from worker.gateway.client import GatewayClient
from worker.gateway.expected import ExpectedOrder, record
from worker.gateway.schedule import Schedule
from worker.gateway.sweep import SweepReport, next_due, open_pool, sweep_once
from worker.iotpay.body import decode_body
from worker.ledger.checks import run_checks
from worker.ledger.intake import verify_and_post
from worker.simulator import NotifyPolicy, SimClock, Simulator
from worker.simulator.threaded import ThreadedServer

TZ = ZoneInfo("America/Vancouver")
T0 = datetime(2026, 3, 2, 17, 0, 0, tzinfo=timezone.utc)


def receiver(db_url: str):
    """A notify endpoint that posts through the ledger's verify_and_post and acknowledges."""

    def app(environ, start_response):
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        body = decode_body(raw, environ.get("CONTENT_TYPE"))
        with psycopg.connect(db_url) as conn:
            verify_and_post(conn, body, MERCHANTS, TZ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"success"]

    return app


class Env:
    """Simulator and notify receiver on real sockets, a gateway client, a pool, and a control client."""

    def __init__(self, db_url: str, *, policy: NotifyPolicy, clock: SimClock | None = None) -> None:
        self.db_url = db_url
        self.sim = Simulator(MERCHANTS, seed=7, policy=policy, gateway_tz=TZ, clock=clock)
        self.sim_server = ThreadedServer(self.sim)
        self.recv_server = ThreadedServer(receiver(db_url))
        self.notify_url = f"{self.recv_server.url}/iotpay/notify"
        self.ctl = httpx.Client(base_url=self.sim_server.url, timeout=10)
        self.client = GatewayClient(MERCHANTS, v3_base_url=f"{self.sim_server.url}/v3",
                                    v1_base_url=f"{self.sim_server.url}/v1", gateway_tz=TZ, sleep=lambda s: None)
        self.pool = open_pool(db_url)

    def create(self, **spec) -> dict:
        spec.setdefault("notifyUrl", self.notify_url)
        r = self.ctl.post("/_sim/orders", json=spec)
        assert r.status_code == 200, r.text
        return r.json()

    def expect(self, order: dict, created_at: datetime, schedule: Schedule | None = None, *, with_id: bool = False) -> None:
        exp = ExpectedOrder.from_dict({"mchId": order["mchId"], "mchOrderNo": order["mchOrderNo"],
                                       "amount": order["amount"], "currency": order["currency"],
                                       "channel": order.get("channel") or order.get("channelId"),
                                       "createdAt": created_at.isoformat(),
                                       **({"payOrderId": order["payOrderId"]} if with_id else {})})
        with psycopg.connect(self.db_url) as conn:
            record(conn, exp, schedule)

    def queries(self) -> int:
        reqs = self.ctl.get("/_sim/stats").json()["requests"]
        return reqs.get("cc_query", 0) + reqs.get("query_order", 0)

    def sweep(self, now: datetime, schedule: Schedule | None = None, concurrency: int = 8, **kwargs) -> SweepReport:
        return sweep_once(self.pool, self.client, now=now, schedule=schedule, concurrency=concurrency, **kwargs)

    def close(self) -> None:
        self.pool.close()
        self.client.close()
        self.ctl.close()
        self.sim.sender.close()
        self.sim_server.close()
        self.recv_server.close()


@pytest.fixture
def env_factory(db_url: str) -> Iterator:
    made: list[Env] = []

    def make(**kwargs) -> Env:
        made.append(Env(db_url, **kwargs))
        return made[-1]

    yield make
    for e in made:
        e.close()


def expected_row(db_url: str, mch_order_no: str) -> dict:
    with psycopg.connect(db_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM expected_orders WHERE mch_order_no = %s", (mch_order_no,)).fetchone()


def ledger_ok(db_url: str) -> dict:
    with psycopg.connect(db_url) as conn:
        report = run_checks(conn)
    assert report.ok, report.violations
    return report.currencies


def test_dropped_notify_is_recovered_by_the_sweep(env_factory, db_url):
    env = env_factory(policy=NotifyPolicy(seed=1, drop_rate=1.0))  # every automatic notify is lost
    now = datetime.now(timezone.utc)
    delivered = env.create(mchId=MCH, mchOrderNo="A-1", amount=2599, status=2)
    lost = env.create(mchId=MCH, mchOrderNo="A-2", amount=1250, status=2)
    v1_lost = env.create(mchId=MCH2, mchOrderNo="W-1", amount=880, currency="USD", channel="WX_APP", status=3)
    assert env.ctl.post(f"/_sim/orders/{delivered['payOrderId']}/notify").status_code == 200  # this one gets through
    assert env.sim.sender.wait_idle(10)
    drops = [d for d in env.ctl.get("/_sim/deliveries").json()["deliveries"] if d["outcome"] == "dropped"]
    assert {d["payOrderId"] for d in drops} == {delivered["payOrderId"], lost["payOrderId"], v1_lost["payOrderId"]}
    assert set(by_order(entries(db_url))) == {delivered["payOrderId"]}

    for order in (delivered, lost, v1_lost):
        env.expect(order, now - timedelta(minutes=5))
    report = env.sweep(now)

    assert (report.settled, report.due, report.queried, report.paid) == (1, 2, 2, 2)
    assert env.queries() == 2  # the order the ledger already had was not asked about
    assert by_order(entries(db_url)) == {delivered["payOrderId"]: [("pay", 2599)], lost["payOrderId"]: [("pay", 1250)],
                                         v1_lost["payOrderId"]: [("pay", 880)]}
    row = expected_row(db_url, "A-2")
    assert (row["resolution"], row["pay_order_id"], row["last_status"], row["next_query_at"]) == \
        ("paid", lost["payOrderId"], 2, None)
    assert ledger_ok(db_url)["CAD"]["net"] == 2599 + 1250
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT source FROM orders WHERE pay_order_id = %s", (lost["payOrderId"],)).fetchone()[0] == "query"
    # a second pass finds nothing due and asks nothing
    again = env.sweep(now + timedelta(hours=1))
    assert (again.due, env.queries()) == (0, 2)


def test_answers_recorded_in_batches_are_each_recorded_as_when_alone(env_factory, db_url):
    """Five answers recorded two at a time (three statements): every order's row as one query gives it."""
    env = env_factory(policy=NotifyPolicy(seed=11, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    statuses = {"B-PAID-1": 2, "B-PAID-2": 2, "B-WAIT-1": 0, "B-WAIT-2": 0, "B-FAIL": 9}
    orders = {no: env.create(mchId=MCH, mchOrderNo=no, amount=700 + i, status=status)
              for i, (no, status) in enumerate(statuses.items())}
    for order in orders.values():
        env.expect(order, now - timedelta(minutes=5))
    report = env.sweep(now, record_batch=2)

    assert (report.due, report.queried, report.paid, report.pending, report.failed, report.errors) == (5, 5, 2, 2, 1, 0)
    for no, order in orders.items():
        row = expected_row(db_url, no)
        resolution = {2: "paid", 9: "failed", 0: None}[statuses[no]]
        assert (row["query_count"], row["last_queried_at"], row["last_status"], row["last_error"]) == \
            (1, now, statuses[no], None), no
        assert (row["resolution"], row["pay_order_id"]) == (resolution, order["payOrderId"]), no
        assert row["next_query_at"] == (None if resolution else now + timedelta(minutes=1)), no
        assert row["resolved_at"] == (now if resolution else None) and row["gave_up_at"] is None, no
    assert set(by_order(entries(db_url))) == {orders["B-PAID-1"]["payOrderId"], orders["B-PAID-2"]["payOrderId"]}
    with psycopg.connect(db_url) as conn:
        counts = conn.execute("SELECT counts FROM sweep_runs ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert (counts["queried"], counts["paid"], counts["pending"], counts["failed"]) == (5, 2, 2, 1)


def test_pos_order_completing_after_40s_is_found_by_2s_polling(env_factory, db_url):
    clock = SimClock(T0)
    env = env_factory(policy=NotifyPolicy(seed=2), clock=clock)
    order = env.create(mchId=MCH, mchOrderNo="POS-1", amount=4321, channel="CC_PAX", status=0, completeAfter=40)
    env.expect(order, T0, with_id=True)

    now, passes = T0, 0
    while expected_row(db_url, "POS-1")["resolved_at"] is None:
        due = next_due(env.pool)
        assert due is not None, "the order was dropped from the schedule before it completed"
        now = due
        env.ctl.post("/_sim/clock", json={"now": now.isoformat()})
        env.sweep(now)
        passes += 1
        assert passes < 100, "no endless loop"

    row = expected_row(db_url, "POS-1")
    assert now == T0 + timedelta(seconds=40)  # polled every 2 s: found at the first query after completion
    assert row["query_count"] == 20 and passes == 20
    assert row["resolution"] == "paid"
    assert by_order(entries(db_url)) == {order["payOrderId"]: [("pay", 4321)]}
    with psycopg.connect(db_url) as conn:
        occurred = conn.execute("SELECT occurred_at FROM journal_entries").fetchone()[0]
    assert occurred == T0 + timedelta(seconds=40)  # paySuccTime from the gateway, not the sweep's clock


def test_order_that_never_completes_is_given_up_and_alerted_once(env_factory, db_url):
    clock = SimClock(T0)
    env = env_factory(policy=NotifyPolicy(seed=3), clock=clock)
    schedule = Schedule(give_up_after=timedelta(hours=2))
    order = env.create(mchId=MCH, mchOrderNo="POS-STUCK", amount=999, channel="CC_PAX", status=1)
    env.expect(order, T0, schedule)

    # the schedule itself, walked on paper: every query time up to the give-up age
    planned, t = [], schedule.first_query_at(T0, "CC_PAX")
    while t is not None:
        planned.append(t)
        t = schedule.next_query_at(T0, t, "CC_PAX")
    assert planned[-1] == T0 + timedelta(hours=2) and len(planned) < 60

    seen, gave_up_logs = [], []
    with capture_logs() as logs:
        while (due := next_due(env.pool)) is not None:
            seen.append(due)
            env.ctl.post("/_sim/clock", json={"now": due.isoformat()})
            env.sweep(due, schedule)
            assert len(seen) <= len(planned), "endless loop"
        gave_up_logs = [e for e in logs if e["event"] == "sweep.gave_up"]
    assert seen == planned
    assert env.queries() == len(planned)
    row = expected_row(db_url, "POS-STUCK")
    assert row["gave_up_at"] == T0 + timedelta(hours=2) and row["next_query_at"] is None
    assert row["resolved_at"] is None and row["last_status"] == 1 and row["query_count"] == len(planned)
    assert len(gave_up_logs) == 1
    assert gave_up_logs[0]["mch_order_no"] == "POS-STUCK" and gave_up_logs[0]["amount"] == 999
    # never asked again, whatever the clock says
    later = env.sweep(T0 + timedelta(days=3), schedule)
    assert (later.due, env.queries()) == (0, len(planned))
    with psycopg.connect(db_url) as conn:
        state = conn.execute("SELECT state FROM orders WHERE pay_order_id = %s", (order["payOrderId"],)).fetchone()[0]
    assert state == "pending" and by_order(entries(db_url)) == {}


def test_failed_order_is_recorded_and_not_queried_again(env_factory, db_url):
    env = env_factory(policy=NotifyPolicy(seed=4))
    now = datetime.now(timezone.utc)
    order = env.create(mchId=MCH, mchOrderNo="F-1", amount=500, status=9)
    env.expect(order, now - timedelta(minutes=3))
    report = env.sweep(now)
    assert (report.failed, report.paid) == (1, 0)
    row = expected_row(db_url, "F-1")
    assert (row["resolution"], row["last_status"], row["next_query_at"]) == ("failed", 9, None)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT state FROM orders WHERE pay_order_id = %s", (order["payOrderId"],)).fetchone()[0] == "failed"
    assert by_order(entries(db_url)) == {}
    env.sweep(now + timedelta(hours=5))
    assert env.queries() == 1


def test_notify_and_sweep_at_the_same_moment_post_once(env_factory, db_url):
    env = env_factory(policy=NotifyPolicy(seed=5, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    orders = [env.create(mchId=MCH, mchOrderNo=f"R-{i}", amount=100 + i, status=2) for i in range(40)]
    for o in orders:
        env.expect(o, now - timedelta(minutes=2), with_id=True)
    bodies = []
    for o in orders:
        nb = env.ctl.get(f"/_sim/orders/{o['payOrderId']}/notify-body").json()
        bodies.append((nb["body"].encode(), nb["contentType"]))

    start = threading.Barrier(5)
    results: dict[str, object] = {}

    def notifier(part: list) -> None:
        with httpx.Client(timeout=30) as http:
            start.wait()
            for body, ctype in part:
                assert http.post(env.notify_url, content=body, headers={"Content-Type": ctype}).text == "success"

    def sweeper() -> None:
        start.wait()
        results["report"] = env.sweep(now, concurrency=8)

    threads = [threading.Thread(target=notifier, args=(bodies[i::4],)) for i in range(4)]
    threads.append(threading.Thread(target=sweeper))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    got = by_order(entries(db_url))
    assert got == {o["payOrderId"]: [("pay", o["amount"])] for o in orders}  # one entry each, no more
    assert ledger_ok(db_url)["CAD"]["net"] == sum(o["amount"] for o in orders)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_exceptions").fetchone()[0] == 0
        unresolved = conn.execute("SELECT count(*) FROM expected_orders WHERE resolved_at IS NULL").fetchone()[0]
    report = results["report"]
    assert report.settled + report.paid == len(orders) and unresolved == 0


def test_parked_refund_gets_its_original_queried_and_both_post(env_factory, db_url):
    env = env_factory(policy=NotifyPolicy(seed=6, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    pay = env.create(mchId=MCH, mchOrderNo="P-1", amount=10_000, status=2)  # its notify is lost
    refund = env.client.cc_refund(MCH, pay_order_id=pay["payOrderId"], mch_refund_no="RF-1", refund_amount=2_500)
    void_pay = env.create(mchId=MCH2, mchOrderNo="P-2", amount=700, currency="USD", channel="ALIPAY_MOBILE", status=2)
    v1_refund = env.client.refund_order(MCH2, pay_order_id=void_pay["payOrderId"], mch_refund_no="RF-2",
                                        refund_amount=700, currency="USD")
    for r in (refund, v1_refund):  # only the refunds' notifies arrive
        env.ctl.post(f"/_sim/orders/{r.notify.pay_order_id}/notify")
    assert env.sim.sender.wait_idle(10)
    with psycopg.connect(db_url) as conn:
        states = dict(conn.execute("SELECT pay_order_id, state FROM orders").fetchall())
    assert states == {refund.notify.pay_order_id: "parked", v1_refund.notify.pay_order_id: "parked"}

    report = env.sweep(now)

    assert report.paid == 2 and report.released == 2
    assert by_order(entries(db_url)) == {
        pay["payOrderId"]: [("pay", 10_000)], refund.notify.pay_order_id: [("refund", 2_500)],
        void_pay["payOrderId"]: [("pay", 700)], v1_refund.notify.pay_order_id: [("refund", 700)],
    }
    with psycopg.connect(db_url) as conn:
        balances = dict(conn.execute("SELECT pay_order_id, refundable FROM pay_balances").fetchall())
        done = conn.execute("SELECT count(*) FROM parked_queries WHERE resolved_at IS NOT NULL").fetchone()[0]
    assert balances == {pay["payOrderId"]: 7_500, void_pay["payOrderId"]: 0}
    assert done == 2
    totals = ledger_ok(db_url)
    assert totals["CAD"]["net"] == 7_500 and totals["USD"]["net"] == 0
    assert env.sweep(now + timedelta(hours=1)).due == 0


def test_gateway_errors_are_counted_and_retried_next_time(env_factory, db_url):
    env = env_factory(policy=NotifyPolicy(seed=8, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    order = env.create(mchId=MCH, mchOrderNo="E-1", amount=321, status=2)
    env.expect(order, now - timedelta(minutes=2))
    env.ctl.post("/_sim/faults", json={"badSign": 1})
    first = env.sweep(now)
    assert (first.errors, first.paid) == (1, 0)
    row = expected_row(db_url, "E-1")
    assert "sign" in row["last_error"] and row["next_query_at"] == now + timedelta(minutes=1)
    assert by_order(entries(db_url)) == {}  # a forged answer posts nothing
    second = env.sweep(now + timedelta(minutes=1))
    assert second.paid == 1 and by_order(entries(db_url)) == {order["payOrderId"]: [("pay", 321)]}


def test_two_sweeps_at_once_do_not_both_run(env_factory, db_url):
    env = env_factory(policy=NotifyPolicy(seed=9))
    with env.pool.connection() as conn:
        conn.execute("SELECT pg_advisory_lock(7201944105)")
        try:
            report = env.sweep(datetime.now(timezone.utc))
        finally:
            conn.execute("SELECT pg_advisory_unlock(7201944105)")
            conn.commit()
    assert report.skipped and report.queried == 0


def test_sweep_for_polls_pos_orders_between_clock_ticks(env_factory, db_url):
    """`iotledger sweep --for 55`: passes back to back, sleeping until the next query is due."""
    sim_clock = SimClock(T0)
    env = env_factory(policy=NotifyPolicy(seed=10), clock=sim_clock)
    order = env.create(mchId=MCH, mchOrderNo="POS-F", amount=1500, channel="CC_PAX", status=0, completeAfter=9)
    env.expect(order, T0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the test's clock: sleeping moves both clocks, instantly
        slept.append(seconds)
        sim_clock.advance(seconds)

    from worker.gateway.sweep import sweep_for

    reports = sweep_for(env.pool, env.client, seconds=55, clock=sim_clock.now, sleep=sleep)
    assert [r.paid for r in reports].count(1) == 1
    assert T0 + timedelta(seconds=53) <= reports[-1].now <= T0 + timedelta(seconds=55)  # kept watching till the end
    assert slept[:5] == [2.0, 2.0, 2.0, 2.0, 2.0]  # woke exactly when the next poll was due
    row = expected_row(db_url, "POS-F")
    assert row["resolution"] == "paid" and row["query_count"] == 5  # polls at 2, 4, 6, 8, 10 s
    assert by_order(entries(db_url)) == {order["payOrderId"]: [("pay", 1500)]}


def test_concurrency_is_bounded_and_every_query_passes_the_merchant_rate_limit(env_factory, db_url):
    from worker.gateway.ratelimit import RateLimiter

    class CountingLimiter(RateLimiter):
        def __init__(self):
            super().__init__(1000.0)
            self.calls: list[str] = []

        def acquire(self, key: str) -> float:
            self.calls.append(key)
            return super().acquire(key)

    env = env_factory(policy=NotifyPolicy(seed=12, drop_rate=1.0))
    now = datetime.now(timezone.utc)
    for i in range(24):
        order = env.create(mchId=MCH if i % 3 else MCH2, mchOrderNo=f"C-{i}", amount=10 + i, status=2 if i % 2 else 0)
        env.expect(order, now - timedelta(minutes=2))
    env.ctl.post("/_sim/faults", json={"latency": 0.05})
    limiter = CountingLimiter()
    report = sweep_once(env.pool, env.client, now=now, concurrency=3, limiter=limiter)
    assert (report.queried, report.paid, report.pending) == (24, 12, 12)
    assert env.ctl.get("/_sim/stats").json()["maxInFlight"] == 3
    assert sorted(limiter.calls) == sorted([MCH] * 16 + [MCH2] * 8)
    assert len(by_order(entries(db_url))) == 12


def test_cli_expect_then_sweep_posts_a_lost_payment(env_factory, db_url, redis_url, tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = env_factory(policy=NotifyPolicy(seed=13, drop_rate=1.0))
    order = env.create(mchId=MCH2, mchOrderNo="CLI-9", amount=4200, currency="USD", channel="UPI_APP", status=2)
    proc_env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_DATA_DIR=str(tmp_path),
                    IOTPAY_MERCHANTS=MERCHANTS_JSON,
                    IOTPAY_V3_BASE_URL=f"{env.sim_server.url}/v3", IOTPAY_V1_BASE_URL=f"{env.sim_server.url}/v1")
    iotledger = os.path.join(os.path.dirname(sys.executable), "iotledger")
    created = (datetime.now(timezone.utc) - timedelta(minutes=3)).isoformat()
    expect = subprocess.run([iotledger, "expect", "--mch-id", MCH2, "--mch-order-no", "CLI-9", "--amount", "4200",
                             "--currency", "USD", "--channel", "UPI_APP", "--created-at", created],
                            env=proc_env, capture_output=True, text=True, timeout=60)
    assert expect.returncode == 0, expect.stderr
    sweep = subprocess.run([iotledger, "sweep", "--concurrency", "2", "--json"], env=proc_env, capture_output=True, text=True,
                           timeout=60)
    assert sweep.returncode == 0, sweep.stderr
    counts = json.loads(sweep.stdout)
    assert (counts["due"], counts["paid"], counts["concurrency"]) == (1, 1, 2)
    assert by_order(entries(db_url)) == {order["payOrderId"]: [("pay", 4200)]}
    assert expected_row(db_url, "CLI-9")["resolution"] == "paid"


def test_a_sweep_polling_within_its_minute_returns_after_its_pass_once_asked_to_stop(monkeypatch):
    from datetime import datetime, timezone

    from worker.gateway import sweep

    stop = threading.Event()
    passes: list[datetime] = []

    def one_pass(pool, client, *, now, **kwargs):
        passes.append(now)
        if len(passes) == 2:
            stop.set()  # the clock's SIGTERM arrives during the second pass
        return sweep.SweepReport(now=now)

    monkeypatch.setattr(sweep, "sweep_once", one_pass)  # the passes themselves are the other tests' subject
    monkeypatch.setattr(sweep, "next_due", lambda pool: None)
    started = time.monotonic()
    reports = sweep.sweep_for(None, None, seconds=50, clock=lambda: datetime.now(timezone.utc),
                              idle_pause=0.05, stop=stop)
    assert len(reports) == len(passes) == 2  # the pass under way finished; no further pass
    assert time.monotonic() - started < 5  # not the rest of its 50 s
