"""`iotledger demo`: one realistic business day, end to end, on real processes.

What it does (and checks, so the exit code means something):
  1. a fresh database on the configured (or embedded) PostgreSQL, migrated; Redis as configured;
  2. starts, as subprocesses, the IOTPay simulator (`iotledger simulate`), the ingress
     (`iotledger web`, gunicorn) and the workers (`iotledger worker`, dramatiq);
  3. plays yesterday (in the settlement zone) at the simulated gateway: card and WeChat pays the
     checkout registered as expected orders, duplicated notifies, partial refunds, a void, a
     forged notify (refused by the ingress), a notify that never comes (recovered by the
     sweep's query) and two differences finance must see (a customer charged another amount
     than the checkout asked; an order the customer abandoned);
  4. waits for the workers to post everything, runs the sweep, checks the ledger's invariants,
     reconciles the day and exports its settlement files;
  5. stops what it started and prints where the files are and what happened, in plain words.

Exit code 0 when everything happened as planned (the two planted mismatches found, nothing
else), 1 otherwise, with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from tqdm import tqdm

from worker.config import Settings
from worker.reports.alerts import money
from worker.reports.businessday import business_day, last_closed_day
from worker.services import masked

MCH_ID = "10000701"
LOGIN = "demo"
BIN = Path(sys.executable).parent / "iotledger"
MIN_ORDERS = 10  # enough cards for the refunds, the void and the forged notify
PLANTED = {"amount_mismatch": 1, "expected_not_paid": 1}
STEPS = ["database", "simulator", "ingress and workers", "pays", "refunds and a void", "forged notify",
         "notifies delivered", "sweep", "ledger check", "reconcile", "export"]


class DemoError(Exception):
    """A step of the demo did not happen as planned (the message says which and why)."""


@dataclass
class DemoReport:
    """What the demo did, for the summary and for the test."""

    database_url: str = ""
    dropped_database: bool = False  # the scratch database was dropped at the end (external server, no --keep)
    services_left: str | None = None  # the embedded services left running, and where
    day: date | None = None
    tz: str = ""
    logs: Path | None = None
    pays: dict[str, int] = field(default_factory=dict)  # channel -> count
    refunds: int = 0
    voids: int = 0
    notifies: dict[str, int] = field(default_factory=dict)  # delivery outcome -> count
    duplicates_sent: int = 0
    orders_notified: int = 0
    forged_status: int = 0
    lost_order: str = ""
    lost_recovered_by: str = ""
    entries: int = 0
    check_ok: bool = False
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    reconcile: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")


class Processes:
    """The subprocesses the demo started, each in its own process group; stopped by pid at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([str(BIN), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise DemoError(f"{name} exited with code {proc.returncode}; see {self.logs / (name + '.log')}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _fresh_database(server_url: str) -> str:
    name = f"iotledger_demo_{datetime.now(timezone.utc):%Y%m%d_%H%M%S}_{secrets.token_hex(2)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_dbname(server_url, name)


def with_dbname(url: str, name: str) -> str:
    """The same server URL naming another database (kept a URL: the settings insist on one)."""
    parts = urlsplit(url)
    if parts.scheme.startswith("postgres"):
        return urlunsplit(parts._replace(path="/" + name))
    params = conninfo_to_dict(url)
    params["dbname"] = name
    return make_conninfo(**params)


class Gateway:
    """The simulator's control API, and its clock set inside the demo's business day."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=10)

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = self.http.request(method, "/_sim/" + path, json=body)
        if resp.status_code != 200:
            raise DemoError(f"simulator {method} /_sim/{path}: HTTP {resp.status_code} {resp.text[:200]}")
        return resp.json()

    def at(self, instant: datetime) -> None:
        self.control("POST", "clock", {"now": instant.isoformat()})


def _env(settings: Settings, database_url: str, redis_url: str, key: str, sim: str, queue: str,
         data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("IOTPAY_MERCHANTS_FILE", "PORT", "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")}
    env.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, IOTLEDGER_QUEUE=queue, IOTLEDGER_DATA_DIR=str(data_dir),
        IOTPAY_MERCHANTS=json.dumps({MCH_ID: {"keys": [key], "loginName": LOGIN}}),
        IOTPAY_V3_BASE_URL=f"{sim}/v3", IOTPAY_V1_BASE_URL=f"{sim}/v1",
        IOTLEDGER_SETTLEMENT_TZ=settings.settlement_tz.key, IOTPAY_GATEWAY_TZ=settings.gateway_tz.key,
        dramatiq_prom_port=str(free_port()), dramatiq_prom_host="127.0.0.1",
    )
    return env


@contextlib.contextmanager
def _progress(stream: TextIO | None) -> Iterator[Callable[[str], None]]:
    bar = tqdm(total=len(STEPS), desc="demo", unit="step", file=stream or sys.stderr, leave=True,
               bar_format="{desc:<28} {bar} {n_fmt}/{total_fmt} [{elapsed}]")
    bar.set_description_str(STEPS[0])

    def done(step: str) -> None:
        following = STEPS.index(step) + 1
        bar.set_description_str(STEPS[following] if following < len(STEPS) else "done")
        bar.update(1)

    try:
        yield done
    finally:
        bar.close()


def run_demo(settings: Settings, server_url: str, redis_url: str, out_dir: Path, *, orders: int = 24,
             seed: int = 7, fresh_database: bool = True, drop_database: bool = False, progress: TextIO | None = None,
             now: datetime | None = None) -> DemoReport:
    """Play the day and return its report. Raises DemoError when a step did not happen as planned."""
    from worker.gateway.client import GatewayClient
    from worker.gateway.expected import ExpectedOrder, record
    from worker.gateway.schedule import Schedule
    from worker.gateway.sweep import open_pool, sweep_once
    from worker.iotpay.channels import family_for_channel
    from worker.ledger.checks import run_checks
    from worker.merchants import Merchant, Merchants
    from worker.migrations import migrate
    from worker.reports.alerts import AlertSink
    from worker.reports.export import ExportError, export_day
    from worker.reports.reconcile import reconcile

    if orders < MIN_ORDERS:
        raise DemoError(f"--orders: at least {MIN_ORDERS}, got {orders}")
    report = DemoReport(tz=settings.settlement_tz.key)
    now = now or datetime.now(timezone.utc)
    tz = settings.settlement_tz
    day = last_closed_day(now, tz)
    bd = business_day(day, tz)
    report.day = day
    data_dir = settings.data_dir / "demo" / f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
    report.logs = data_dir
    procs = Processes(data_dir)
    key = secrets.token_hex(16)
    merchants = Merchants({MCH_ID: Merchant(MCH_ID, (key,), LOGIN)})
    with _progress(progress) as step:
        try:
            db = _fresh_database(server_url) if fresh_database else server_url
            report.database_url = db
            migrate(db)
            step("database")

            sim_port, web_port = free_port(), free_port()
            sim_url, web_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{web_port}"
            env = _env(settings, db, redis_url, key, sim_url, f"demo{secrets.token_hex(4)}", data_dir)
            procs.start("simulator", ["simulate", "--host", "127.0.0.1", "--port", str(sim_port), "--seed", str(seed),
                                      "--threads", "8", "--retry-delays", "1,2,4"], env)
            gw = Gateway(sim_url)

            def sim_up() -> bool:
                procs.check()
                with contextlib.suppress(httpx.HTTPError):
                    return gw.http.get("/_sim/stats").status_code == 200
                return False

            _wait(sim_up, 30, "the simulator")
            step("simulator")
            procs.start("web", ["web", "--host", "127.0.0.1", "--port", str(web_port), "--workers", "1"], env)
            procs.start("worker", ["worker", "--processes", "1", "--threads", "4"], env)

            def web_up() -> bool:
                procs.check()
                with contextlib.suppress(httpx.HTTPError):
                    return httpx.get(web_url + "/readyz", timeout=1).status_code == 200
                return False

            _wait(web_up, 60, "the ingress (/readyz)")
            step("ingress and workers")

            def drained() -> bool:
                procs.check()
                if gw.control("GET", "stats")["pending"]:
                    return False
                with psycopg.connect(db) as c:
                    (open_rows,) = c.execute(
                        "SELECT count(*) FROM inbox WHERE state IN ('received', 'queued')").fetchone()
                return open_rows == 0


            notify_url = web_url + "/iotpay/notify"
            gw.control("POST", "policy", {"duplicateRate": 0.25, "minDelay": 0.0, "maxDelay": 0.5})
            client = GatewayClient(merchants, v3_base_url=sim_url + "/v3", v1_base_url=sim_url + "/v1",
                                   gateway_tz=settings.gateway_tz)
            schedule = Schedule(give_up_after=timedelta(seconds=settings.sweep_give_up_seconds))
            t = bd.start + timedelta(hours=8)  # the shop opens at 08:00
            gap = timedelta(minutes=(14 * 60) // (orders + 8))  # every event between 08:00 and 22:00
            paid: list[dict[str, Any]] = []
            with psycopg.connect(db) as conn:
                for i in range(orders):
                    t += gap
                    gw.at(t)
                    channel, currency = ("WX_APP", "USD" if i % 8 == 3 else "CAD") if i % 4 == 3 else ("PF_CC", "CAD")
                    amount = 500 + (i * 1379) % 9000
                    mch_order_no = f"DEMO-{day:%Y%m%d}-{i + 1:03d}"
                    lost = i == orders // 2  # the customer paid, the gateway never notifies
                    order = gw.control("POST", "orders", {
                        "mchId": MCH_ID, "mchOrderNo": mch_order_no, "amount": amount, "currency": currency,
                        "channel": channel, "status": 2, "notifyUrl": None if lost else notify_url})
                    pay_id = order.get("payOrderId")
                    record(conn, ExpectedOrder(MCH_ID, mch_order_no, amount, currency, channel, t, pay_id,
                                               family_for_channel(channel)), schedule)
                    report.pays[channel] = report.pays.get(channel, 0) + 1
                    if lost:
                        report.lost_order = pay_id
                    else:
                        paid.append({"id": pay_id, "amount": amount, "channel": channel, "currency": currency})
                # a difference: the checkout asked 50.00, the terminal charged 55.00
                t += gap
                gw.at(t)
                order = gw.control("POST", "orders", {"mchId": MCH_ID, "mchOrderNo": f"DEMO-{day:%Y%m%d}-TIP",
                                                      "amount": 5500, "channel": "PF_CC", "status": 2,
                                                      "notifyUrl": notify_url})
                record(conn, ExpectedOrder(MCH_ID, f"DEMO-{day:%Y%m%d}-TIP", 5000, "CAD", "PF_CC", t,
                                           order["payOrderId"], "v3"), schedule)
                report.pays["PF_CC"] += 1
                # another: the checkout created an order the customer abandoned (never at the gateway)
                record(conn, ExpectedOrder(MCH_ID, f"DEMO-{day:%Y%m%d}-ABANDONED", 2500, "CAD", "PF_CC", t, None, "v3"),
                       schedule)
                # one notify IOTPay sends three times
                gw.control("POST", f"orders/{paid[0]['id']}/notify", {"times": 3})
                report.duplicates_sent += 2
            # refunds come later in the day, once the pays are in the ledger
            _wait(lambda: drained(), 90, "the pays' notifies to be delivered and posted")
            step("pays")

            cards = [p for p in paid if p["channel"] == "PF_CC"]
            wechat = [p for p in paid if p["channel"] == "WX_APP"]
            for n, p in enumerate(cards[1:4]):
                t += gap
                gw.at(t)
                client.cc_refund(MCH_ID, pay_order_id=p["id"], mch_refund_no=f"REF-{p['id']}-1",
                                 refund_amount=p["amount"] // (2 + n))
                report.refunds += 1
            if wechat:
                t += gap
                gw.at(t)
                w = wechat[0]
                client.refund_order(MCH_ID, pay_order_id=w["id"], mch_refund_no=f"REF-{w['id']}-1",
                                    refund_amount=w["amount"] // 4, currency=w["currency"])
                report.refunds += 1
            t += gap
            gw.at(t)
            client.cc_void(MCH_ID, pay_order_id=cards[4]["id"], mch_refund_no=f"VOID-{cards[4]['id']}")
            report.voids += 1
            step("refunds and a void")

            # someone on the internet forges a notify: a real body with the amount raised
            body = json.loads(gw.control("GET", f"orders/{cards[5]['id']}/notify-body")["body"])
            body["amount"] = body["amount"] * 100
            forged = httpx.post(notify_url, json=body, timeout=5)
            report.forged_status = forged.status_code
            if forged.status_code < 400:
                raise DemoError(f"the forged notify was answered HTTP {forged.status_code}, not refused")
            step("forged notify")

            _wait(drained, 90, "every notify to be delivered and posted")
            deliveries = gw.control("GET", "deliveries")["deliveries"]
            for d in deliveries:
                outcome = str(d.get("outcome") or "sent")
                report.notifies[outcome] = report.notifies.get(outcome, 0) + 1
            report.orders_notified = len({d.get("payOrderId") for d in deliveries})
            step("notifies delivered")

            pool = open_pool(db, 4)
            try:
                sweep = sweep_once(pool, client, now=datetime.now(timezone.utc), schedule=schedule, concurrency=4)
            finally:
                pool.close()
            with psycopg.connect(db) as conn:
                row = conn.execute("SELECT source, state FROM orders WHERE pay_order_id = %s",
                                   (report.lost_order,)).fetchone()
            if row is None or row[1] != "posted":
                raise DemoError(f"the sweep did not recover the lost order {report.lost_order} ({sweep.counts()})")
            report.lost_recovered_by = row[0]
            client.close()
            step("sweep")

            with psycopg.connect(db) as conn:
                check = run_checks(conn)
                report.check_ok = check.ok
                (report.entries,) = conn.execute("SELECT count(*) FROM journal_entries").fetchone()
            if not check.ok:
                raise DemoError(f"iotledger check failed: {check.as_json()}")
            step("ledger check")

            with psycopg.connect(db) as conn:
                result = reconcile(conn, day, tz, AlertSink())
            report.reconcile = result.to_json()
            if result.counts != PLANTED:
                report.problems.append(f"reconcile found {result.counts}, the demo planted {PLANTED}")
            step("reconcile")

            with psycopg.connect(db) as conn:
                try:
                    exported = export_day(conn, day, tz, out_dir, now=now)
                except ExportError as exc:
                    raise DemoError(f"{Path(out_dir) / str(day)} holds settlement files of an earlier run ({exc}); "
                                    "give another folder with --out, or remove that one") from None
            report.export = {"status": exported.status, "folder": str(exported.folder),
                             "files": {k: str(v) for k, v in exported.files.items()},
                             "rows": exported.manifest["rows"]}
            report.totals = exported.totals
            if sum(exported.manifest["rows"].values()) != report.entries:
                report.problems.append(f"the CSV has {exported.manifest['rows']} rows, the ledger {report.entries} entries")
            step("export")
        finally:
            procs.stop()
            if fresh_database and drop_database and report.database_url:
                _drop_database(server_url, report.database_url)
                report.dropped_database = True
    return report


def _drop_database(server_url: str, db_url: str) -> None:
    name = urlsplit(db_url).path.lstrip("/")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def summary(report: DemoReport) -> str:
    """What a newcomer reads at the end of the demo."""
    rec = report.reconcile
    lines = [
        "",
        f"iotpay-ledger demo: business day {report.day} ({report.tz}) played against a simulated IOTPay gateway",
        "",
        f"  payments ........... {sum(report.pays.values())} pays at the gateway ("
        + ", ".join(f"{n} {ch}" for ch, n in sorted(report.pays.items())) + f"), {report.refunds} partial refunds, "
        f"{report.voids} void",
        f"  notifies ........... {sum(report.notifies.values())} notify deliveries for {report.orders_notified} orders ("
        + ", ".join(f"{n} {k}" for k, n in sorted(report.notifies.items())) + "): every duplicate was recognised "
        "and posted nothing",
        f"  forged notify ...... refused by the ingress with HTTP {report.forged_status}: nothing stored, nothing posted",
        f"  lost notify ........ {report.lost_order} was paid but never notified; the sweep asked the gateway "
        f"(source={report.lost_recovered_by}) and posted it",
        f"  ledger ............. {report.entries} journal entries, every one balanced "
        f"(iotledger check: {'ok' if report.check_ok else 'FAILED'})",
    ]
    for currency, t in sorted(report.totals.items()):
        lines.append(f"  {currency} .............. gross {money(t['gross_cents'])}, refunds {money(t['refunds_cents'])}, "
                     f"net {money(t['net_cents'])} (what IOTPay owes the merchant for the day)")
    lines.append(f"  reconciliation ..... {rec.get('mismatch_count', 0)} difference(s) for finance to look at "
                 "(`iotledger reconcile` exits 1 when there are any):")
    for m in rec.get("mismatches", []):
        amounts = ", ".join(f"{k} {m[k + '_amount']}" for k in ("expected", "gateway", "ledger")
                            if m.get(k + "_amount") is not None)
        lines.append(f"      {m['class']}: {m['subject']} - {m['description']}" + (f" ({amounts})" if amounts else ""))
    exp = report.export
    if exp:
        lines += [
            f"  settlement files ... {exp['status']}, in {exp['folder']}:",
            f"      {exp['files']['settlement']}  (one row per pay, refund, void; open it in a spreadsheet)",
            f"      {exp['files']['workbook']}  (the same rows as a workbook: identifiers stay text)",
            f"      {exp['files']['summary']}  (per merchant and currency: count, gross, refunds, net)",
            f"      {exp['files']['manifest']}  (row counts and SHA-256 of each file)",
        ]
        if not report.dropped_database:
            lines.append(f"      audit the series: iotledger files verify --out {Path(exp['folder']).parent} "
                         "(with the DATABASE_URL below)")
    lines.append("")
    if report.dropped_database:
        lines.append("The demo's scratch database was dropped (iotledger demo --keep keeps it).")
    else:
        lines += ["Explore the demo's database:",
                  f"  export DATABASE_URL='{masked(report.database_url)}'",
                  f"  iotledger order {report.lost_order} ; iotledger check ; iotledger reconcile --date {report.day}"]
    if report.services_left:
        lines.append(report.services_left)
    lines.append(f"Process logs: {report.logs}")
    if report.problems:
        lines += ["", "NOT AS PLANNED:"] + [f"  - {p}" for p in report.problems]
    return "\n".join(lines)
