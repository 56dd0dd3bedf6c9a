"""`iotledger settlements import`, `iotledger bank import`, `iotledger adjust`: the books from the command line.

Exit codes: 0 imported (or nothing new: `unchanged`), 1 the file contradicts an earlier import
(every difference listed, nothing imported), 2 a file, mapping, row or option that cannot be used
(one line naming it), 3 PostgreSQL unavailable.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, time, timezone
from typing import Any

from worker import money
from worker.books.errors import ContradictionError, InputError
from worker.books.imports import ImportResult
from worker.runtime import app_settings, connect


def cmd_settlements_import(args: argparse.Namespace) -> int:
    from worker.books.settlements import import_settlements

    s = app_settings()
    with connect() as conn:
        try:
            result = import_settlements(conn, args.file, merchants=s.merchants, tz=s.settlement_tz,
                                        mapping_path=args.mapping)
        except ContradictionError as exc:
            return _refused("settlements import", exc, args.json)
    return _imported(result, args.json)


def cmd_bank_import(args: argparse.Namespace) -> int:
    from worker.books.bank import import_bank

    app_settings()
    with connect() as conn:
        try:
            result = import_bank(conn, args.file, fmt=args.format, mapping_path=args.mapping)
        except ContradictionError as exc:
            return _refused("bank import", exc, args.json)
    return _imported(result, args.json)


def cmd_adjust(args: argparse.Namespace) -> int:
    from worker.books.adjustments import Adjustment, add_adjustment
    from worker.books.amounts import parse_amount

    s = app_settings()
    try:
        amount = parse_amount(args.amount)
    except ValueError as exc:
        raise InputError(f"--amount: {exc}") from None
    when = datetime.now(timezone.utc)
    if args.date:
        try:
            when = datetime.combine(date.fromisoformat(args.date), time(0), tzinfo=s.settlement_tz)
        except ValueError:
            raise InputError(f"--date: expected YYYY-MM-DD, got {args.date!r}") from None
    request = Adjustment(args.mch_id, args.currency, args.debit, args.credit, amount, args.reason, args.by, args.key)
    with connect() as conn:
        try:
            result = add_adjustment(conn, request, s.merchants, occurred_at=when)
        except ContradictionError as exc:
            return _refused("adjust", exc, args.json)
    if args.json:
        print(json.dumps(result.as_json(), indent=2))
        return 0
    a = result.adjustment
    print(f"{result.status} adjustment {result.key}: entry #{result.entry_id} {a.mch_id} {a.currency} "
          f"Dr {a.debit} Cr {a.credit} {money.decimal(a.amount)} by {a.author}: {a.reason}")
    return 0


def _imported(result: ImportResult, as_json: bool) -> int:
    if as_json:
        print(json.dumps(result.as_json(), indent=2))
        return 0
    what = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in result.counts.items())
    if result.status == "unchanged":
        print(f"unchanged: {result.file} holds nothing new ({what})")
        return 0
    print(f"imported {result.file} as import #{result.import_id}: {what}")
    for t in result.totals:
        print("  " + "  ".join(_cell(k, v) for k, v in t.items() if not k.endswith("_cents")))
    return 0


def _cell(key: str, value: Any) -> str:
    return f"{key.replace('_', ' ')} {value}"


def _refused(command: str, exc: ContradictionError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"status": "refused", "what": exc.what, "differences": exc.differences}, indent=2))
    print(f"iotledger {command}: refused: {exc.what} contradicts what was imported before; nothing was imported. "
          f"{len(exc.differences)} difference(s):", file=sys.stderr)
    for d in exc.differences:
        print(f"  {d}", file=sys.stderr)
    return 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "settlements", help="the gateway's settlement reports (settlements import)",
        description="Commands about IOTPay's settlement reports: what it paid out and kept as fees.")
    s_sub = p.add_subparsers(dest="settlements_command", metavar="COMMAND", required=True)
    p = s_sub.add_parser(
        "import", help="import a settlement report: its batches, a fee entry per line, a payout entry per batch",
        description="A CSV in the canonical columns (batch_id, settlement_date, mch_id, currency, pay_order_id, "
        "gross, fee, net, optional channel; a row without pay_order_id is the batch's total), or a merchant "
        "portal's export read through a TOML column mapping (README: The books). Idempotent: a batch already "
        "imported identically is skipped; one imported differently refuses the whole file, listing every "
        "difference (exit 1). An unusable file, mapping or row: one line naming file, line and column (exit 2).")
    p.add_argument("file", metavar="FILE", help="the report (CSV)")
    p.add_argument("--mapping", metavar="F", help="a TOML file mapping the export's columns onto the canonical ones")
    p.add_argument("--json", action="store_true", help="print what was imported as one JSON object")
    p.set_defaults(func=cmd_settlements_import)

    p = sub.add_parser(
        "bank", help="bank statements (bank import)",
        description="Commands about the bank statements where IOTPay's payouts arrive.")
    b_sub = p.add_subparsers(dest="bank_command", metavar="COMMAND", required=True)
    p = b_sub.add_parser(
        "import", help="import a bank statement (OFX/QFX, BAI2, CSV): its transactions, posted nothing yet",
        description="Each transaction is kept by its account and its own id (OFX FITID, BAI2 bank reference, "
        "the CSV's transaction_id, else an id derived from its content). Idempotent: one already imported "
        "identically is skipped; one imported with another date, amount or currency refuses the whole file, "
        "listing every difference (exit 1). Deposits are posted once matched to payouts, not here.")
    p.add_argument("file", metavar="FILE", help="the statement")
    p.add_argument("--format", choices=("ofx", "bai2", "csv"),
                   help="default: from the suffix (.ofx/.qfx, .bai/.bai2, .csv)")
    p.add_argument("--mapping", metavar="F", help="for CSV: a TOML file mapping the bank's columns onto the "
                                                  "canonical ones")
    p.add_argument("--json", action="store_true", help="print what was imported as one JSON object")
    p.set_defaults(func=cmd_bank_import)

    p = sub.add_parser(
        "adjust", help="a manual adjustment between two book accounts of one merchant and currency",
        description="Posts a new adjustment entry (history is never edited): Dr --debit, Cr --credit, --amount, "
        "between clearing, fees, in_transit and bank of one merchant and currency, with who made it and why. "
        "With --key the same command run twice posts once (the key with other content is refused, exit 1).")
    p.add_argument("--mch-id", required=True, help="the merchant")
    p.add_argument("--currency", required=True, help="CAD, USD ...")
    p.add_argument("--debit", required=True, choices=("clearing", "fees", "in_transit", "bank"),
                   help="the account debited")
    p.add_argument("--credit", required=True, choices=("clearing", "fees", "in_transit", "bank"),
                   help="the account credited")
    p.add_argument("--amount", required=True, help="a decimal amount, 12.34 (more than 0)")
    p.add_argument("--reason", required=True, help="why: it stays with the entry")
    p.add_argument("--by", required=True, help="who makes it")
    p.add_argument("--key", help="an idempotency key of yours (default: a new one each time)")
    p.add_argument("--date", metavar="YYYY-MM-DD", help="date the entry at the start of that business day "
                                                        "(IOTLEDGER_SETTLEMENT_TZ); default now")
    p.add_argument("--json", action="store_true", help="print the adjustment as one JSON object")
    p.set_defaults(func=cmd_adjust)
