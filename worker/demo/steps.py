"""The demo's steps, in the order they run: each a function of the Stage that does one thing and
checks it happened (raising DemoError, or ProcessError from a process, when it did not)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import psycopg

from worker.demo.database import create_scratch_database
from worker.demo.report import DemoError
from worker.demo.stage import Stage
from worker.gateway.expected import ExpectedOrder, record
from worker.gateway.sweep import open_pool, sweep_once
from worker.iotpay.channels import family_for_channel
from worker.ledger.checks import run_checks
from worker.migrations import migrate
from worker.processes import service_env, simulator_command, wait_until, web_command, worker_command
from worker.reports.alerts import AlertSink
from worker.reports.export import ExportError, export_day
from worker.reports.reconcile import reconcile
from worker.sqlfiles import q

MIN_ORDERS = 10  # enough cards for the refunds, the void and the forged notify
MCH_ID = "10000701"
LOGIN = "demo"
PLANTED = {"amount_mismatch": 1, "expected_not_paid": 1}  # what reconcile must find, and only that
CAD, USD = "CAD", "USD"

# ---- channel and family facts the demo plays with: the one place of the demo that names them ----
CARD = "PF_CC"  # card terminal, V3 API
WECHAT = "WX_APP"  # WeChat in an app, v1 API


# ---- the steps, in the order of STEPS below ----


def create_database(stage: Stage) -> None:
    """A fresh database on the server (or the one given, with --in-place), migrated."""
    stage.db = create_scratch_database(stage.server_url) if stage.fresh_database else stage.server_url
    stage.report.database_url = stage.db
    migrate(stage.db)


def start_simulator(stage: Stage) -> None:
    """`iotledger simulate` on a free port, with the demo merchant, until its control API answers."""
    s = stage.settings
    stage.env = service_env(
        stage.db, stage.broker_url, f"demo{secrets.token_hex(4)}", {MCH_ID: {"keys": [stage.key], "loginName": LOGIN}},
        stage.procs.log_dir, IOTPAY_V3_BASE_URL=f"{stage.sim_url}/v3", IOTPAY_V1_BASE_URL=f"{stage.sim_url}/v1",
        IOTLEDGER_SETTLEMENT_TZ=s.settlement_tz.key, IOTPAY_GATEWAY_TZ=s.gateway_tz.key)
    stage.procs.start("simulator", simulator_command(stage.sim_port, "--seed", str(stage.seed), "--threads", "8",
                                                     "--retry-delays", "1,2,4"), stage.env)
    stage.procs.wait_for(stage.sim_url + "/healthz", 30, "the simulator")


def start_ingress_and_workers(stage: Stage) -> None:
    """`iotledger web` (gunicorn) and `iotledger worker` (dramatiq), until the ingress is ready."""
    stage.procs.start("web", web_command(stage.web_port, workers=1), stage.env)
    stage.procs.start("worker", worker_command(processes=1, threads=4), stage.env)
    stage.procs.wait_for(stage.web_url + "/readyz", 60, "the ingress (/readyz)")


def play_pays(stage: Stage) -> None:
    """The day's pays at the gateway, each registered by the checkout as an expected order; one is
    never notified, one notify comes three times; then two differences are planted."""
    stage.sim.call("POST", "policy", {"duplicateRate": 0.25, "minDelay": 0.0, "maxDelay": 0.5})
    with psycopg.connect(stage.db) as conn:
        for i in range(stage.orders):
            _play_pay(stage, conn, i)
        _plant_differences(stage, conn)
        stage.sim.call("POST", f"orders/{stage.paid[0]['id']}/notify", {"times": 3})
    # refunds come later in the day, once the pays are in the ledger
    wait_until(lambda: _drained(stage), 90, "the pays' notifies to be delivered and posted", interval=0.2)


def _play_pay(stage: Stage, conn: psycopg.Connection, i: int) -> None:
    t = stage.next_event()
    channel, currency = (WECHAT, USD if i % 8 == 3 else CAD) if i % 4 == 3 else (CARD, CAD)
    amount = 500 + (i * 1379) % 9000
    mch_order_no = f"{_order_prefix(stage)}-{i + 1:03d}"
    lost = i == stage.orders // 2  # the customer paid, the gateway never notifies
    order = stage.sim.call("POST", "orders", {
        "mchId": MCH_ID, "mchOrderNo": mch_order_no, "amount": amount, "currency": currency,
        "channel": channel, "status": 2, "notifyUrl": None if lost else stage.notify_url})
    pay_id = order.get("payOrderId")
    record(conn, ExpectedOrder(MCH_ID, mch_order_no, amount, currency, channel, t, pay_id, family_for_channel(channel)),
           stage.schedule)
    stage.report.pays[channel] = stage.report.pays.get(channel, 0) + 1
    if lost:
        stage.report.lost_order = pay_id
    else:
        stage.paid.append({"id": pay_id, "amount": amount, "channel": channel, "currency": currency})


def _plant_differences(stage: Stage, conn: psycopg.Connection) -> None:
    # a difference: the checkout asked 50.00, the terminal charged 55.00
    t = stage.next_event()
    tip = f"{_order_prefix(stage)}-TIP"
    order = stage.sim.call("POST", "orders", {"mchId": MCH_ID, "mchOrderNo": tip, "amount": 5500, "channel": CARD,
                                              "status": 2, "notifyUrl": stage.notify_url})
    record(conn, ExpectedOrder(MCH_ID, tip, 5000, CAD, CARD, t, order["payOrderId"], family_for_channel(CARD)), stage.schedule)
    stage.report.pays[CARD] += 1
    # another: the checkout created an order the customer abandoned (never at the gateway)
    record(conn, ExpectedOrder(MCH_ID, f"{_order_prefix(stage)}-ABANDONED", 2500, CAD, CARD, t, None, family_for_channel(CARD)),
           stage.schedule)


def refund_and_void(stage: Stage) -> None:
    """Partial refunds of three card pays and a WeChat pay, and a void of a card pay, at the gateway."""
    cards, wechat = _paid(stage, CARD), _paid(stage, WECHAT)
    for n, p in enumerate(cards[1:4]):
        stage.next_event()
        stage.client.cc_refund(MCH_ID, pay_order_id=p["id"], mch_refund_no=f"REF-{p['id']}-1",
                               refund_amount=p["amount"] // (2 + n))
        stage.report.refunds += 1
    if wechat:
        stage.next_event()
        w = wechat[0]
        stage.client.refund_order(MCH_ID, pay_order_id=w["id"], mch_refund_no=f"REF-{w['id']}-1",
                                  refund_amount=w["amount"] // 4, currency=w["currency"])
        stage.report.refunds += 1
    stage.next_event()
    stage.client.cc_void(MCH_ID, pay_order_id=cards[4]["id"], mch_refund_no=f"VOID-{cards[4]['id']}")
    stage.report.voids += 1


def forge_notify(stage: Stage) -> None:
    """Someone on the internet forges a notify: a real body with the amount raised. It must be refused."""
    pay = _paid(stage, CARD)[5]
    body = json.loads(stage.sim.call("GET", f"orders/{pay['id']}/notify-body")["body"])
    body["amount"] = body["amount"] * 100
    forged = httpx.post(stage.notify_url, json=body, timeout=5)
    stage.report.forged_status = forged.status_code
    if forged.status_code < 400:
        raise DemoError(f"the forged notify was answered HTTP {forged.status_code}, not refused")


def await_notifies(stage: Stage) -> None:
    """Every notify delivered and posted; count the deliveries by outcome."""
    wait_until(lambda: _drained(stage), 90, "every notify to be delivered and posted", interval=0.2)
    deliveries = stage.sim.call("GET", "deliveries")["deliveries"]
    for d in deliveries:
        outcome = str(d.get("outcome") or "sent")
        stage.report.notifies[outcome] = stage.report.notifies.get(outcome, 0) + 1
    stage.report.orders_notified = len({d.get("payOrderId") for d in deliveries})


def sweep(stage: Stage) -> None:
    """One pass of the sweep: it must find the pay that was never notified, and post it."""
    pool = open_pool(stage.db)
    try:
        report = sweep_once(pool, stage.client, now=datetime.now(timezone.utc), schedule=stage.schedule,
                            concurrency=4)
    finally:
        pool.close()
    with psycopg.connect(stage.db) as conn:
        row = conn.execute(q("demo_order_source"), {"pay_order_id": stage.report.lost_order}).fetchone()
    if row is None or row[1] != "posted":
        raise DemoError(f"the sweep did not recover the lost order {stage.report.lost_order} ({report.counts()})")
    stage.report.lost_recovered_by = row[0]


def check_ledger(stage: Stage) -> None:
    """`iotledger check`: every invariant of the ledger holds."""
    with psycopg.connect(stage.db) as conn:
        check = run_checks(conn)
        stage.report.check_ok = check.ok
        (stage.report.entries,) = conn.execute(q("demo_entry_count")).fetchone()
    if not check.ok:
        raise DemoError(f"iotledger check failed: {check.as_json()}")


def reconcile_day(stage: Stage) -> None:
    """Reconcile the day: exactly the two planted differences must be found."""
    with psycopg.connect(stage.db) as conn:
        result = reconcile(conn, stage.bd.day, stage.settings.settlement_tz, AlertSink())
    stage.report.reconcile = result.to_json()
    if result.counts != PLANTED:
        stage.report.problems.append(f"reconcile found {result.counts}, the demo planted {PLANTED}")


def export_files(stage: Stage) -> None:
    """Export the day's settlement files: one CSV row per journal entry."""
    day, report = stage.bd.day, stage.report
    with psycopg.connect(stage.db) as conn:
        try:
            exported = export_day(conn, day, stage.settings.settlement_tz, stage.out_dir, now=stage.now)
        except ExportError as exc:
            raise DemoError(f"{Path(stage.out_dir) / str(day)} holds settlement files of an earlier run ({exc}); "
                            "give another folder with --out, or remove that one") from None
    report.export = {"status": exported.status, "folder": str(exported.folder),
                     "files": {k: str(v) for k, v in exported.files.items()}, "rows": exported.manifest["rows"]}
    report.totals = exported.totals
    if sum(exported.manifest["rows"].values()) != report.entries:
        report.problems.append(f"the CSV has {exported.manifest['rows']} rows, the ledger {report.entries} entries")


# (what the progress bar says while the step runs, the step), in order
STEPS: list[tuple[str, Callable[[Stage], None]]] = [
    ("database", create_database),
    ("simulator", start_simulator),
    ("ingress and workers", start_ingress_and_workers),
    ("pays", play_pays),
    ("refunds and a void", refund_and_void),
    ("forged notify", forge_notify),
    ("notifies delivered", await_notifies),
    ("sweep", sweep),
    ("ledger check", check_ledger),
    ("reconcile", reconcile_day),
    ("export", export_files),
]


def _drained(stage: Stage) -> bool:
    """True when the simulator has no notify pending and the inbox has no row waiting for a worker."""
    stage.procs.check()
    if stage.sim.call("GET", "stats")["pending"]:
        return False
    with psycopg.connect(stage.db) as conn:
        (open_rows,) = conn.execute(q("demo_inbox_open")).fetchone()
    return open_rows == 0


def _paid(stage: Stage, channel: str) -> list[dict[str, Any]]:
    return [p for p in stage.paid if p["channel"] == channel]


def _order_prefix(stage: Stage) -> str:
    return f"DEMO-{stage.bd.day:%Y%m%d}"
