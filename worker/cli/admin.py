"""`iotledger migrate`, `iotledger services up|down|status`, `iotledger run`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from worker import services
from worker.migrations import migrate
from worker.runtime import allow_new_services, app_endpoints, app_settings
from worker.sqlfiles import sql_dir


def cmd_migrate(args: argparse.Namespace) -> int:
    allow_new_services()
    applied = migrate(app_endpoints().database_url)
    if args.json:
        print(json.dumps({"applied": applied}))
    else:
        print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "; schema up to date"))
    return 0


def cmd_services(args: argparse.Namespace) -> int:
    s = app_settings()
    if args.action == "up":
        allow_new_services()
        ep = app_endpoints()
        urls = {"database_url": ep.database_url}
        if s.broker_url:  # RabbitMQ (or a Redis) named by BROKER_URL: no embedded Redis is needed
            urls["broker_url"] = ep.broker_url
        else:
            urls["redis_url"] = ep.redis_url
        if args.json:
            print(json.dumps({k: services.masked(v) for k, v in urls.items()}))
        else:  # for `export $(iotledger services up)`: the real URLs
            for key, url in urls.items():
                print(f"{key.upper()}={url}")
    elif args.action == "down":
        stopped = services.down(s)
        if args.json:
            print(json.dumps({"stopped": stopped}))
        else:
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    else:
        state = services.status(s)
        if args.json:
            print(json.dumps(state))
        else:
            for name, st in state.items():
                where = st.get("url") or st.get("data_dir")
                if st["kind"] == "embedded":
                    head = f"embedded, {'running' if st['running'] else 'stopped'}"
                else:
                    head = "external"
                print(f"{name}: {head}, {'answers' if st['answers'] else 'does not answer'} ({where})")
        if not all(st["answers"] for st in state.values()):
            return 3  # a script or a health check can tell: a service does not answer
    return 0


def procfile_path() -> Path:
    return sql_dir().parent / "Procfile"


def cmd_run(args: argparse.Namespace) -> int:
    procfile = procfile_path()
    names = [line.split(":", 1)[0].strip() for line in procfile.read_text().splitlines()
             if ":" in line and not line.lstrip().startswith("#")]
    unknown = [p for p in args.processes or [] if p not in names]
    if unknown:
        print(f"iotledger run: no process {', '.join(map(repr, unknown))} in {procfile} (known: {', '.join(names)})",
              file=sys.stderr)
        return 2
    allow_new_services()
    ep = app_endpoints()
    migrate(ep.database_url)
    env = dict(os.environ, DATABASE_URL=ep.database_url, BROKER_URL=ep.broker_url)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    print(f"services: {services.masked(ep.database_url)} {services.masked(ep.broker_url)}; starting {procfile} "
          "(Ctrl-C stops)", file=sys.stderr)
    port = str(app_settings().web_port)  # honcho would otherwise hand the web process PORT=5000
    cmd = [sys.executable, "-m", "honcho", "-f", str(procfile), "-d", str(procfile.parent), "start", "-p", port]
    if args.processes:
        cmd += args.processes
    # honcho and its processes run in their own session: Ctrl-C reaches only this process, which
    # asks honcho once (SIGINT) to stop them; each gets a single SIGTERM and stops gracefully
    # (dramatiq finishes its messages, gunicorn its requests) instead of a second signal's hard stop
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, _interrupted)  # a process manager's stop is a Ctrl-C: one graceful stop
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            print("iotledger run: stopping the processes gracefully (Ctrl-C again does not hurry them)",
                  file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "migrate",
        help="apply the pending SQL migrations of sql/ (idempotent, safe to run concurrently)",
        description="Apply sql/NNN_*.sql in order, each once, recording them in schema_migrations.",
    )
    p.add_argument("--json", action="store_true", help="print the migrations applied as one JSON object")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "services",
        help="start, stop or show the embedded PostgreSQL and Redis",
        description="Manage the embedded PostgreSQL and Redis used when DATABASE_URL / REDIS_URL (and BROKER_URL) "
        "are unset. 'up' prints their URLs (export them to share the services with other tools); 'status' says "
        "whether each service answers, the RabbitMQ of an amqp:// BROKER_URL included (passwords masked); "
        "exit 3 when one does not answer.",
    )
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--json", action="store_true", help="one JSON object (passwords masked)")
    p.set_defaults(func=cmd_services)

    p = sub.add_parser(
        "run",
        help="start the services, migrate, and run the Procfile's processes (web, worker, clock, console)",
        description="The main job: services up, migrate, then every Procfile process under honcho.",
    )
    p.add_argument("processes", nargs="*", help="only these Procfile processes (default: all)")
    p.set_defaults(func=cmd_run)
