"""`iotledger ingest`, `iotledger order`, `iotledger check`: the ledger from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, timedelta, timezone

from worker.ledger.checks import run_checks
from worker.ledger.notify_file import ingest_lines
from worker.runtime import app_settings, connect


def cmd_ingest(args: argparse.Namespace) -> int:
    s = app_settings()
    stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
    with stream, connect() as conn:
        summary = ingest_lines(conn, stream, s.merchants, s.gateway_tz, max_amount=s.max_amount_cents)
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
    else:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())) or "nothing"
        print(f"{summary.lines} line(s): {counts}")
        for d in summary.details:
            print(f"  line {d['line']}: {d['outcome']} {d['pay_order_id'] or '-'}: {d['reason']}")
    return 1 if summary.rejected else 0


def cmd_order(args: argparse.Namespace) -> int:
    from worker.reports import views

    s = app_settings()
    with connect() as conn:
        view = None if args.mch_id else views.order_evidence(conn, args.order_id, s.merchants)
        if view is None:  # not a payOrderId: a merchant order number?
            found = views.find_orders(conn, args.order_id, args.mch_id)
            if len(found["orders"]) == 1 and not found["expected_only"]:
                view = views.order_evidence(conn, found["orders"][0]["pay_order_id"], s.merchants)
    if view is None:
        if found["orders"] or found["expected_only"]:
            if args.json:
                print(json.dumps({"matches": found}, indent=2, ensure_ascii=False))
            print(f"iotledger order: {args.order_id!r} names {len(found['orders'])} order(s) and "
                  f"{len(found['expected_only'])} expected order(s) never reported by the gateway:", file=sys.stderr)
            for o in found["orders"]:
                print(f"  {o['pay_order_id']}  merchant {o['mch_id']}  {o['pay_type']}  {o['amount']} {o['currency']}  "
                      f"{o['state']}", file=sys.stderr)
            for e in found["expected_only"]:
                print(f"  expected {e['mch_id']}/{e['mch_order_no']}  {e['amount']} {e['currency']}  created "
                      f"{e['created_at']}  gave up {e['gave_up_at'] or '-'}", file=sys.stderr)
            return 1
        print(f"iotledger order: no order {args.order_id!r} in the ledger or the inbox", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(view, indent=2, ensure_ascii=False))
        return 0
    if view["state"] == "not_in_ledger":
        print(f"{view['pay_order_id']}  not in the ledger: {view['reason']}")
    else:
        print(f"{view['pay_order_id']}  {view['pay_type']}  {view['state']} (status {view['status']})"
              + (f"  reason: {view['reason']}" if view["reason"] else ""))
        print(f"  merchant {view['mch_id']}  order {view['mch_order_no'] or '-'}  channel {view['channel'] or '-'}"
              + (f"  original {view['original_order_id']}" if view["original_order_id"] else ""))
        print(f"  amount {view['amount']} {view['currency']}  refunded {view['refunded']}  "
              f"refundable {view['refundable']}")
        for r in view["refunds"]:
            print(f"  refund {r['pay_order_id']}: {r['amount']} {r['currency']} {r['state']}"
                  + (f" ({r['reason']})" if r["reason"] else ""))
        for e in view["entries"]:
            legs = "; ".join(f"{leg['account']} Dr {leg['debit']}" if leg["debit_cents"]
                             else f"{leg['account']} Cr {leg['credit']}" for leg in e["legs"])
            print(f"  entry #{e['id']} {e['kind']} {e['amount']} {e['currency']} at {e['occurred_at']}: {legs}")
        for x in view["exceptions"]:
            print(f"  exception {x['kind']}: {x['reason']}")
    for n in view["notifies"]:
        print(f"  notify inbox/{n['inbox_id']} {n['pay_order_id']} received {n['received_at']}: {n['state']}"
              + (f" {n['outcome']}" if n["outcome"] else "") + (f" ({n['reason']})" if n["reason"] else "")
              + f"; {n['verification']['result']}" + (f" with {n['verification']['key']}" if n["verification"]["key"] else ""))
    for m in view.get("mismatches", []):
        print(f"  mismatch {m['class']} (reconcile of {m['business_date']}, {'open' if m['open'] else 'no longer found'})")
    print("  evidence in time order:")
    for ev in view.get("timeline", []):
        print(f"    {ev['at']}  {ev['kind']:17} {ev['text']}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from worker.reports.businessday import business_day

    s = app_settings()
    day = None
    if args.date:
        try:
            bd = business_day(date.fromisoformat(args.date), s.settlement_tz)
        except ValueError:
            print(f"iotledger check: --date: expected YYYY-MM-DD, got {args.date!r}", file=sys.stderr)
            return 2
        day = (str(bd.day), bd.start, bd.end)
    with connect() as conn:
        report = run_checks(conn, parked_before=datetime.now(timezone.utc) - timedelta(seconds=s.parked_alert_seconds),
                            day=day, tz=s.settlement_tz.key)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for code, t in report.currencies.items():
            print(f"{code}: paid {t['paid']}  refunded {t['refunded']}  net {t['net']} cents "
                  f"({t['pay_count']} pays, {t['refund_count']} refunds/voids)")
            print(f"  {_books_line(t)}")
        for label, rows in ([("merchant", report.merchants)] +
                            ([(f"{report.day['date']}", report.day["merchants"])] if report.day else [])):
            for m in rows:
                print(f"  {label} {m['mch_id']} {m['currency']}: paid {m['paid']}  refunded {m['refunded']}  "
                      f"net {m['net']} cents")
                if "clearing" in m:
                    print(f"    {_books_line(m)}")
        for p in report.parked_too_long:
            print(f"parked too long: refund {p['pay_order_id']} waits for {p['original_order_id']} since {p['first_seen_at']}")
        for v in report.violations:
            where = v.get("pay_order_id") or v.get("subject") or " ".join(
                x for x in (v.get("mch_id"), v.get("currency")) if x)
            print(f"VIOLATION {v['rule']}: {where or ''} {v['detail']}")
        print("ok" if report.ok else f"{len(report.violations)} violation(s)")
    return 0 if report.ok else 1


def _books_line(t: dict) -> str:
    """net = clearing + fees + in_transit + bank, the books' identity, with its figures."""
    holds = t["net"] == t["clearing"] + t["fees"] + t["in_transit"] + t["bank"]
    return (f"net {t['net']} = clearing {t['clearing']} + fees {t['fees']} + in_transit {t['in_transit']} "
            f"+ bank {t['bank']}: {'adds up' if holds else 'DOES NOT ADD UP'}")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="verify and post JSON lines of notifies (backfill / replay); exit 1 if any line was rejected",
        description="Each line: one notify as IOTPay sent it (a V3 object, or a v1 object whose values are "
        "all strings), with its sign. Lines go through the same verify-and-post code as the workers; "
        "posting is idempotent, so a file can be fed again safely.",
    )
    p.add_argument("file", help="a .jsonl file, or - for stdin")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser(
        "order",
        help="show one order and its evidence chain: notifies, gateway queries, entries, files, mismatches",
        description="By payOrderId or merchant order number: state, amounts, refunds, journal entries and legs, "
        "exceptions, each notify as received (masked, with the key that verifies it), the sweep's questions, the "
        "settlement file of each entry, reconcile mismatches, and all of it in time order (what the console's order "
        "page shows). Exit 1 when the order is unknown, or when a merchant order number names several.",
    )
    p.add_argument("order_id", metavar="ORDER_ID",
                   help="the gateway payOrderId, or the merchant's order number (mchOrderNo)")
    p.add_argument("--mch-id", help="look ORDER_ID up as a merchant order number of this merchant")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: the order, and its evidence chain (notifies masked with their "
                        "verification, gateway queries, entries, settlement files, mismatches, timeline)")
    p.set_defaults(func=cmd_order)

    p = sub.add_parser(
        "check",
        help="check every ledger invariant; exit 1 on any violation",
        description="Each entry balances; postings sum to zero per currency; per merchant and currency "
        "paid - refunded = clearing + fees + in_transit + bank (what IOTPay still owes, kept, paid out, and "
        "what reached the bank); every fee, payout, deposit and adjustment agrees with its document line; "
        "every pay's refundable = amount - refunds; every refund has a posted original. Also lists "
        "refunds parked longer than IOTLEDGER_PARKED_ALERT_SECONDS.",
    )
    p.add_argument("--json", action="store_true",
                   help="one JSON object: ok, violations, per-currency and per-merchant paid/refunded/net")
    p.add_argument("--date", metavar="YYYY-MM-DD",
                   help="also give one business day's totals per merchant and currency (IOTLEDGER_SETTLEMENT_TZ)")
    p.set_defaults(func=cmd_check)
