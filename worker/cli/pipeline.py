"""`iotledger web | worker | redrive | inbox | replay`: the notify pipeline's commands (thin).

`web` and `worker` replace this process with gunicorn / dramatiq (signals then reach them
directly, as honcho and process managers expect), after resolving the database and the broker
(starting the embedded ones when DATABASE_URL / REDIS_URL and BROKER_URL are unset).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from worker.cli import argtypes
from worker.pipeline import inbox
from worker.runtime import allow_new_services, app_endpoints, app_settings, connect

GUNICORN_APP = "worker.runtime:ingress_app()"
GUNICORN_CONFIG = "python:worker.pipeline.gunicorn_conf"
DRAMATIQ_MODULE = "worker.pipeline.workers"
# how long `iotledger worker` lets running messages finish on SIGTERM
WORKER_SHUTDOWN_MS = 30_000


def _service_env() -> dict[str, str]:
    """The environment for gunicorn / dramatiq: resolved URLs and the metrics folders."""
    settings = app_settings()
    allow_new_services()  # web and worker are long-running services: they may start the embedded ones
    ep = app_endpoints()
    env = dict(os.environ, DATABASE_URL=ep.database_url, BROKER_URL=ep.broker_url)
    env.setdefault("dramatiq_prom_db", str(settings.data_dir / "prometheus" / "dramatiq"))
    # dramatiq's metrics server listens on every interface unless told; the web's /metrics
    # serves the same figures on one host, so keep it local unless configured otherwise
    env.setdefault("dramatiq_prom_host", "127.0.0.1")
    return env


def cmd_web(args: argparse.Namespace) -> int:
    settings = app_settings()
    env = _service_env()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(settings.data_dir / "prometheus" / "web")
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG]
    if args.host or args.port:
        argv += ["-b", f"{args.host or settings.web_host}:{args.port or settings.web_port}"]
    if args.workers:
        argv += ["-w", str(args.workers)]
    argv.append(GUNICORN_APP)
    os.execve(sys.executable, argv, env)
    return 0  # pragma: no cover (exec does not return)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = app_settings()
    env = _service_env()
    # dramatiq's metrics folder holds per-process files: a fresh run starts from an empty one
    shutil.rmtree(env["dramatiq_prom_db"], ignore_errors=True)
    Path(env["dramatiq_prom_db"]).mkdir(parents=True, exist_ok=True)
    if args.metrics_port is not None:
        env["dramatiq_prom_port"] = str(args.metrics_port)
    argv = [sys.executable, "-m", "dramatiq", DRAMATIQ_MODULE,
            "--processes", str(args.processes or settings.worker_processes),
            "--threads", str(args.threads or settings.worker_threads),
            "--skip-logging", "--worker-shutdown-timeout", str(WORKER_SHUTDOWN_MS)]
    os.execve(sys.executable, argv, env)
    return 0  # pragma: no cover


def cmd_redrive(args: argparse.Namespace) -> int:
    from worker.pipeline.redrive import redrive_once

    ep = app_endpoints()
    n = redrive_once(ep.database_url, ep.broker_url, app_settings())
    if args.json:
        print(json.dumps({"redriven": n}))
    else:
        print(f"redriven: {n} inbox row(s) queued again")
    return 0


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def cmd_inbox(args: argparse.Namespace) -> int:
    app_settings()
    with connect() as conn:
        rows = inbox.list_rows(conn, args.state, args.limit)
    if args.json:
        print(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2))
        return 0
    print(f"{'id':>8}  {'state':<8}  {'outcome':<14}  {'received_at':<25}  {'mch_id':<10}  {'pay_order_id':<26}  reason")
    for r in rows:
        print(f"{r['id']:>8}  {r['state']:<8}  {r['outcome'] or '-':<14}  {r['received_at'].isoformat(timespec='seconds'):<25}  "
              f"{r['mch_id'] or '-':<10}  {r['pay_order_id'] or '-':<26}  {r['reason'] or ''}")
    print(f"{len(rows)} row(s)" + (f" in state {args.state}" if args.state else ""), file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from worker.pipeline.process import replay

    if bool(args.ids) == bool(args.state):
        print("iotledger replay: give inbox ids or --state, not both", file=sys.stderr)
        return 2
    settings = app_settings()
    with connect() as conn:
        ids = list(args.ids) if args.ids else inbox.ids_in_state(conn, args.state)
        missing = [i for i in ids if inbox.load(conn, i) is None]
        conn.rollback()
        if missing:
            print(f"iotledger replay: no inbox row {', '.join(map(str, missing))} (see iotledger inbox)", file=sys.stderr)
            return 2
        results = replay(conn, ids, settings)
    bad = 0
    rows = []
    for inbox_id, res in zip(ids, results):
        if isinstance(res, Exception):
            bad += 1
            rows.append({"inbox_id": inbox_id, "outcome": "failed", "reason": str(res), "pay_order_id": None})
        else:
            rows.append({"inbox_id": inbox_id, "outcome": res.outcome, "reason": res.reason,
                         "pay_order_id": res.pay_order_id})
    if args.json:
        print(json.dumps({"replayed": len(ids), "failed": bad, "rows": rows}, indent=2))
    for r in rows if not args.json else []:
        if r["outcome"] == "failed" and r["pay_order_id"] is None:
            print(f"{r['inbox_id']}: failed: {r['reason']}")
            continue
        print(f"{r['inbox_id']}: {r['outcome']}" + (f" ({r['reason']})" if r["reason"] else "")
              + (f" pay_order_id={r['pay_order_id']}" if r["pay_order_id"] else ""))
    print(f"replayed {len(ids)} row(s), {bad} failed", file=sys.stderr)
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the parser."""
    p = sub.add_parser("web", help="serve the notify webhook (gunicorn): POST /iotpay/notify, /healthz, /readyz, /metrics",
                       description="Run the ingress under gunicorn. Defaults from IOTLEDGER_WEB_HOST, PORT / "
                       "IOTLEDGER_WEB_PORT, IOTLEDGER_WEB_WORKERS; other gunicorn options via GUNICORN_CMD_ARGS.")
    p.add_argument("--host", help="address to bind (default: IOTLEDGER_WEB_HOST)")
    p.add_argument("--port", type=argtypes.port, help="port to bind (default: PORT or IOTLEDGER_WEB_PORT)")
    p.add_argument("--workers", type=argtypes.positive_int, help="gunicorn worker processes (default: IOTLEDGER_WEB_WORKERS)")
    p.set_defaults(func=cmd_web)

    p = sub.add_parser("worker", help="run the dramatiq workers that post inbox rows to the ledger",
                       description="Run dramatiq on the queue IOTLEDGER_QUEUE. Its Prometheus metrics are served on "
                       "dramatiq_prom_port (default 9191) and, on the same host, by the web's /metrics.")
    p.add_argument("--processes", type=argtypes.positive_int, help="worker processes (default: IOTLEDGER_WORKER_PROCESSES)")
    p.add_argument("--threads", type=argtypes.positive_int, help="threads per process (default: IOTLEDGER_WORKER_THREADS)")
    p.add_argument("--metrics-port", type=argtypes.port, help="port of dramatiq's metrics server (default: dramatiq_prom_port or 9191)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("redrive", help="queue again the inbox rows not done after IOTLEDGER_REDRIVE_AFTER_SECONDS",
                       description="Run the redrive once (the clock runs it every minute).")
    p.add_argument("--json", action="store_true", help="print the count as one JSON object")
    p.set_defaults(func=cmd_redrive)

    p = sub.add_parser("inbox", help="list inbox rows (optionally of one state)",
                       description="List stored notifies with their state, outcome and reason (bodies are not shown).")
    p.add_argument("--state", choices=inbox.STATES, help="only rows in this state")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of a table")
    p.add_argument("--limit", type=argtypes.positive_int, default=1000, help="at most this many rows (default 1000)")
    p.set_defaults(func=cmd_inbox)

    p = sub.add_parser("replay", help="process inbox rows again (by id, or every row in a state)",
                       description="Post inbox rows again now, in this process. A row that already posted posts "
                       "nothing new. Exit 1 when a row fails again.")
    p.add_argument("ids", nargs="*", type=argtypes.positive_int, metavar="ID", help="inbox ids")
    p.add_argument("--state", choices=inbox.STATES, help="every row in this state (e.g. failed, dead)")
    p.add_argument("--json", action="store_true", help="print each row's outcome as one JSON object")
    p.set_defaults(func=cmd_replay)
