"""`iotledger console | users | overview | days | day`: the finance console and the command line's
view of the same pages (their --json is what the pages show, from worker/reports/views.py).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from datetime import date
from pathlib import Path

from worker.cli import argtypes
from worker.console import users
from worker.reports import views
from worker.runtime import allow_new_services, app_endpoints, app_settings, connect

GUNICORN_CONFIG = "python:worker.console.gunicorn_conf"


def cmd_console(args: argparse.Namespace) -> int:
    from worker.console.secret import session_secret
    from worker.migrations import migrate

    s = app_settings()
    allow_new_services()
    ep = app_endpoints()
    migrate(ep.database_url)  # the console's tables come with the migrations
    session_secret(s)  # made (or read) once here, before the server's processes start
    out = Path(args.out).absolute()
    env = dict(os.environ, DATABASE_URL=ep.database_url)
    argv = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG]
    if args.host or args.port:
        argv += ["-b", f"{args.host or s.console_host}:{args.port or s.console_port}"]
    if args.workers:
        argv += ["-w", str(args.workers)]
    argv.append(f"worker.runtime:console_app({str(out)!r})")
    print(f"iotledger console: http://{args.host or s.console_host}:{args.port or s.console_port}/ "
          f"(settlement files in {out})", file=sys.stderr)
    os.execve(sys.executable, argv, env)
    return 0  # pragma: no cover (exec does not return)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise users.UserError("password: the two entries differ")
    return first


def cmd_users(args: argparse.Namespace) -> int:
    if args.users_command == "add":
        password = _password(args)
        with connect() as conn:
            user = users.add_user(conn, args.name, args.role, password)
        print(json.dumps(user) if args.json else f"added {user['name']} ({user['role']})")
    elif args.users_command == "disable":
        with connect() as conn:
            users.disable_user(conn, args.name)
        print(f"disabled {args.name}; their sessions ended")
    else:
        with connect() as conn:
            rows = users.list_users(conn)
        if args.json:
            print(json.dumps({"users": rows}, indent=2))
        else:
            for u in rows:
                print(f"{u['name']:24} {u['role']:9} created {u['created_at'][:19]}"
                      + (f"  disabled {u['disabled_at'][:19]}" if u["disabled_at"] else f"  {u['sessions']} session(s)"))
            if not rows:
                print("no users: add one with iotledger users add NAME --role viewer|resolver")
    return 0


def cmd_overview(args: argparse.Namespace) -> int:
    s = app_settings()
    with connect() as conn:
        data = views.overview(conn, s.settlement_tz)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    c = data["close"]
    print(f"last closed day {data['last_closed_day']} ({data['timezone']}): {c['state']}"
          + (f", reconcile run #{c['reconcile']['run_id']}: {c['reconcile']['mismatch_count']} mismatch(es)"
             if c["reconcile"] else ""))
    for t in data["last_day_totals"]:
        print(f"  merchant {t['mch_id']} {t['currency']}: paid {t['paid']}  refunded {t['refunded']}  net {t['net']}")
    v = data["files_verify"]
    print("files verify: never run" if v is None else
          f"files verify {v['ran_at'][:19]} ({v['ran_by'] or v['source']}): "
          + ("ok" if v["ok"] else f"{v['findings_count']} problem(s)"))
    print(f"net per merchant {data['chart']['first_day']} .. {data['chart']['last_day']}:")
    for series in data["chart"]["series"]:
        print(f"  {series['mch_id']} {series['currency']}: {series['total_net']}")
    m = data["open_mismatches"]
    print(f"open mismatches: {m['total']}")
    for cl in m["classes"]:
        ages = ", ".join(f"{b} {n}" for b, n in zip(m["age_buckets"], cl["by_age"]) if n)
        print(f"  {cl['class']:26} {cl['count']:6}  ({ages})")
    return 0


def cmd_days(args: argparse.Namespace) -> int:
    try:
        before = date.fromisoformat(args.before) if args.before else None
    except ValueError:
        print(f"iotledger days: --before: expected YYYY-MM-DD, got {args.before!r}", file=sys.stderr)
        return 2
    with connect() as conn:
        data = views.days(conn, before, args.limit)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    for d in data["days"]:
        net = ", ".join(f"{t['net']} {t['currency']}" for t in d["totals"])
        print(f"{d['day']}  close {d['close_status'] or '-'}  v{d['version'] or '-'}  net {net or '-'}  "
              f"mismatches {d['mismatch_count'] if d['mismatch_count'] is not None else '-'}  verify {d['verify']['state']}")
    if data["next_before"]:
        print(f"older: iotledger days --before {data['next_before']}")
    return 0


def cmd_day(args: argparse.Namespace) -> int:
    s = app_settings()
    try:
        when = date.fromisoformat(args.date)
    except ValueError:
        print(f"iotledger day: DATE: expected YYYY-MM-DD, got {args.date!r}", file=sys.stderr)
        return 2
    with connect() as conn:
        data = views.day(conn, when, s.settlement_tz)
    if data is None:
        print(f"iotledger day: nothing recorded for {when}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"{data['day']}: close {data['close']['state']}, verify {data['verify']['state']}")
    for v in data["versions"]:
        print(f"  version {v['version']} ({v['status']}) {v['created_at'][:19]}: "
              + ", ".join(f"{t['net']} {t['currency']}" for t in v["totals"]))
        for f in v["files"]:
            print(f"    {f['name']}  {f['sha256']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the parser."""
    p = sub.add_parser(
        "console", help="the finance console: a web app behind a sign-in on its own address (default 127.0.0.1:8001)",
        description="Serve the finance console under gunicorn (the Procfile's console): overview, closed days and "
        "their files, order lookup. Never on the ingress's address. Users: iotledger users add NAME --role ...")
    p.add_argument("--host", help="address to listen on (default IOTLEDGER_CONSOLE_HOST, 127.0.0.1)")
    p.add_argument("--port", type=argtypes.port, help="port (default IOTLEDGER_CONSOLE_PORT, 8001)")
    p.add_argument("--workers", type=argtypes.positive_int, help="processes (default IOTLEDGER_CONSOLE_WORKERS, 2)")
    p.add_argument("--out", metavar="DIR", default="reports", help="settlement files folder (default: ./reports)")
    p.set_defaults(func=cmd_console)

    p = sub.add_parser("users", help="the console's users: add, list, disable",
                       description="Users of the finance console. A viewer sees every page; a resolver may also act "
                       "(resolve or reopen a mismatch, run files verify). Passwords are read from the terminal, "
                       "or from the first line of stdin, never from the command line.")
    users_sub = p.add_subparsers(dest="users_command", metavar="COMMAND", required=True)
    a = users_sub.add_parser("add", help="add a user (the password is asked for, or read from stdin)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--role", required=True, choices=users.ROLES)
    a.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    a.add_argument("--json", action="store_true", help="print the user added as JSON")
    a.set_defaults(func=cmd_users)
    ls = users_sub.add_parser("list", help="list the users (never their passwords)")
    ls.add_argument("--json", action="store_true", help="one JSON object")
    ls.set_defaults(func=cmd_users)
    d = users_sub.add_parser("disable", help="disable a user and end their sessions")
    d.add_argument("name", metavar="NAME")
    d.set_defaults(func=cmd_users)

    p = sub.add_parser("overview", help="the console's overview: last closed day, files verify, 30 days' net, "
                       "open mismatches", description="What the console's overview page shows, from the same queries.")
    p.add_argument("--json", action="store_true", help="one JSON object (the page's figures)")
    p.set_defaults(func=cmd_overview)

    p = sub.add_parser("days", help="closed days, newest first (the console's Days page)",
                       description="Closed days with their close status, files version, net and verify status.")
    p.add_argument("--before", metavar="YYYY-MM-DD", help="days before this one (the next page)")
    p.add_argument("--limit", type=argtypes.positive_int, default=views.DAYS_PAGE, help="days per page (default 30)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_days)

    p = sub.add_parser("day", help="one closed day: its files, manifests, versions and verify status",
                       description="What the console's page of one day shows. Exit 1 when nothing is recorded for it.")
    p.add_argument("date", metavar="DATE", help="the business day, YYYY-MM-DD")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_day)

