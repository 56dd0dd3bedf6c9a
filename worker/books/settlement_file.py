"""The gateway's settlement report, read into batches: the canonical CSV, or an export through a mapping.

Canonical columns (a header row naming them, in any order; extra columns are ignored):

    batch_id, settlement_date, mch_id, currency, pay_order_id, gross, fee, net [, channel]

One row per transaction of a batch (a refund's gross is negative). A row with an empty
`pay_order_id` is the batch's own total row (at most one per batch): its gross, fee and net are
what IOTPay states for the whole batch. `fee` and `net` may be left empty (or the columns left
out): the fee is then `gross - net` when the net is given, else the merchant's fee schedule.
Every row of one batch names the same settlement date, merchant and currency. A batch is
imported whole: a later file holding the same batch must hold it identically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from worker.books.errors import InputError
from worker.books.mapping import Fields
from worker.books.table import Row
from worker.merchants import Merchants
from worker.money import decimal

FIELDS = Fields(required=("batch_id", "settlement_date", "mch_id", "currency", "pay_order_id", "gross"),
                optional=("fee", "net", "channel"))
_CURRENCY = re.compile(r"^[A-Z]{3}$")


@dataclass(frozen=True)
class SettlementLine:
    """One transaction of a batch, as the report gives it (fee and net None when not given)."""

    pay_order_id: str
    line: int
    gross: int
    fee: int | None
    net: int | None
    channel: str | None


@dataclass(frozen=True)
class BatchTotal:
    """A batch's own total row."""

    line: int
    gross: int | None
    fee: int | None
    net: int | None


@dataclass
class SettlementBatch:
    """One batch of the report: its transactions and, when the report has one, its total row."""

    batch_id: str
    mch_id: str
    currency: str
    settlement_date: date
    first_line: int
    lines: list[SettlementLine] = field(default_factory=list)
    total: BatchTotal | None = None


def read_batches(rows: Iterable[Row], merchants: Merchants) -> tuple[list[SettlementBatch], int]:
    """Every batch of the report in file order, and the number of rows read.

    Raises InputError naming the file, line and column of the first row that cannot be used.
    """
    batches: dict[str, SettlementBatch] = {}
    lines_of: dict[tuple[str, str], int] = {}
    count = 0
    source = ""
    for row in rows:
        count += 1
        source = row.source
        batch_id = row.text("batch_id")
        day = row.date("settlement_date")
        mch_id = row.text("mch_id")
        if mch_id not in merchants:
            raise row.error("mch_id", f"merchant {mch_id!r} is not configured (IOTPAY_MERCHANTS)")
        currency = row.text("currency").upper()
        if not _CURRENCY.match(currency):
            raise row.error("currency", f"{currency!r} is not a three-letter currency code")
        batch = batches.get(batch_id)
        if batch is None:
            batch = batches[batch_id] = SettlementBatch(batch_id, mch_id, currency, day, row.line)
        for name, mine, first in (("settlement_date", day, batch.settlement_date), ("mch_id", mch_id, batch.mch_id),
                                  ("currency", currency, batch.currency)):
            if mine != first:
                raise row.error(name, f"batch {batch_id!r} has {first} on line {batch.first_line}, {mine} here "
                                      "(a batch is one date, merchant and currency)")
        gross, fee, net = row.amount("gross"), row.amount("fee"), row.amount("net")
        pay_order_id = row.text("pay_order_id", required=False)
        if not pay_order_id:
            if batch.total is not None:
                raise row.error("pay_order_id", f"empty: a second total row for batch {batch_id!r} "
                                                f"(the first is line {batch.total.line})")
            if gross is None and fee is None and net is None:
                raise row.error("gross", f"empty on the total row of batch {batch_id!r} (and fee and net too)")
            _consistent(row, gross, fee, net)
            batch.total = BatchTotal(row.line, gross, fee, net)
            continue
        if gross is None:
            raise row.error("gross", "is empty")
        _consistent(row, gross, fee, net)
        if (batch_id, pay_order_id) in lines_of:
            raise row.error("pay_order_id", f"{pay_order_id!r} is already on line {lines_of[batch_id, pay_order_id]} "
                                            f"of batch {batch_id!r}")
        lines_of[batch_id, pay_order_id] = row.line
        batch.lines.append(SettlementLine(pay_order_id, row.line, gross, fee, net,
                                          row.text("channel", required=False) or None))
    for batch in batches.values():
        if not batch.lines:
            raise InputError(f"{source} line {batch.first_line}: batch {batch.batch_id!r} has a total row but no "
                             "transactions")
    return list(batches.values()), count


def _consistent(row: Row, gross: int | None, fee: int | None, net: int | None) -> None:
    if gross is not None and fee is not None and net is not None and net != gross - fee:
        raise row.error("net", f"{decimal(net)} is not gross {decimal(gross)} - fee {decimal(fee)}")
