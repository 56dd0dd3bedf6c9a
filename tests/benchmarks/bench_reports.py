"""Benchmark (not a test): settlement export and nightly reconcile on 1,000,000 transactions.

    python -m tests.benchmarks.bench_reports [--rows 1000000] [--keep]

Generates one business day of N ledger transactions (90 % pays, 10 % partial refunds) with
set-based SQL in a fresh database, through the ledger's own triggers (journal entries balance
at commit, pay_balances tracked), with an order row for each, expected orders for the pays
(1 % with another amount, 0.5 % never paid) and a few pending orders. Then, each in a fresh
process so that peak memory (max RSS) is the job's own:

  * export (first, closing the day: files the entries, writes CSV + summary + manifest; a day of
    more rows than IOTLEDGER_WORKBOOK_MAX_ROWS, 100,000 by default, gets no workbook), with its
    seconds per phase;
  * the same first export in a copy of the database with a workbook of every row (the limit at
    Excel's 1,048,575): what the workbook costs;
  * export again into another folder (the closed day regenerated and checked byte for byte);
  * the ceiling: a bare `COPY ... TO STDOUT` of the ledger rows the file holds (the day's journal
    entries joined to their orders, the columns the export reads, unformatted, unordered) into a
    file; and, for comparison, a COPY of the export's own query (formatted by PostgreSQL);
  * files verify of the series the first export wrote;
  * reconcile of the day (all orders of the day against expected orders and the ledger).

The exports are printed next to the bare COPY (the workbook is the same rows again, as 1 KB of
XML each, deflated: see the closing line). The goal: the export at most 2x the bare COPY.

Uses TEST_DATABASE_URL or postgresql://postgres@127.0.0.1:5432/postgres.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

SERVER = os.environ.get("TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
DAY = date(2026, 11, 20)
TZ = ZoneInfo("America/Toronto")

GENERATE = """
INSERT INTO accounts (mch_id, currency, kind)
VALUES ('10000701', 'CAD', 'clearing'), ('10000701', 'CAD', 'sales'), ('10000701', 'CAD', 'refunds');

-- gateway orders: pays, then refunds of the first pays
INSERT INTO orders (pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount, status, state,
                    fingerprint, channel, card_type, card_num, auth_num, trans_num, pay_succ_time, source, posted_at)
SELECT 'PC' || lpad(i::text, 10, '0'), '10000701', 'MO' || lpad(i::text, 10, '0'), 'pay', NULL, 'CAD',
       100 + (i::bigint * 7919) %% 50000, 3, 'posted', md5(i::text), 'PF_CC', 'V', '432567******' || lpad((i %% 10000)::text, 4, '0'),
       'A' || i, 'T' || i, %(start)s::timestamptz + (i * %(step)s) * interval '1 second', 'notify', now()
FROM generate_series(1, %(pays)s) i;
INSERT INTO orders (pay_order_id, mch_id, mch_order_no, pay_type, original_order_id, currency, amount, status, state,
                    fingerprint, channel, pay_succ_time, source, posted_at)
SELECT 'RP' || lpad(i::text, 10, '0'), '10000701', 'RF' || lpad(i::text, 10, '0'), 'refund',
       'PC' || lpad(i::text, 10, '0'), 'CAD', 50, 3, 'posted', md5('r' || i), 'PF_CC',
       %(start)s::timestamptz + (i * %(step)s + 30) * interval '1 second', 'notify', now()
FROM generate_series(1, %(refunds)s) i;
INSERT INTO orders (pay_order_id, mch_id, mch_order_no, pay_type, currency, amount, status, state, fingerprint,
                    first_seen_at, source)
SELECT 'PP' || i, '10000701', 'MP' || i, 'pay', 'CAD', 1000, 0, 'pending', md5('p' || i),
       %(start)s::timestamptz + interval '1 hour', 'query'
FROM generate_series(1, 10) i;

-- the ledger: one entry per order, two legs each (the deferred trigger checks them at commit)
INSERT INTO journal_entries (pay_order_id, kind, original_order_id, mch_id, currency, amount, occurred_at)
SELECT pay_order_id, pay_type, original_order_id, mch_id, currency, amount, pay_succ_time
FROM orders WHERE pay_type = 'pay' AND state = 'posted' ORDER BY pay_order_id;
INSERT INTO journal_entries (pay_order_id, kind, original_order_id, mch_id, currency, amount, occurred_at)
SELECT pay_order_id, pay_type, original_order_id, mch_id, currency, amount, pay_succ_time
FROM orders WHERE pay_type = 'refund' ORDER BY pay_order_id;
INSERT INTO postings (entry_id, account_id, mch_id, currency, amount)
SELECT je.id, a.id, je.mch_id, je.currency, CASE WHEN leg.debit THEN je.amount ELSE -je.amount END
FROM journal_entries je
CROSS JOIN (VALUES (true), (false)) AS leg (debit)
JOIN accounts a ON a.mch_id = je.mch_id AND a.currency = je.currency
 AND a.kind = CASE WHEN je.kind = 'pay' THEN CASE WHEN leg.debit THEN 'clearing' ELSE 'sales' END
                   ELSE CASE WHEN leg.debit THEN 'refunds' ELSE 'clearing' END END;

-- the merchant's expected orders: 1 %% charged another amount, 0.5 %% never paid
INSERT INTO expected_orders (mch_id, mch_order_no, pay_order_id, amount, currency, channel, family, created_at)
SELECT '10000701', 'MO' || lpad(i::text, 10, '0'), 'PC' || lpad(i::text, 10, '0'),
       100 + (i::bigint * 7919) %% 50000 + CASE WHEN i %% 100 = 0 THEN 1 ELSE 0 END, 'CAD', 'PF_CC', 'v3',
       %(start)s::timestamptz + (i * %(step)s - 5) * interval '1 second'
FROM generate_series(1, %(pays)s) i;
INSERT INTO expected_orders (mch_id, mch_order_no, amount, currency, channel, family, created_at)
SELECT '10000701', 'MX' || i, 999, 'CAD', 'PF_CC', 'v3', %(start)s::timestamptz + i * interval '1 second'
FROM generate_series(1, %(pays)s / 200) i;
"""


def _db(name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(SERVER)
    params["dbname"] = name
    return make_conninfo(**params)


# the ceiling: the ledger rows of the day's file as PostgreSQL has them, to a file (the day's journal
# entries, found through the runs that file them, sql/009, joined to their orders)
BARE_COPY = """
COPY (SELECT je.id, je.occurred_at, je.mch_id, je.kind, je.pay_order_id, je.original_order_id, je.currency, je.amount,
             o.channel, o.mch_order_no, o.fields ->> 'paySuccTime', o.card_type, o.card_num, o.auth_num, o.trans_num
      FROM filed_journal_entries je
      LEFT JOIN orders o ON o.pay_order_id = je.pay_order_id
      WHERE je.export_date = %(day)s) TO STDOUT WITH (FORMAT csv)
"""


def _copy_to_file(conn: psycopg.Connection, stmt: str, path: Path, session: str | None = None) -> int:
    with conn.cursor() as cur, open(path, "wb") as fh:
        cur.execute("SELECT set_config('TimeZone', %s, false)", (TZ.key,))
        if session:  # the export's own session settings (its zone, ISO dates, memory to sort in)
            cur.execute(session, {"tz": TZ.key})
        with cur.copy(stmt, {"day": DAY}) as copy:
            for block in copy:
                fh.write(block)
    with open(path, "rb") as fh:
        return sum(1 for _ in fh)


def _child(kind: str, url: str, out: str, q: mp.Queue) -> None:
    from worker import logs

    logs.configure(level="WARNING")
    from worker.reports.businessday import business_day
    from worker.reports.export import export_day
    from worker.reports.reconcile import reconcile
    from worker.reports.verify import verify_files
    from worker.reports.workbook import MAX_ROWS
    from worker.sqlfiles import q as query

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    rows, extra = 0, {}
    with psycopg.connect(url) as conn:
        if kind.startswith("export"):
            r = export_day(conn, DAY, TZ, Path(out), **({"workbook_max_rows": MAX_ROWS} if kind == "export_sheet" else {}))
            rows, extra = sum(r.manifest["rows"].values()), r.seconds
        elif kind == "copy":
            rows = _copy_to_file(conn, BARE_COPY, Path(out) / "copy.csv")
        elif kind == "copy_query":
            stmt = "COPY (" + query("export_rows") + ") TO STDOUT WITH (FORMAT csv, HEADER)"
            rows = _copy_to_file(conn, stmt, Path(out) / "copy_query.csv", query("export_session_tz")) - 1
        elif kind == "verify":
            r = verify_files(conn, Path(out), TZ, now=business_day(DAY, TZ).end)
            rows, extra = r.files_checked, {"findings": len(r.findings)}
        elif kind == "reconcile":
            r = reconcile(conn, DAY, TZ)
            rows = len(r.mismatches)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    q.put((kind, seconds, rows, peak / 1024, base / 1024, extra))


def run(kind: str, url: str, out: str) -> tuple:
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    p = ctx.Process(target=_child, args=(kind, url, out, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="ledger transactions (90 %% pays, 10 %% refunds)")
    ap.add_argument("--keep", action="store_true", help="keep the database and files")
    args = ap.parse_args()
    from worker.migrations import migrate
    from worker.reports.businessday import business_day

    refunds = args.rows // 10
    pays = args.rows - refunds
    name = f"iotledger_bench_{uuid.uuid4().hex[:8]}"
    twin = name + "_b"
    with psycopg.connect(SERVER, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _db(name)
    out = tempfile.mkdtemp(prefix="bench_reports_")
    try:
        migrate(url)
        bd = business_day(DAY, TZ)
        step = (bd.end - bd.start).total_seconds() / (pays + 2)
        t0 = time.perf_counter()
        with psycopg.connect(url) as conn:
            params = {"start": bd.start, "step": step, "pays": pays, "refunds": refunds}
            for statement in (s.strip() for s in GENERATE.split(";\n")):
                if statement.strip("\n ").replace("\n", "").lstrip("-").strip():
                    conn.execute(statement, params if "%(" in statement else None)
        gen = time.perf_counter() - t0
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
            (entries,) = conn.execute("SELECT count(*) FROM journal_entries").fetchone()
            (n_orders,) = conn.execute("SELECT count(*) FROM orders").fetchone()
        with psycopg.connect(SERVER, autocommit=True) as c:
            c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(twin), sql.Identifier(name)))
        print(f"generated {entries:,} journal entries ({pays:,} pays, {refunds:,} refunds), {n_orders:,} orders, "
              f"{pays + pays // 200:,} expected orders in {gen:.1f} s (set-based SQL, triggers on)")
        print(f"{'job':44} {'seconds':>8} {'rows':>10} {'rows/s':>10} {'peak RSS MiB':>13} {'(idle)':>7}")
        results = dict(
            export=("export (first: close the day)", run("export", url, out + "/a")),
            export_sheet=("export (first), workbook of every row", run("export_sheet", _db(twin), out + "/c")),
            export2=("export again (closed day, regenerated)", run("export2", url, out + "/b")),
            copy=("ceiling: bare COPY of the ledger rows TO file", run("copy", url, out)),
            copy_query=("COPY of the export's query TO file", run("copy_query", url, out)),
            verify=("files verify (the series of the first)", run("verify", url, out + "/a")),
            reconcile=("reconcile (1 day, all orders)", run("reconcile", url, out)),
        )
        for label, (kind, seconds, rows, peak, base, _) in results.values():
            rate = f"{rows / seconds:,.0f}" if kind not in ("reconcile", "verify") else "-"
            print(f"{label:44} {seconds:8.2f} {rows:>10,} {rate:>10} {peak:13.0f} {base:7.0f}")
        copy_s = results["copy"][1][1]
        first, full, again = results["export"][1], results["export_sheet"][1], results["export2"][1]
        for label, r in (("export", first), ("export, workbook of every row", full)):
            print(f"{label}: seconds per phase: " + ", ".join(f"{k} {v:.2f}" for k, v in r[5].items()))
        print(f"export / bare COPY ceiling ({copy_s:.2f} s): first {first[1] / copy_s:.2f}x (peak {first[3]:.0f} MiB; "
              f"goal 2x, 400 MiB), again {again[1] / copy_s:.2f}x; with a workbook of every row "
              f"{full[1] / copy_s:.2f}x (peak {full[3]:.0f} MiB; its workbook {full[5].get('workbook', 0.0):.2f} s); "
              f"COPY of the export's query {results['copy_query'][1][1] / copy_s:.2f}x")
        print(f"files verify {results['verify'][1][1]:.2f} s ({results['verify'][1][1] / copy_s:.2f}x the COPY, "
              f"{results['verify'][1][5]['findings']} findings); reconcile found {results['reconcile'][1][2]:,} "
              f"mismatches for {n_orders:,} orders")
        folder = Path(out) / "a" / str(DAY)
        print(f"settlement CSV {os.path.getsize(folder / f'settlement-{DAY}.csv') / 2**20:.0f} MiB, workbook of every row "
              f"{os.path.getsize(Path(out) / 'c' / str(DAY) / f'settlement-{DAY}.xlsx') / 2**20:.0f} MiB; bare COPY CSV "
              f"{os.path.getsize(Path(out) / 'copy.csv') / 2**20:.0f} MiB")
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
            with psycopg.connect(SERVER, autocommit=True) as c:
                for db in (name, twin):
                    c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        else:
            print(f"kept databases {name}, {twin} and files in {out}")


if __name__ == "__main__":
    main()
