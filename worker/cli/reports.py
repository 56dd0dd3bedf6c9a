"""`iotledger reconcile`, `export`, `clock`, `demo`: the reports from the command line.

Exit codes as everywhere: 0 ok, 1 mismatches found (reconcile) or the check failed, 2 usage or
configuration error, 3 a service unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from worker import logs
from worker.cli import argtypes
from worker.errors import PermanentError
from worker.money import decimal as money
from worker.reports.alerts import AlertSink
from worker.reports.businessday import last_closed_day, parse_date
from worker.runtime import allow_new_services, app_endpoints, app_settings, connect

log = logs.get("worker.cli.reports")


def _day(args: argparse.Namespace):
    s = app_settings()
    return parse_date(args.date) if args.date else last_closed_day(datetime.now(timezone.utc), s.settlement_tz)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from worker.reports.reconcile import reconcile

    s = app_settings()
    try:
        day = _day(args)
    except PermanentError as exc:
        print(f"iotledger reconcile: {exc}", file=sys.stderr)
        return 2
    sink = AlertSink(s.alert_webhook_url, per_class=s.alerts_per_class)
    with connect() as conn:
        result = reconcile(conn, day, s.settlement_tz, sink)
        sink.deliver_pending(conn)
    log.info("reconcile.done", business_date=str(day), run_id=result.run_id, mismatches=len(result.mismatches),
             new_alerts=result.new_alerts)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False, default=str))
    else:
        d = result.day
        print(f"business day {d.day} in {d.tz_name} ({d.hours:g} h, {d.start.isoformat()} to {d.end.isoformat()}), "
              f"run #{result.run_id}")
        for t in result.totals:
            print(f"  merchant {t['mch_id']} {t['currency']}: {t['entries']} entr(y/ies), paid {money(t['paid_cents'])}, "
                  f"refunded {money(t['refunded_cents'])}, net {money(int(t['paid_cents']) - int(t['refunded_cents']))}")
        if result.expected:
            print(f"  {result.matched} of {result.expected} expected order(s) matched a posted pay")
        for sk in result.skipped:
            print(f"  {sk['class']} not checked for merchant {sk['mch_id']}: {sk['reason']}")
        if result.ok:
            print("everything matches")
        for m in result.mismatches:
            amounts = ", ".join(f"{k} {money(v)}" for k, v in (("expected", m.expected_amount),
                                                               ("gateway", m.gateway_amount),
                                                               ("ledger", m.ledger_amount)) if v is not None)
            reason = m.details.get("reason") if isinstance(m.details, dict) else None
            print(f"  {m.cls:26} {m.subject:28} {m.currency or '':4} {amounts}  {m.description}"
                  + (f" ({reason})" if reason else ""))
        if result.mismatches:
            print(f"{len(result.mismatches)} mismatch(es), {result.new_alerts} new alert(s)")
    return 1 if result.mismatches else 0


def cmd_export(args: argparse.Namespace) -> int:
    from worker.reports.export import ExportError, FileClashError, export_day

    s = app_settings()
    try:
        day = _day(args)
    except PermanentError as exc:
        print(f"iotledger export: {exc}", file=sys.stderr)
        return 2
    with connect() as conn:
        try:
            result = export_day(conn, day, s.settlement_tz, Path(args.out), restate=args.restate)
        except ExportError as exc:
            print(f"iotledger export: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, FileClashError) else 1  # a folder to fix (2), or a finding (1)
    m = result.manifest
    if args.json:
        print(json.dumps({"status": result.status, "settlement_date": str(day), "folder": str(result.folder),
                          "files": {k: str(v) for k, v in result.files.items()}, "manifest": m}, indent=2))
        return 0
    if result.status == "no_change":
        print(f"nothing to restate for {day}: the ledger gives the same files as version {m['version']}; "
              f"nothing written")
        return 0
    print(f"{result.status} settlement files for {day} ({m['timezone']}, version {m['version']}) in {result.folder}:")
    for key in ("settlement", "workbook", "summary", "manifest"):
        print(f"  {result.files[key]}")
    changes = m.get("changes")
    if changes and changes.get("known"):
        print(f"  supersedes version {m['supersedes']['version']}: {len(changes['added'])} row(s) added, "
              f"{len(changes['removed'])} removed, {len(changes['changed'])} changed")
    print(f"  {m['rows']['business_day']} transaction(s), {m['rows']['prior_day_adjustments']} prior-day adjustment(s)"
          + (f" from {', '.join(m['prior_day_adjustment_dates'])}" if m["prior_day_adjustment_dates"] else ""))
    for currency, t in sorted(m["totals"].items()):
        print(f"  {currency}: gross {money(t['gross_cents'])}, refunds {money(t['refunds_cents'])}, "
              f"net {money(t['net_cents'])}")
    for t in m["totals_by_merchant"]:
        print(f"    merchant {t['mch_id']} {t['currency']}: {t['count']} row(s), net {money(t['net_cents'])}")
    return 0


def cmd_files_verify(args: argparse.Namespace) -> int:
    from worker.reports.verify import verify_files
    from worker.reports.views import record_verify

    s = app_settings()
    with connect() as conn:
        report = verify_files(conn, Path(args.out), s.settlement_tz)
        record_verify(conn, report, "cli")  # the console's overview shows the last run
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        if report.last_day is None:
            print("no closed day yet: nothing to verify")
        else:
            print(f"{report.closed_days} closed day(s) {report.first_day} .. {report.last_day}, "
                  f"{report.files_checked} file(s) checked in {report.out_dir}"
                  + (f", {report.entries_awaiting_next_file} entr(y/ies) awaiting the next file"
                     if report.entries_awaiting_next_file else ""))
        for f in report.findings:
            print(f"PROBLEM [{f.check}] " + (f"{f.settlement_date}: " if f.settlement_date else "") + f.detail)
        print("ok" if report.ok else f"{len(report.findings)} problem(s)")
    return 0 if report.ok else 1


def cmd_clock(args: argparse.Namespace) -> int:
    from worker.migrations import migrate
    from worker.clock import run_clock

    s = app_settings()
    allow_new_services()
    ep = app_endpoints()
    migrate(ep.database_url)
    return run_clock(s, ep.database_url, ep.broker_url, Path(args.out), once=args.once)


def cmd_demo(args: argparse.Namespace) -> int:
    from worker.demo import MIN_ORDERS, DemoError, run_demo, summary

    if args.orders < MIN_ORDERS:
        print(f"iotledger demo: --orders: at least {MIN_ORDERS}, got {args.orders}", file=sys.stderr)
        return 2
    s = app_settings()
    allow_new_services()
    ep = app_endpoints()
    # the demo narrates with a progress bar and a summary; its processes log to files, and the
    # in-process log lines (posting, sweep, alerts) would only garble the bar
    logs.configure(s.merchants.all_keys(), level="ERROR")
    try:
        report = run_demo(s, ep.database_url, ep.broker_url, Path(args.out), orders=args.orders, seed=args.seed,
                          fresh_database=not args.in_place,
                          drop_database=not args.keep and not ep.embedded_db)
        if ep.embedded_db or ep.embedded_redis:
            which = " and ".join(n for n, e in (("PostgreSQL", ep.embedded_db), ("Redis", ep.embedded_redis)) if e)
            report.services_left = (f"The embedded {which} in {s.data_dir} keep running for the next command; "
                                    "stop them with: iotledger services down")
    except DemoError as exc:
        print(f"iotledger demo: {exc}", file=sys.stderr)
        return 1
    print(summary(report), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({"ok": not report.problems, "database_url": report.database_url,
                          "business_date": str(report.day), "reconcile": report.reconcile, "export": report.export,
                          "totals": report.totals, "entries": report.entries, "lost_order": report.lost_order,
                          "forged_status": report.forged_status, "problems": report.problems}, default=str))
    return 1 if report.problems else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the parser."""
    p = sub.add_parser(
        "reconcile",
        help="compare expected orders, the gateway and the ledger for one business day (exit 1 on mismatches)",
        description="Reconcile one business day of the settlement time zone (IOTLEDGER_SETTLEMENT_TZ): every "
        "difference between the merchant's expected orders, what IOTPay said and the ledger is classified, "
        "stored and alerted once. Exit 0 when everything matches, 1 when there are mismatches.",
    )
    p.add_argument("--date", metavar="YYYY-MM-DD", help="business day (default: the last closed day)")
    p.add_argument("--json", action="store_true", help="print the run as one JSON object")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser(
        "export",
        help="write one business day's settlement CSV, workbook, summary and manifest (atomic; reproducible)",
        description="Write <out>/<date>/settlement-<date>.csv (one row per pay, refund, void, reversal), "
        "settlement-<date>.xlsx (the same rows, identifiers as text, with a totals sheet), summary-<date>.csv "
        "(per merchant and currency: count, gross, refunds, net) and manifest-<date>.json (rows, SHA-256 of "
        "each file, totals, the previous day's manifest). The first export of an ended day closes it: exporting "
        "it again gives the same files, and later events for it go into the next day's file as prior-day "
        "adjustments. A day not ended yet is exported as settlement-<date>.provisional.csv etc. and not recorded. "
        "Exit 0 when written or given back, 1 when a closed day's files cannot be reproduced (see --restate).",
    )
    p.add_argument("--date", metavar="YYYY-MM-DD", help="business day (default: the last closed day)")
    p.add_argument("--out", metavar="DIR", default="reports", help="output folder (default: ./reports)")
    p.add_argument("--json", action="store_true", help="print the status, the files and the manifest as one JSON object")
    p.add_argument("--restate", action="store_true",
                   help="write a new version of a closed day beside the old one (settlement-D.vN.csv, .xlsx, "
                        "summary-D.vN.csv, manifest-D.vN.json; the old files and manifest stay). It holds the entries "
                        "already in that day's file, rendered from the ledger as it is now (card, channel, order "
                        "numbers corrected since), plus entries of that business day that are in no file yet; "
                        "entries of that day already settled in a later day's file stay there (each entry is in "
                        "exactly one file). The manifest names the version it supersedes and the entries added, "
                        "removed and changed. A restate that would change nothing writes nothing and says so")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "files", help="audit the settlement file series (files verify)",
        description="Commands about the settlement files as a series.")
    files_sub = p.add_subparsers(dest="files_command", metavar="COMMAND", required=True)
    v = files_sub.add_parser(
        "verify", help="check every closed day's files, that each ledger entry is in exactly one file, the "
        "chain of manifests and the totals; exit 1 listing every problem",
        description="The audit finance runs (and the clock runs nightly): (1) every closed day's files on disk "
        "match their manifests' SHA-256, every version; where a settlement file is missing or edited the entries "
        "are named; (2) every journal entry dated before the end of the last closed day is in exactly one file; "
        "(3) no gap in the series: each manifest names the previous day's manifest by SHA-256; (4) the files' "
        "net per merchant and currency equals the ledger's. Exit 0 when all hold, 1 listing every problem.")
    v.add_argument("--out", metavar="DIR", default="reports", help="settlement files folder (default: ./reports)")
    v.add_argument("--json", action="store_true", help="print the report as one JSON object")
    v.set_defaults(func=cmd_files_verify)

    p = sub.add_parser(
        "clock",
        help="run the periodic jobs: sweep, redrive and alerts every minute, reconcile+export nightly",
        description="The Procfile's clock (APScheduler). Every minute: the gateway sweep, the inbox redrive, "
        "alert delivery. After each business day closes in IOTLEDGER_SETTLEMENT_TZ (00:15 local): reconcile, "
        "export and the daily summary, catching up missed days at start-up. Several clocks may run: each "
        "job slot is claimed in PostgreSQL (job_runs) and runs once.",
    )
    p.add_argument("--out", metavar="DIR", default="reports", help="settlement files folder (default: ./reports)")
    p.add_argument("--once", action="store_true", help="run every job once now and exit (1 if one failed)")
    p.set_defaults(func=cmd_clock)

    p = sub.add_parser(
        "demo",
        help="play one business day end to end (simulator, ingress, workers, sweep, reconcile, export) and explain it",
        description="Start the IOTPay simulator, the ingress and the workers as subprocesses on the configured (or "
        "embedded) PostgreSQL and Redis, in a new database; play yesterday's business day (pays, partial refunds, "
        "a void, duplicate notifies, a forged notify, a lost notify recovered by the sweep, two differences); "
        "reconcile it, export its settlement files and print what happened. Exit 0 when all went as planned.",
    )
    p.add_argument("--out", metavar="DIR", default="reports", help="settlement files folder (default: ./reports)")
    p.add_argument("--orders", type=argtypes.positive_int, default=24, help="card and WeChat pays to play (default 24, at least 8)")
    p.add_argument("--seed", type=int, default=7, help="simulator seed (duplicates and delays are reproducible)")
    p.add_argument("--keep", action="store_true",
                   help="keep the scratch database the demo creates on an external server (dropped by default)")
    p.add_argument("--in-place", action="store_true",
                   help="use DATABASE_URL's database as it is (empty and migrated) instead of creating a new one")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON object on stdout (the prose on stderr)")
    p.set_defaults(func=cmd_demo)
