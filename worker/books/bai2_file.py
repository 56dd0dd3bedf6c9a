"""Bank statements in BAI2 (the cash management balance reporting format), read by the `bai2` package.

The package checks the file's control totals and record counts. Each account (03 record) of each
group gives the account number and its currency (else the group's); each transaction detail (16
record) gives its type code, whose side says credit or debit (money in or out), the amount in
cents, the bank reference (the id) and the customer reference; its date is the group's as-of
date. Detail records of a type that is neither credit nor debit carry no money and are skipped.
"""

from __future__ import annotations

from worker.books.errors import InputError
from worker.books.imports import Document
from worker.books.statement import BankLine


def read_bai2(doc: Document) -> tuple[list[BankLine], int]:
    """Every credit and debit of the file, and how many detail records carried no money. Raises InputError
    naming the file and what the bai2 package could not read."""
    from bai2 import bai2 as bai2_lib  # imported here: only a bank import needs it
    from bai2.constants import TypeCodeTransaction
    from bai2.exceptions import IntegrityException, NotSupportedYetException, ParsingException

    try:
        text = doc.data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InputError(f"{doc.name}: not a BAI2 file (byte {exc.start} is not ASCII)") from None
    try:
        parsed = bai2_lib.parse_from_string(text)
    except (ParsingException, IntegrityException, NotSupportedYetException, ValueError, LookupError,
            StopIteration) as exc:
        raise InputError(f"{doc.name}: not a BAI2 file the bai2 package can read "
                         f"({' '.join(str(exc).split()) or type(exc).__name__})") from None
    out: list[BankLine] = []
    skipped = 0
    for group in parsed.children:
        for account in group.children:
            currency = (account.header.currency or group.header.currency or "").upper()
            number = account.header.customer_account_number or ""
            for txn in account.children:
                side = txn.type_code.transaction
                if side not in (TypeCodeTransaction.credit, TypeCodeTransaction.debit) or not txn.amount:
                    skipped += 1
                    continue
                if not number:
                    raise InputError(f"{doc.name}: an account record (03) without an account number")
                out.append(BankLine(
                    account=number, txn_id=txn.bank_reference or "", posted_on=group.header.as_of_date,
                    amount=txn.amount if side is TypeCodeTransaction.credit else -txn.amount, currency=currency,
                    type=txn.type_code.code, description=txn.text or None, reference=txn.customer_reference or None))
    return out, skipped
