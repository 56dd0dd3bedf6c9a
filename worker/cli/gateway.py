"""`iotledger simulate`, `iotledger expect`, `iotledger sweep`: the gateway area's commands."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from worker.cli import argtypes
from worker.errors import PermanentError
from worker.runtime import app_endpoints, app_settings, connect


def cmd_simulate(args: argparse.Namespace) -> int:
    from worker.simulator import NotifyPolicy, Simulator
    from worker.simulator.serve import serve

    settings = app_settings()
    extra = []
    for spec in args.merchant or []:
        parts = spec.split(":")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            print(f"iotledger simulate: --merchant must be MCH_ID:KEY[:LOGIN], got {spec!r}", file=sys.stderr)
            return 2
        extra.append(parts)
    try:
        policy = NotifyPolicy(seed=args.seed, drop_rate=args.drop_rate, duplicate_rate=args.duplicate_rate,
                              min_delay=args.min_delay, max_delay=args.max_delay, time_scale=args.time_scale,
                              retry_delays=tuple(float(x) for x in args.retry_delays.split(",") if x.strip()))
    except ValueError as exc:
        print(f"iotledger simulate: {exc}", file=sys.stderr)
        return 2

    def factory() -> Simulator:
        sim = Simulator(settings.merchants, seed=args.seed, policy=policy, gateway_tz=settings.gateway_tz)
        for parts in extra:
            sim.add_merchant(parts[0], parts[1], parts[2] if len(parts) > 2 else "")
        return sim

    base = f"http://{args.host}:{args.port}"
    print(f"IOTPay simulator on {base}: IOTPAY_V3_BASE_URL={base}/v3 IOTPAY_V1_BASE_URL={base}/v1 "
          f"(control API under {base}/_sim/)", file=sys.stderr, flush=True)
    serve(factory, host=args.host, port=args.port, threads=args.threads)
    return 0


def _expect_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.file:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        with stream:
            rows = []
            for n, line in enumerate(stream, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        rows.append({"__error__": f"line {n}: not valid JSON ({exc.msg})"})
            return rows
    row = {"mchId": args.mch_id, "mchOrderNo": args.mch_order_no, "amount": args.amount, "currency": args.currency,
           "channel": args.channel, "payOrderId": args.pay_order_id, "createdAt": args.created_at, "family": args.family}
    return [{k: v for k, v in row.items() if v is not None}]


def _record_rows(command: str, noun: str, rows: list[dict[str, Any]], parse: Any, save: Any, many: bool,
                 as_json: bool) -> int:
    """Validate and record each row; print the counts as one JSON line; exit 1 when any was refused."""
    settings = app_settings()
    new = known = refused = 0
    with connect() as conn:
        for i, row in enumerate(rows, start=1):
            where = f"{noun} {i}" if many else noun
            try:
                if "__error__" in row:
                    raise PermanentError(row["__error__"])
                value = parse(row)
                settings.merchants.require(value.mch_id)
                if save(conn, value):
                    new += 1
                else:
                    known += 1
            except PermanentError as exc:
                refused += 1
                print(f"iotledger {command}: {where}: {exc}", file=sys.stderr)
    if as_json:
        print(json.dumps({"recorded": new, "already_known": known, "refused": refused}))
    else:
        print(f"{new} {noun}(s) recorded, {known} already known, {refused} refused")
    return 1 if refused else 0


def cmd_expect(args: argparse.Namespace) -> int:
    from worker.gateway.expected import ExpectedOrder, record

    if not args.file and not (args.mch_id and args.mch_order_no and args.amount and args.channel):
        print("iotledger expect: give --file F, or --mch-id, --mch-order-no, --amount and --channel", file=sys.stderr)
        return 2
    return _record_rows("expect", "order", _expect_rows(args), ExpectedOrder.from_dict, record, bool(args.file),
                        args.json)


def cmd_expect_refund(args: argparse.Namespace) -> int:
    from worker.gateway.expected_refunds import ExpectedRefund, record_refund

    if args.file:
        rows = _expect_rows(args)
    elif not (args.mch_id and args.mch_refund_no and args.original_order_id and args.amount):
        print("iotledger expect-refund: give --file F, or --mch-id, --mch-refund-no, --original-order-id and --amount",
              file=sys.stderr)
        return 2
    else:
        row = {"mchId": args.mch_id, "mchRefundNo": args.mch_refund_no, "originalOrderId": args.original_order_id,
               "amount": args.amount, "currency": args.currency, "requestedAt": args.requested_at}
        rows = [{k: v for k, v in row.items() if v is not None}]
    return _record_rows("expect-refund", "refund", rows, ExpectedRefund.from_dict, record_refund, bool(args.file),
                        args.json)


def cmd_sweep(args: argparse.Namespace) -> int:
    from worker.gateway.client import GatewayClient
    from worker.gateway.ratelimit import RateLimiter
    from worker.gateway.schedule import Schedule
    from worker.gateway.sweep import open_pool, sweep_for, sweep_once

    settings = app_settings()
    connect().close()  # PostgreSQL down: fail in seconds, not after the pool's wait
    schedule = Schedule(give_up_after=timedelta(seconds=settings.sweep_give_up_seconds))
    limiter = RateLimiter(settings.query_rate_per_second)
    pool = open_pool(app_endpoints().database_url)
    try:
        with GatewayClient.from_settings(settings, max_connections=args.concurrency) as client:
            common = {"schedule": schedule, "concurrency": args.concurrency, "limiter": limiter}
            if args.for_seconds:
                reports = sweep_for(pool, client, seconds=args.for_seconds, clock=lambda: datetime.now(timezone.utc),
                                    **common)
            else:
                reports = [sweep_once(pool, client, now=datetime.now(timezone.utc), **common)]
    finally:
        pool.close()
    for report in reports:
        c = report.counts()
        if args.json:
            print(json.dumps(c))
        elif report.skipped:
            print(f"sweep at {c['now']}: skipped, another sweep is running")
        else:
            print(f"sweep at {c['now']}: {c['due']} due, {c['queried']} queried: {c['paid']} paid, {c['failed']} failed, "
                  f"{c['pending']} still pending, {c['rejected']} rejected, {c['errors']} without an answer, "
                  f"{c['gave_up']} given up, {c['released']} parked refund(s) released ({c['seconds']:.2f} s)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the parser."""
    p = sub.add_parser(
        "simulate",
        help="run the IOTPay simulator (V3 cc_query/cc_refund/cc_void, v1 query_order/refund_order, notifies)",
        description="Serve a drivable IOTPay under gunicorn (one process, threads). Merchants come from "
        "IOTPAY_MERCHANTS / IOTPAY_MERCHANTS_FILE and --merchant. The control API is documented in "
        "worker/simulator/__init__.py (create orders in any status, complete or fail them, trigger notifies).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=argtypes.port, default=8900)
    p.add_argument("--threads", type=argtypes.positive_int, default=16, help="gunicorn threads (default 16)")
    p.add_argument("--merchant", action="append", metavar="MCH_ID:KEY[:LOGIN]", help="accept this merchant too")
    p.add_argument("--seed", type=int, default=0, help="seed for ids and notify misbehaviour (reproducible)")
    p.add_argument("--drop-rate", type=float, default=0.0, help="probability a notify is never sent")
    p.add_argument("--duplicate-rate", type=float, default=0.0, help="probability a notify is sent twice")
    p.add_argument("--min-delay", type=float, default=0.0, help="seconds before a notify, at least")
    p.add_argument("--max-delay", type=float, default=0.0, help="seconds before a notify, at most (reorders)")
    p.add_argument("--retry-delays", default="60,120,300,600,1800",
                   help="seconds between notify attempts while not acknowledged (comma-separated)")
    p.add_argument("--time-scale", type=float, default=1.0, help="multiply every notify delay (0.01 = 100x faster)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "expect",
        help="record orders the checkout created, so the sweep and the reconciliation know them",
        description="Record one expected order from options, or many from JSON lines (--file F, '-' for stdin) "
        "with fields mchId, mchOrderNo, amount (cents), currency, channel, createdAt (ISO-8601 with zone), "
        "payOrderId (optional). Exit 1 when any order was refused (the field is named).",
    )
    p.add_argument("--file", metavar="F", help="JSON lines of orders ('-' for stdin)")
    p.add_argument("--mch-id")
    p.add_argument("--mch-order-no")
    p.add_argument("--pay-order-id")
    p.add_argument("--amount", type=argtypes.positive_int, help="integer cents")
    p.add_argument("--currency", default=None, help="CAD (default) or USD")
    p.add_argument("--channel", help="PF_CC, UPI_EX (V3), WX_APP, ALIPAY_MOBILE, CC_PAX... (v1)")
    p.add_argument("--created-at", help="ISO-8601 with zone (default now)")
    p.add_argument("--family", choices=["v3", "v1"], help="API to query (default from the channel)")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.set_defaults(func=cmd_expect)

    p = sub.add_parser(
        "expect-refund",
        help="record refunds the merchant requested (opt-in), so reconcile flags refunds nobody requested",
        description="Record one requested refund from options, or many from JSON lines (--file F, '-' for stdin) "
        "with fields mchId, mchRefundNo, originalOrderId, amount (cents), currency, requestedAt (ISO-8601 with "
        "zone). A merchant who records refunds gets two more reconcile classes: refund_not_requested (a gateway "
        "refund whose mchOrderNo matches no requested mchRefundNo) and requested_refund_missing. Exit 1 when any "
        "refund was refused (the field is named).",
    )
    p.add_argument("--file", metavar="F", help="JSON lines of refunds ('-' for stdin)")
    p.add_argument("--mch-id")
    p.add_argument("--mch-refund-no")
    p.add_argument("--original-order-id", help="the pay order being refunded")
    p.add_argument("--amount", type=argtypes.positive_int, help="integer cents")
    p.add_argument("--currency", default=None, help="CAD (default) or USD")
    p.add_argument("--requested-at", help="ISO-8601 with zone (default now)")
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.set_defaults(func=cmd_expect_refund)

    p = sub.add_parser(
        "sweep",
        help="query the gateway about expected orders not final and parked refunds' originals; post what it says",
        description="One pass (the clock runs it every minute), or passes for --for SECONDS, sleeping until the "
        "next query is due (POS orders are polled every 2 s in their first minute). Prints one line of "
        "counts per pass (--json: one JSON object per line). Give-ups are logged as sweep.gave_up and kept in expected_orders.gave_up_at.",
    )
    p.add_argument("--concurrency", type=argtypes.positive_int, default=8, help="queries in flight at once (default 8)")
    p.add_argument("--for", dest="for_seconds", type=float, default=0.0, metavar="SECONDS",
                   help="keep sweeping this long (e.g. 55 from a once-a-minute clock)")
    p.add_argument("--json", action="store_true", help="print one JSON line of counts per pass")
    p.set_defaults(func=cmd_sweep)
