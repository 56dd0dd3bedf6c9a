"""The books in tests: merchants with fee schedules, settlement CSVs, and bank statements written by the
libraries that read them (ofxtools writes OFX, the bai2 package writes BAI2)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from tests.factories import KEY, KEY2, MCH, MCH2, OLD_KEY
from worker.merchants import Merchants, load_merchants

TORONTO = ZoneInfo("America/Toronto")
CANONICAL = ("batch_id", "settlement_date", "mch_id", "currency", "pay_order_id", "gross", "fee", "net")
# MCH: 2.9 % + 30 cents, PF_CC 2.5 % flat; MCH2: no schedule
FEES_CONFIG = {
    MCH: {"keys": [KEY, OLD_KEY], "loginName": "jack123",
          "fees": {"default": {"percent": "2.9", "fixedCents": 30}, "PF_CC": {"percent": "2.5"}}},
    MCH2: {"keys": [KEY2], "loginName": "jill456"},
}
BOOKS_MERCHANTS_JSON = json.dumps(FEES_CONFIG)
BOOKS_MERCHANTS: Merchants = load_merchants(BOOKS_MERCHANTS_JSON, None)


def settlement_csv(path: Path, rows: Sequence[Sequence[Any]], header: Sequence[str] = CANONICAL) -> Path:
    """A canonical settlement report: one row per tuple (None is an empty cell)."""
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def counts(conn: psycopg.Connection) -> dict[str, int]:
    """Rows of every table an import writes, and the journal."""
    out = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (  # noqa: S608 - fixed names
        "book_imports", "settlement_batches", "settlement_lines", "bank_transactions", "bank_deposits",
        "adjustments", "journal_entries", "postings", "accounts")}
    conn.rollback()
    return out


def balances(conn: psycopg.Connection, mch: str = MCH, currency: str = "CAD") -> dict[str, int]:
    """Every account's balance (debit positive) of one merchant and currency."""
    rows = conn.execute("SELECT a.kind, coalesce(sum(p.amount), 0) FROM accounts a "
                        "LEFT JOIN postings p ON p.account_id = a.id WHERE a.mch_id = %s AND a.currency = %s "
                        "GROUP BY a.kind", (mch, currency)).fetchall()
    conn.rollback()
    return {k: int(v) for k, v in rows}


def ofx_statement(path: Path, transactions: Sequence[dict[str, Any]], *, acctid: str = "000123456789",
                  bankid: str = "000301234", currency: str = "CAD", version: int = 220) -> Path:
    """A bank statement written by ofxtools (OFX 2 XML, or version 102: OFX 1 SGML headers).

    Each transaction: fitid, amount (Decimal text), posted (datetime), name, memo, trntype.
    """
    from ofxtools.header import make_header
    from ofxtools.models import (BANKACCTFROM, BANKMSGSRSV1, BANKTRANLIST, LEDGERBAL, OFX, SIGNONMSGSRSV1, SONRS,
                                 STATUS, STMTRS, STMTTRN, STMTTRNRS)
    from ofxtools.utils import UTC

    txns = [STMTTRN(trntype=t.get("trntype", "CREDIT" if Decimal(t["amount"]) > 0 else "DEBIT"),
                    dtposted=t["posted"], trnamt=Decimal(t["amount"]), fitid=t["fitid"], name=t.get("name"),
                    memo=t.get("memo")) for t in transactions]
    posted = [t["posted"] for t in transactions] or [datetime(2026, 11, 1, tzinfo=UTC)]
    stmt = STMTRS(curdef=currency, bankacctfrom=BANKACCTFROM(bankid=bankid, acctid=acctid, accttype="CHECKING"),
                  banktranlist=BANKTRANLIST(*txns, dtstart=min(posted), dtend=max(posted)),
                  ledgerbal=LEDGERBAL(balamt=sum((Decimal(t["amount"]) for t in transactions), Decimal("0.00")),
                                      dtasof=max(posted)))
    status = STATUS(code=0, severity="INFO")
    ofx = OFX(signonmsgsrsv1=SIGNONMSGSRSV1(sonrs=SONRS(status=status, dtserver=max(posted), language="ENG")),
              bankmsgsrsv1=BANKMSGSRSV1(STMTTRNRS(trnuid="1", status=status, stmtrs=stmt)))
    body = ET.tostring(ofx.to_etree()).decode()
    path.write_text(str(make_header(version=version)) + body, encoding="utf-8")
    return path


def bai2_statement(path: Path, transactions: Sequence[dict[str, Any]], *, account: str = "000123456789",
                   as_of: date = date(2026, 11, 3), currency: str = "CAD") -> Path:
    """A bank statement written by the bai2 package. Each transaction: code (BAI2 type code, '165' a credit,
    '469' a debit), amount (cents, positive), bank_reference, customer_reference, text."""
    from bai2 import bai2 as bai2_lib
    from bai2.constants import AsOfDateModifier, FundsType, GroupStatus, TypeCodes
    from bai2.models import (Account, AccountIdentifier, Bai2File, Bai2FileHeader, Group, GroupHeader,
                             TransactionDetail)

    details = [TransactionDetail(type_code=TypeCodes[t["code"]], amount=t["amount"],
                                 funds_type=FundsType.immediate_availability,
                                 bank_reference=t.get("bank_reference"), customer_reference=t.get("customer_reference"),
                                 text=t.get("text")) for t in transactions]
    account_obj = Account(header=AccountIdentifier(customer_account_number=account, currency=currency),
                          children=details)
    group = Group(header=GroupHeader(ultimate_receiver_id="MERCHANT", originator_id="BANK",
                                     group_status=GroupStatus.update, as_of_date=as_of, as_of_time=time(23, 0),
                                     currency=currency, as_of_date_modifier=AsOfDateModifier.final_previous_day),
                  children=[account_obj])
    bai = Bai2File(header=Bai2FileHeader(sender_id="BANK", receiver_id="MERCHANT", creation_date=as_of,
                                         creation_time=time(23, 30), file_id="1", physical_record_length=80,
                                         block_size=1, version_number=2), children=[group])
    path.write_text(bai2_lib.write(bai) + "\n", encoding="ascii")
    return path


def utc(y: int, m: int, d: int, hh: int = 12) -> datetime:
    return datetime(y, m, d, hh, tzinfo=timezone.utc)
