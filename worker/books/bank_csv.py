"""Bank statements in CSV: the canonical columns, or a bank's export through a TOML column mapping.

Canonical columns (a header row naming them; extra columns are ignored):

    account, transaction_id, date, amount, currency [, description, reference, type]

`amount` is signed, positive for money in; a bank that writes money in and out in two columns
maps them to `credit` and `debit` instead (both positive). `transaction_id` is the bank's own id
of the transaction; a bank that gives none leaves it out, and an id is derived from the
transaction's content (statement.py). `account` and `currency` are often constants of the
export: `[values]` in the mapping.
"""

from __future__ import annotations

import re

from worker.books.imports import Document
from worker.books.mapping import ColumnMapping, Fields
from worker.books.statement import BankLine
from worker.books.table import Row, read_rows

FIELDS = Fields(required=("account", "date", ("amount", "credit", "debit"), "currency"),
                optional=("transaction_id", "description", "reference", "type"))
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def read_bank_csv(doc: Document, mapping: ColumnMapping) -> tuple[list[BankLine], int]:
    """Every transaction of the file with an amount, and how many rows had none (0). Raises InputError naming
    the file, line and column of a row that cannot be used."""
    out: list[BankLine] = []
    zero = 0
    for row in read_rows(doc.data, doc.name, mapping):
        amount = _amount(row)
        if amount == 0:
            zero += 1
            continue
        currency = row.text("currency").upper()
        if not _CURRENCY.match(currency):
            raise row.error("currency", f"{currency!r} is not a three-letter currency code")
        out.append(BankLine(
            account=row.text("account"), txn_id=row.text("transaction_id", required=False),
            posted_on=row.date("date"), amount=amount, currency=currency,
            type=row.text("type", required=False) or None,
            description=row.text("description", required=False) or None,
            reference=row.text("reference", required=False) or None, line=row.line))
    return out, zero


def _amount(row: Row) -> int:
    if "amount" in row.headers:
        amount = row.amount("amount")
        if amount is None:
            raise row.error("amount", "is empty")
        return amount
    credit, debit = row.amount("credit"), row.amount("debit")
    if credit is None and debit is None:
        raise row.error("credit" if "credit" in row.headers else "debit", "is empty (and so is the other side)")
    for name, value in (("credit", credit), ("debit", debit)):
        if value is not None and value < 0:
            raise row.error(name, f"is negative: {name} is written positive")
    return (credit or 0) - (debit or 0)
