"""Bank statements in OFX or QFX (version 1 SGML or version 2 XML), read by ofxtools.

Each bank statement (STMTRS) of the file gives its account (ACCTID, with BANKID), its currency
(CURDEF) and its transactions: FITID is the id, TRNAMT the signed amount, DTPOSTED the date as
the bank wrote it (its first eight digits: the bank's own day, whatever zone the time is in),
NAME and MEMO the description, REFNUM or CHECKNUM the reference. A credit card statement
(CCSTMTRS) is refused: its account is a card number, and it is not where payouts arrive.
"""

from __future__ import annotations

import io
from datetime import date

from worker.books.amounts import decimal_cents
from worker.books.errors import InputError
from worker.books.imports import Document
from worker.books.statement import BankLine


def read_ofx(doc: Document) -> list[BankLine]:
    """Every transaction of every bank statement in the file. Raises InputError naming the file and what
    ofxtools could not read, or the transaction whose amount or date cannot be used."""
    from ofxtools.Parser import OFXTree  # imported here: only a bank import needs it

    tree = OFXTree()
    try:
        tree.parse(io.BytesIO(doc.data))
        root = tree.getroot()
        kinds = {el.tag for el in root.iter() if el.tag in ("CCSTMTRS", "INVSTMTRS")}
        if kinds:
            raise InputError(f"{doc.name}: holds {' and '.join(sorted(kinds))} (credit card or investment "
                             "statements); only bank statements (STMTRS) are imported")
        raw_dates = [[t.findtext("DTPOSTED", "") for t in s.iter("STMTTRN")] for s in root.iter("STMTRS")]
        ofx = tree.convert()
    except (SyntaxError, ValueError, LookupError, TypeError) as exc:
        raise InputError(f"{doc.name}: not an OFX file ofxtools can read ({_one_line(exc)})") from None
    out: list[BankLine] = []
    statements = list(ofx.statements)
    if not statements:
        raise InputError(f"{doc.name}: no bank statement (STMTRS) in the OFX file")
    for stmt, dates in zip(statements, raw_dates):
        account = stmt.account
        for n, (txn, raw) in enumerate(zip(stmt.banktranlist or [], dates), start=1):
            where = f"{doc.name}: account {account.acctid} transaction {n} (FITID {txn.fitid})"
            try:
                amount = decimal_cents(txn.trnamt)
            except ValueError as exc:
                raise InputError(f"{where}, TRNAMT: {exc}") from None
            try:
                posted_on = date(int(raw[0:4]), int(raw[4:6]), int(raw[6:8]))
            except ValueError:
                raise InputError(f"{where}, DTPOSTED: {raw!r} does not start with a date YYYYMMDD") from None
            name = txn.name or (txn.payee.name if getattr(txn, "payee", None) else None)
            description = " | ".join(p for p in (name, txn.memo) if p) or None
            out.append(BankLine(account=account.acctid, txn_id=txn.fitid, posted_on=posted_on, amount=amount,
                                currency=stmt.curdef, posted_at=txn.dtposted, bank_id=account.bankid,
                                type=txn.trntype, description=description, reference=txn.refnum or txn.checknum))
    return out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
