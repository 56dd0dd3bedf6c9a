"""Import a bank statement (OFX/QFX, BAI2 or CSV): its transactions, keyed by account and their own id.

Idempotent and all or nothing, serialised with every other book import: a transaction already
imported identically is left as it is (the same file twice, or an overlapping statement, adds
only what is new; nothing new records no import); one imported with another date, amount or
currency refuses the whole file, listing every difference (ContradictionError).

Nothing is posted to the ledger here. A bank credit is evidence that IOTPay paid a merchant only
once it is matched to that merchant's payouts (the account also receives other money); the
`deposit` entry (Dr bank, Cr in_transit) is posted then, by `deposits.post_deposit`. Until then
the money stays in `in_transit`, which is what the ledger knows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker import db, logs, money
from worker.books.bai2_file import read_bai2
from worker.books.bank_csv import FIELDS, read_bank_csv
from worker.books.errors import ContradictionError, InputError
from worker.books.imports import Document, ImportResult, lock, read_document, record_import
from worker.books.mapping import ColumnMapping, load_mapping
from worker.books.ofx_file import read_ofx
from worker.books.statement import BankLine, with_derived_ids
from worker.sqlfiles import q

log = logs.get("worker.books")

FORMATS = ("ofx", "bai2", "csv")
_BY_SUFFIX = {".ofx": "ofx", ".qfx": "ofx", ".bai": "bai2", ".bai2": "bai2", ".csv": "csv"}


def import_bank(conn: psycopg.Connection, path: str | Path, *, fmt: str | None = None,
                mapping_path: str | Path | None = None) -> ImportResult:
    """Import one bank statement. `fmt` defaults from the file's suffix (.ofx/.qfx, .bai/.bai2, .csv).

    Raises InputError (a missing or unreadable file or mapping, an unknown format, a transaction that
    cannot be used), ContradictionError (with every difference: nothing imported), RetryableError when
    PostgreSQL is unavailable.
    """
    doc = read_document(path)
    fmt = fmt or _BY_SUFFIX.get(doc.path.suffix.lower())
    if fmt not in FORMATS:
        raise InputError(f"{doc.name}: say which format it is with --format ({', '.join(FORMATS)})")
    if mapping_path and fmt != "csv":
        raise InputError(f"--mapping reads CSV files; {doc.name} is read as {fmt}")
    mapping = None
    skipped = 0
    if fmt == "ofx":
        lines = read_ofx(doc)
    elif fmt == "bai2":
        lines, skipped = read_bai2(doc)
    else:
        mapping = load_mapping(mapping_path, FIELDS) if mapping_path else ColumnMapping.canonical(FIELDS)
        lines, skipped = read_bank_csv(doc, mapping)
    lines = _unique(with_derived_ids(lines), doc)
    with db.translated(f"while importing {doc.name}"), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        lock(cur)
        stored = {(r["account"], r["txn_id"]): r for r in cur.execute(q("books_stored_bank_transactions"), {
            "accounts": [ln.account for ln in lines], "txn_ids": [ln.txn_id for ln in lines]}).fetchall()}
        differences = [d for ln in lines if (ln.account, ln.txn_id) in stored
                       for d in _differences(ln, stored[ln.account, ln.txn_id])]
        if differences:
            raise ContradictionError(f"bank statement {doc.name}", differences)
        new = [ln for ln in lines if (ln.account, ln.txn_id) not in stored]
        counts = {"transactions": len(lines), "new": len(new), "known": len(lines) - len(new),
                  "credits_new": sum(1 for ln in new if ln.amount > 0),
                  "debits_new": sum(1 for ln in new if ln.amount < 0), "skipped_without_money": skipped,
                  "derived_ids": sum(1 for ln in lines if ln.txn_id_derived)}
        if not new:
            log.info("books.bank_unchanged", file=doc.name, transactions=len(lines))
            return ImportResult("bank", doc.name, "unchanged", len(lines), counts=counts)
        import_id = record_import(cur, "bank", fmt, doc, mapping if mapping and not mapping.auto else None,
                                  len(lines) + skipped, len(new))
        cur.execute(q("books_insert_bank_transactions"), _columns(new, import_id))
    log.info("books.bank_imported", file=doc.name, import_id=import_id, transactions=len(new))
    return ImportResult("bank", doc.name, "imported", len(lines) + skipped, import_id, counts, _totals(new))


def _unique(lines: list[BankLine], doc: Document) -> list[BankLine]:
    """One line per (account, id): a repeat identical to the first is dropped, a different one refused."""
    seen: dict[tuple[str, str], BankLine] = {}
    for ln in lines:
        first = seen.setdefault((ln.account, ln.txn_id), ln)
        if first is not ln and _facts(first) != _facts(ln):
            where = f" line {ln.line}" if ln.line else ""
            raise InputError(f"{doc.name}{where}: account {ln.account} transaction {ln.txn_id!r} appears twice with "
                             f"different content ({_show(_facts(first))} and {_show(_facts(ln))})")
    return list(seen.values())


def _facts(ln: BankLine | dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(ln, dict):
        return ln["posted_on"], int(ln["amount"]), ln["currency"]
    return ln.posted_on, ln.amount, ln.currency


def _show(facts: tuple[Any, ...]) -> str:
    return f"{facts[0]} {money.decimal(facts[1])} {facts[2]}"


def _differences(ln: BankLine, old: dict[str, Any]) -> list[str]:
    here, before = _facts(ln), _facts(old)
    out = []
    for name, mine, theirs in zip(("posted_on", "amount", "currency"), here, before):
        if mine != theirs:
            show = money.decimal if name == "amount" else str
            out.append(f"account {ln.account} transaction {ln.txn_id!r}: {name} {show(mine)} here"
                       + (f" (line {ln.line})" if ln.line else "")
                       + f", {show(theirs)} in import #{old['import_id']} ({old['file_name']})")
    return out


def _columns(lines: list[BankLine], import_id: int) -> dict[str, Any]:
    return {"import_id": import_id, **{name: [getattr(ln, name) for ln in lines] for name in (
        "account", "txn_id", "txn_id_derived", "bank_id", "posted_on", "posted_at", "amount", "currency", "type",
        "description", "reference", "line")}}


def _totals(lines: list[BankLine]) -> list[dict[str, Any]]:
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for ln in lines:
        t = totals.setdefault((ln.account, ln.currency), {"transactions": 0, "credits": 0, "debits": 0})
        t["transactions"] += 1
        t["credits" if ln.amount > 0 else "debits"] += abs(ln.amount)
    return [{"account": a, "currency": c, "transactions": t["transactions"], **money.fields("credits", t["credits"]),
             **money.fields("debits", t["debits"])} for (a, c), t in sorted(totals.items())]
