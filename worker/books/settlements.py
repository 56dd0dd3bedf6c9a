"""Import the gateway's settlement report: its batches and lines, a `fee` entry per line, a `payout` per batch.

Idempotent and all or nothing, in one transaction serialised with every other book import:

* a batch already imported identically is left as it is (the same file twice changes nothing and
  records no import);
* a batch already imported differently (a line added, missing or changed, another date, merchant,
  currency or total) refuses the whole file, listing every difference (ContradictionError);
* a new batch is stored with the import that brought it, and posts, dated at the start of its
  settlement date in the settlement zone: one `fee` entry per line whose fee is not 0 (Dr fees,
  Cr clearing) and one `payout` entry of the batch's net (Dr in_transit, Cr clearing). The net
  paid out is the batch's stated net (its total row), else the sum of its lines' net.

A line's fee is the report's; when the report gives none, `gross - net` when it gives the net,
else the merchant's fee schedule for the line's channel (the report's, else the pay's channel in
the ledger). The schedule's fee is stored beside every line (`fee_expected`), for the fee checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from worker import db, logs, money
from worker.books import entries
from worker.books.errors import ContradictionError, InputError
from worker.books.imports import ImportResult, lock, read_document, record_import
from worker.books.mapping import ColumnMapping, load_mapping
from worker.books.settlement_file import FIELDS, SettlementBatch, SettlementLine, read_batches
from worker.books.table import read_rows
from worker.fees import FeeSchedule
from worker.merchants import Merchants
from worker.sqlfiles import q

log = logs.get("worker.books")


@dataclass(frozen=True)
class _Fee:
    """A line's fee as it will be posted, where it came from, and what the schedule expects."""

    fee: int
    source: str  # report, derived (gross - net) or schedule
    expected: int | None
    channel: str | None


def import_settlements(conn: psycopg.Connection, path: str | Path, *, merchants: Merchants, tz: ZoneInfo,
                       mapping_path: str | Path | None = None) -> ImportResult:
    """Import one settlement report (canonical CSV, or an export read through a TOML column mapping).

    Raises InputError (a missing or unreadable file or mapping, a row that cannot be used: naming
    the file, line and column), ContradictionError (with every difference: nothing imported),
    RetryableError when PostgreSQL is unavailable.
    """
    doc = read_document(path)
    mapping = load_mapping(mapping_path, FIELDS) if mapping_path else ColumnMapping.canonical(FIELDS)
    batches, rows_read = read_batches(read_rows(doc.data, doc.name, mapping), merchants)
    with db.translated(f"while importing {doc.name}"), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        lock(cur)
        stored = _stored(cur, [b.batch_id for b in batches])
        differences = [d for b in batches if b.batch_id in stored for d in _differences(b, stored[b.batch_id])]
        if differences:
            raise ContradictionError(f"settlement report {doc.name}", differences)
        new = [b for b in batches if b.batch_id not in stored]
        counts = {"batches": len(batches), "batches_new": len(new), "batches_known": len(batches) - len(new),
                  "lines_new": sum(len(b.lines) for b in new), "fee_entries": 0, "payout_entries": 0,
                  "fees_off_schedule": 0}
        if not new:
            log.info("books.settlements_unchanged", file=doc.name, batches=len(batches))
            return ImportResult("settlement", doc.name, "unchanged", rows_read, counts=counts)
        channels = _channels(cur, [ln.pay_order_id for b in new for ln in b.lines])
        fees = {b.batch_id: [_fee(b, ln, merchants[b.mch_id].fees, channels, doc.name) for ln in b.lines]
                for b in new}
        import_id = record_import(cur, "settlement", "csv", doc, mapping if not mapping.auto else None, rows_read,
                                  counts["lines_new"] + len(new))
        totals: dict[tuple[str, str], dict[str, Any]] = {}
        for b in new:
            posted = _post_batch(cur, b, fees[b.batch_id], import_id, tz)
            counts["fee_entries"] += posted["fee_entries"]
            counts["payout_entries"] += 1 if posted["payout"] else 0
            counts["fees_off_schedule"] += sum(1 for f in fees[b.batch_id] if f.expected is not None
                                               and f.expected != f.fee)
            t = totals.setdefault((b.mch_id, b.currency), {"batches": 0, "lines": 0, "gross": 0, "fees": 0,
                                                           "payout": 0})
            t["batches"] += 1
            t["lines"] += len(b.lines)
            t["gross"] += sum(ln.gross for ln in b.lines)
            t["fees"] += sum(f.fee for f in fees[b.batch_id])
            t["payout"] += posted["payout"]
    log.info("books.settlements_imported", file=doc.name, import_id=import_id, batches=len(new),
             lines=counts["lines_new"])
    return ImportResult("settlement", doc.name, "imported", rows_read, import_id, counts, [
        {"mch_id": m, "currency": c, "batches": t["batches"], "lines": t["lines"], **money.fields("gross", t["gross"]),
         **money.fields("fees", t["fees"]), **money.fields("payout", t["payout"])}
        for (m, c), t in sorted(totals.items())])


def _fee(batch: SettlementBatch, line: SettlementLine, schedule: FeeSchedule, channels: dict[str, str],
         source: str) -> _Fee:
    channel = line.channel or channels.get(line.pay_order_id)
    expected = schedule.expected_fee(line.gross, channel)
    if line.fee is not None:
        return _Fee(line.fee, "report", expected, channel)
    if line.net is not None:
        return _Fee(line.gross - line.net, "derived", expected, channel)
    if expected is None:
        raise InputError(f"{source} line {line.line}, column fee: empty, the net too, and merchant {batch.mch_id} has no fee "
                         f"schedule for channel {channel or '(unknown)'} (fees in IOTPAY_MERCHANTS)")
    return _Fee(expected, "schedule", expected, channel)


def _post_batch(cur: psycopg.Cursor, b: SettlementBatch, fees: Sequence[_Fee], import_id: int,
                tz: ZoneInfo) -> dict[str, int]:
    occurred = datetime.combine(b.settlement_date, time(0), tzinfo=tz)
    fee_keys = [entries.doc_key("fee", b.batch_id, ln.pay_order_id) for ln in b.lines]
    fee_ids = entries.post_entries(cur, "fee", b.mch_id, b.currency, occurred,
                                   [(k, f.fee) for k, f in zip(fee_keys, fees) if f.fee != 0])
    lines_net = sum(ln.gross - f.fee for ln, f in zip(b.lines, fees))
    payout = b.total.net if b.total is not None and b.total.net is not None else lines_net
    payout_ids = entries.post_entries(cur, "payout", b.mch_id, b.currency, occurred,
                                      [(entries.doc_key("payout", b.batch_id), payout)] if payout else [])
    total = b.total
    cur.execute(q("books_insert_batch"), {
        "batch_id": b.batch_id, "mch_id": b.mch_id, "currency": b.currency, "settlement_date": b.settlement_date,
        "stated_gross": total.gross if total else None, "stated_fee": total.fee if total else None,
        "stated_net": total.net if total else None, "payout_amount": payout,
        "payout_entry_id": next(iter(payout_ids.values()), None), "import_id": import_id,
        "total_line_no": total.line if total else None,
    })
    cur.execute(q("books_insert_lines"), {
        "batch_id": b.batch_id, "mch_id": b.mch_id, "currency": b.currency,
        "pay_order_ids": [ln.pay_order_id for ln in b.lines], "line_nos": [ln.line for ln in b.lines],
        "channels": [ln.channel for ln in b.lines], "gross": [ln.gross for ln in b.lines],
        "fees": [f.fee for f in fees], "fees_reported": [ln.fee for ln in b.lines],
        "nets_reported": [ln.net for ln in b.lines], "fees_expected": [f.expected for f in fees],
        "fee_sources": [f.source for f in fees], "fee_entry_ids": [fee_ids.get(k) for k in fee_keys],
    })
    return {"fee_entries": len(fee_ids), "payout": payout}


def _channels(cur: psycopg.Cursor, pay_order_ids: list[str]) -> dict[str, str]:
    rows = cur.execute(q("books_order_channels"), {"ids": pay_order_ids}).fetchall()
    return {r["pay_order_id"]: r["channel"] for r in rows}


def _stored(cur: psycopg.Cursor, batch_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The batches of these ids imported before, each with its lines and the import that brought it."""
    out: dict[str, dict[str, Any]] = {}
    for r in cur.execute(q("books_stored_batches"), {"ids": batch_ids}).fetchall():
        out[r["batch_id"]] = {**r, "lines": {}}
    for r in cur.execute(q("books_stored_lines"), {"ids": batch_ids}).fetchall():
        out[r["batch_id"]]["lines"][r["pay_order_id"]] = r
    return out


def _differences(b: SettlementBatch, old: dict[str, Any]) -> list[str]:
    """What this file says about a batch that differs from what was imported (import #N, file)."""
    before = f"import #{old['import_id']} ({old['file_name']})"
    here = f"batch {b.batch_id!r}"
    out = []
    for name, mine, theirs in (("settlement_date", b.settlement_date, old["settlement_date"]),
                               ("mch_id", b.mch_id, old["mch_id"]), ("currency", b.currency, old["currency"])):
        if mine != theirs:
            out.append(f"{here}: {name} {mine} here (line {b.first_line}), {theirs} in {before}")
    total = b.total
    for name, mine in (("gross", total.gross if total else None), ("fee", total.fee if total else None),
                       ("net", total.net if total else None)):
        if mine != old[f"stated_{name}"]:
            out.append(f"{here}: total {name} {_amount(mine)} here"
                       + (f" (line {total.line})" if total else "") + f", {_amount(old['stated_' + name])} in {before}")
    mine_lines = {ln.pay_order_id: ln for ln in b.lines}
    for pay_order_id, ln in mine_lines.items():
        was = old["lines"].get(pay_order_id)
        if was is None:
            out.append(f"{here}: {pay_order_id!r} (line {ln.line}) is not in the batch as {before} has it")
            continue
        for name, mine, theirs in (("gross", ln.gross, was["gross"]), ("fee", ln.fee, was["fee_reported"]),
                                   ("net", ln.net, was["net_reported"]), ("channel", ln.channel, was["channel"])):
            if mine != theirs:
                show = (lambda v: v or "(none)") if name == "channel" else _amount
                out.append(f"{here}: {pay_order_id!r} {name} {show(mine)} here (line {ln.line}), "
                           f"{show(theirs)} in {before}")
    for pay_order_id in old["lines"]:
        if pay_order_id not in mine_lines:
            out.append(f"{here}: {pay_order_id!r} is missing here, it is in {before}")
    return out


def _amount(cents: int | None) -> str:
    return "(none)" if cents is None else money.decimal(cents)
