"""Benchmark (not a test): the finance console's pages at 1,000,000 orders and 10,000 open mismatches.

    python -m tests.benchmarks.bench_console [--orders 1000000] [--days 90] [--mismatches 10000]
                                             [--requests 40] [--keep]

Fills a fresh database: the orders by COPY (90 % pays, 10 % partial refunds, three merchant and
currency pairs, spread evenly over `--days` business days ending yesterday), their journal
entries and postings set-based through the ledger's own triggers, every entry filed in its
day's settlement file, each day closed (files recorded, nightly job done, a reconcile run),
`--mismatches` open reconcile mismatches spread over the days (COPY), a notify in the inbox for
one order in ten (COPY, signed), and a `files verify` run. Then starts `iotledger console` under
its real server (gunicorn, two processes) and, as a signed-in user, requests each page
`--requests` times one after the other, printing p50 and p95 next to the ceiling: a bare Flask
route answered by the same gunicorn stack, measured in the same run. The goal: every page under
300 ms.

Uses TEST_DATABASE_URL or postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import psycopg
from psycopg import sql

SERVER = os.environ.get("TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
TZ = ZoneInfo("America/Toronto")
KEY = "bench-key-0123456789abcdefghijklmn"
PAIRS = (("10000701", "CAD"), ("10000701", "USD"), ("10000702", "CAD"))
MERCHANTS = json.dumps({"10000701": {"keys": [KEY]}, "10000702": {"keys": [KEY]}})
PASSWORD = "benchmark password"
GOAL_MS = 300.0
CLASSES = ("expected_not_paid", "amount_mismatch", "unknown_to_merchant", "stuck_pending", "paid_not_in_ledger",
           "refundable_mismatch")

LEDGER = """
INSERT INTO accounts (mch_id, currency, kind)
SELECT m, c, k FROM (VALUES ('10000701', 'CAD'), ('10000701', 'USD'), ('10000702', 'CAD')) p (m, c)
CROSS JOIN unnest(ARRAY['clearing', 'sales', 'refunds']) k;
INSERT INTO journal_entries (pay_order_id, kind, original_order_id, mch_id, currency, amount, occurred_at)
SELECT pay_order_id, pay_type, original_order_id, mch_id, currency, amount, pay_succ_time
FROM orders WHERE pay_type = 'pay' ORDER BY pay_succ_time;
INSERT INTO journal_entries (pay_order_id, kind, original_order_id, mch_id, currency, amount, occurred_at)
SELECT pay_order_id, pay_type, original_order_id, mch_id, currency, amount, pay_succ_time
FROM orders WHERE pay_type = 'refund' ORDER BY pay_succ_time;
INSERT INTO postings (entry_id, account_id, mch_id, currency, amount)
SELECT je.id, a.id, je.mch_id, je.currency, CASE WHEN leg.debit THEN je.amount ELSE -je.amount END
FROM journal_entries je
CROSS JOIN (VALUES (true), (false)) AS leg (debit)
JOIN accounts a ON a.mch_id = je.mch_id AND a.currency = je.currency
 AND a.kind = CASE WHEN je.kind = 'pay' THEN CASE WHEN leg.debit THEN 'clearing' ELSE 'sales' END
                   ELSE CASE WHEN leg.debit THEN 'refunds' ELSE 'clearing' END END
"""

CLOSE_DAYS = """
INSERT INTO settlement_exports (export_date, settlement_tz, version, manifest, created_at)
SELECT d.day, %(tz)s, 1, m.manifest, (d.day + 1)::timestamp AT TIME ZONE %(tz)s + interval '15 minutes'
FROM (SELECT generate_series(%(first)s::date, %(last)s::date, interval '1 day')::date AS day) d
CROSS JOIN LATERAL (
    SELECT jsonb_build_object(
        'settlement_date', d.day, 'version', 1, 'status', 'final', 'timezone', %(tz)s,
        'rows', jsonb_build_object('business_day', coalesce(sum(t.count), 0), 'prior_day_adjustments', 0),
        'files', jsonb_build_object('settlement-' || d.day || '.csv', jsonb_build_object('sha256', repeat('a', 64), 'bytes', 1, 'rows', coalesce(sum(t.count), 0)),
                                    'summary-' || d.day || '.csv', jsonb_build_object('sha256', repeat('b', 64), 'bytes', 1, 'rows', 3)),
        'totals', coalesce(jsonb_object_agg(t.currency, jsonb_build_object('count', t.count, 'gross_cents', t.gross,
                                                                          'refunds_cents', t.refunds, 'net_cents', t.gross - t.refunds))
                           FILTER (WHERE t.currency IS NOT NULL), '{}'),
        'totals_by_merchant', '[]'::jsonb) AS manifest
    FROM (SELECT je.currency::text AS currency, count(*) AS count,
                 sum(je.amount) FILTER (WHERE je.kind = 'pay') AS gross,
                 coalesce(sum(je.amount) FILTER (WHERE je.kind <> 'pay'), 0) AS refunds
          FROM journal_entries je
          WHERE je.occurred_at >= d.day::timestamp AT TIME ZONE %(tz)s
            AND je.occurred_at < (d.day + 1)::timestamp AT TIME ZONE %(tz)s
          GROUP BY 1) t
) m;
INSERT INTO settlement_files (export_date, version, status, manifest_name, manifest_sha256, manifest, created_at)
SELECT export_date, 1, 'final', 'manifest-' || export_date || '.json', encode(sha256(manifest::text::bytea), 'hex'),
       manifest, created_at FROM settlement_exports;
WITH taken AS (DELETE FROM entries_awaiting_file a RETURNING a.entry_id, a.occurred_at)
INSERT INTO exported_entries (entry_id, export_date, business_date)
SELECT entry_id, (occurred_at AT TIME ZONE %(tz)s)::date, (occurred_at AT TIME ZONE %(tz)s)::date FROM taken;
INSERT INTO job_runs (job, slot, clock_id, status, started_at, finished_at)
SELECT 'nightly', export_date::text, 'bench', 'done', created_at, created_at FROM settlement_exports;
INSERT INTO reconcile_runs (business_date, settlement_tz, window_start, window_end, finished_at, mismatch_count)
SELECT export_date, %(tz)s, export_date::timestamp AT TIME ZONE %(tz)s, (export_date + 1)::timestamp AT TIME ZONE %(tz)s,
       created_at, 0 FROM settlement_exports ORDER BY export_date;
INSERT INTO files_verify_runs (source, out_dir, ok, closed_days, first_day, last_day, files_checked, findings_count, report)
VALUES ('clock', 'reports', true, %(days)s, %(first)s, %(last)s, %(days)s * 4, 0, '{"findings": [], "totals": []}')
"""


def _db(name: str) -> str:
    from tests.fix_db import with_dbname

    return with_dbname(SERVER, name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill(url: str, orders: int, days: int, mismatches: int) -> dict[str, object]:
    """The data set; returns what the pages will be asked about."""
    from worker.iotpay.signature import signed

    now = datetime.now(timezone.utc)
    last = now.astimezone(TZ).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    start = datetime.combine(first, datetime.min.time()).replace(tzinfo=TZ).astimezone(timezone.utc)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time()).replace(tzinfo=TZ).astimezone(timezone.utc)
    refunds = orders // 10
    pays = orders - refunds
    step = (end - start) / (pays + 1)
    t0 = time.perf_counter()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur, cur.copy(
                "COPY orders (pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount, status,"
                " state, fingerprint, channel, card_type, card_num, pay_succ_time, source, first_seen_at, posted_at)"
                " FROM STDIN") as copy:
            for i in range(1, pays + 1):
                mch, cur_code = PAIRS[i % 3]
                when = start + step * i
                copy.write_row((f"PC{i:010d}", mch, f"MO{i:010d}", "pay", None, cur_code, 100 + (i * 7919) % 50000, 2,
                                "posted", f"f{i}", "PF_CC", "V", f"432567******{i % 10000:04d}", when, "notify", when,
                                when))
            for i in range(1, refunds + 1):
                mch, cur_code = PAIRS[i % 3]
                when = start + step * i + timedelta(seconds=30)
                copy.write_row((f"RP{i:010d}", mch, f"RF{i:010d}", "refund", f"PC{i:010d}", cur_code, 50, 2, "posted",
                                f"r{i}", "PF_CC", "V", f"432567******{i % 10000:04d}", when, "notify", when, when))
        conn.commit()
        print(f"  orders copied: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        for statement in LEDGER.split(";\n"):
            conn.execute(statement)
        conn.commit()
        print(f"  ledger entries posted: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        params = {"tz": TZ.key, "first": first, "last": last, "days": days}
        for statement in CLOSE_DAYS.split(";\n"):
            conn.execute(statement, params if "%(" in statement else None)
        conn.commit()
        print(f"  days closed: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        runs = [r[0] for r in conn.execute("SELECT id FROM reconcile_runs ORDER BY business_date")]
        with conn.cursor() as cur, cur.copy(
                "COPY reconcile_mismatches (run_id, class, subject, mch_id, pay_order_id, mch_order_no, currency,"
                " expected_amount, gateway_amount, ledger_amount) FROM STDIN") as copy:
            for n in range(mismatches):
                i = 1 + (n * 97) % pays
                mch, cur_code = PAIRS[i % 3]
                copy.write_row((runs[n % len(runs)], CLASSES[n % len(CLASSES)], f"PC{i:010d}", mch, f"PC{i:010d}",
                                f"MO{i:010d}", cur_code, 100, 101, 101))
        conn.execute("UPDATE reconcile_runs r SET mismatch_count = (SELECT count(*) FROM reconcile_mismatches m "
                     "WHERE m.run_id = r.id)")
        with conn.cursor() as cur, cur.copy(
                "COPY inbox (body_sha256, body, content_type, family, remote_addr, mch_id, pay_order_id, received_at,"
                " verified_at, state, outcome, processed_at) FROM STDIN") as copy:
            import hashlib

            for i in range(1, pays + 1, 10):
                mch, cur_code = PAIRS[i % 3]
                when = start + step * i
                body = json.dumps(signed({"payOrderId": f"PC{i:010d}", "mchId": mch, "mchOrderNo": f"MO{i:010d}",
                                          "amount": 100 + (i * 7919) % 50000, "currency": cur_code, "payType": "pay",
                                          "status": 2, "cardNum": f"432567******{i % 10000:04d}"}, KEY)).encode()
                copy.write_row((hashlib.sha256(body).digest(), body, "application/json", "v3", "198.51.100.7", mch,
                                f"PC{i:010d}", when, when, "done", "posted", when))
        conn.commit()
        from worker.console.users import add_user

        add_user(conn, "bench", "viewer", PASSWORD)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"  filled in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return facts(orders, days)


def facts(orders: int, days: int) -> dict[str, object]:
    """What the pages are asked about in a data set filled with these numbers."""
    last = datetime.now(timezone.utc).astimezone(TZ).date() - timedelta(days=1)
    first = last - timedelta(days=days - 1)
    refunds = orders // 10
    looked_up = ((refunds - 1) // 10) * 10 + 1  # a pay with a notify in the inbox and a refund
    return {"last": str(last), "middle_day": str(first + timedelta(days=days // 2)),
            "order": f"PC{looked_up:010d}", "mch_order_no": f"MO{looked_up:010d}"}


BARE_FLASK = "tests.benchmarks.bench_console:bare_flask()"


def bare_flask():  # noqa: ANN201 - gunicorn's app factory
    """The ceiling: a Flask app whose one route renders a tiny template, served by the same stack."""
    from flask import Flask, render_template_string

    app = Flask(__name__)

    @app.route("/")
    def index() -> str:
        return render_template_string("<p>{{ text }}</p>", text="ok")

    return app


def serve(argv: list[str], env: dict[str, str], url: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"{argv[-1]} never answered: {log.read_text()[-2000:]}")


def measure(client: httpx.Client, path: str, n: int) -> tuple[float, float, int]:
    for _ in range(3):  # warm: pools opened, templates compiled, in both processes
        client.get(path)
    times = []
    status = 0
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t) * 1000)
        status = r.status_code
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))], status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=90, help="business days the orders are spread over, ending yesterday")
    ap.add_argument("--mismatches", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=40, help="requests per page")
    ap.add_argument("--keep", action="store_true", help="keep the database")
    ap.add_argument("--reuse", metavar="DATABASE", help="measure a database kept by an earlier --keep run with the "
                    "same --orders and --days (filled the same day), without filling again")
    args = ap.parse_args()
    from worker.migrations import migrate

    name = args.reuse or f"iotledger_bench_console_{uuid.uuid4().hex[:8]}"
    if not args.reuse:
        with psycopg.connect(SERVER, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _db(name)
    tmp = Path(tempfile.mkdtemp(prefix="bench_console_"))
    procs: list[subprocess.Popen] = []
    try:
        migrate(url)
        if args.reuse:
            found = facts(args.orders, args.days)
        else:
            print(f"filling {args.orders:,} orders over {args.days} days, {args.mismatches:,} open mismatches ...",
                  file=sys.stderr)
            found = fill(url, args.orders, args.days, args.mismatches)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("IOTPAY_", "IOTLEDGER_"))}
        port, bare_port = _free_port(), _free_port()
        env.update(DATABASE_URL=url, IOTPAY_MERCHANTS=MERCHANTS, IOTLEDGER_DATA_DIR=str(tmp / "data"),
                   IOTLEDGER_SETTLEMENT_TZ=TZ.key, IOTLEDGER_CONSOLE_PORT=str(port), IOTLEDGER_CONSOLE_WORKERS="2",
                   IOTLEDGER_LOG_LEVEL="WARNING")
        base = f"http://127.0.0.1:{port}"
        procs.append(serve([str(Path(sys.executable).parent / "iotledger"), "console", "--out", str(tmp / "reports")],
                           env, base + "/signin", tmp / "console.log"))
        bare = f"http://127.0.0.1:{bare_port}"
        procs.append(serve([sys.executable, "-m", "gunicorn", "-c", "python:worker.console.gunicorn_conf",
                            "-b", f"127.0.0.1:{bare_port}", BARE_FLASK], env, bare + "/", tmp / "bare.log"))
        with httpx.Client(base_url=base, timeout=30) as client, httpx.Client(base_url=bare, timeout=30) as ceiling:
            page = client.get("/signin").text
            token = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)
            r = client.post("/signin", data={"name": "bench", "password": PASSWORD, "csrf_token": token})
            assert r.status_code == 302, r.text[:500]
            pages = [("sign-in page (no session)", "/signin"), ("overview", "/"), ("days", "/days"),
                     ("days, an older page", f"/days?before={found['middle_day']}"),
                     ("one day", f"/days/{found['last']}"), ("order lookup by mchOrderNo", f"/orders?q={found['mch_order_no']}&mch_id=10000701"),
                     ("order evidence", f"/orders/{found['order']}")]
            c50, c95, _ = measure(ceiling, "/", args.requests)
            print(f"\nconsole pages at {args.orders:,} orders ({args.days} days), {args.mismatches:,} open mismatches; "
                  f"{args.requests} requests each, one at a time, 2 gunicorn processes")
            print(f"ceiling: a bare Flask route on the same gunicorn stack: p50 {c50:.1f} ms, p95 {c95:.1f} ms")
            print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8} {'p95/ceiling':>12}  goal < {GOAL_MS:.0f} ms")
            for label, path in pages:
                if label.startswith("sign-in"):
                    with httpx.Client(base_url=base, timeout=30) as anon:
                        p50, p95, status = measure(anon, path, args.requests)
                else:
                    p50, p95, status = measure(client, path, args.requests)
                ok = ("ok" if p95 < GOAL_MS else "OVER") + ("" if status in (200, 302) else f" (status {status})")
                print(f"{label:32} {p50:8.1f} {p95:8.1f} {p95 / c95:11.1f}x  {ok}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        if not args.keep and not args.reuse:
            with psycopg.connect(SERVER, autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        else:
            print(f"kept database {name}", file=sys.stderr)


if __name__ == "__main__":
    main()
