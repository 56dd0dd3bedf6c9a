"""Expected refunds: the refunds the merchant asked IOTPay for (opt-in, per merchant).

A merchant who records them gets the insider-refund control: reconcile flags a gateway refund
nobody requested (`refund_not_requested`) and a requested refund that never happened
(`requested_refund_missing`). A refund is matched by its merchant refund number: IOTPay gives a
refund order `mchOrderNo` = the `mchRefundNo` it was asked with. Recording the same refund again
is harmless; different facts for a recorded refund are refused naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker import db
from worker.errors import ValidationError
from worker.gateway.expected import _text
from worker.iotpay.channels import CURRENCIES
from worker.sqlfiles import q

FIELDS = ("mchId", "mchRefundNo", "originalOrderId", "amount", "currency", "requestedAt")


@dataclass(frozen=True)
class ExpectedRefund:
    """One refund the merchant asked for."""

    mch_id: str
    mch_refund_no: str
    original_order_id: str
    amount: int
    currency: str
    requested_at: datetime

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, now: datetime | None = None) -> ExpectedRefund:
        """Validate camelCase fields; requestedAt is ISO-8601 with a zone (default: now). Raises ValidationError."""
        if not isinstance(data, dict):
            raise ValidationError("refund", "must be an object of fields")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ValidationError(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
        amount = data.get("amount")
        if isinstance(amount, str) and amount.isdigit():
            amount = int(amount)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ValidationError("amount", f"must be integer cents > 0, got {amount!r}")
        currency = _text(data, "currency", required=False) or "CAD"
        if currency not in CURRENCIES:
            raise ValidationError("currency", f"must be CAD or USD, got {currency!r}")
        when = data.get("requestedAt")
        if when in (None, ""):
            requested_at = now or datetime.now(timezone.utc)
        else:
            try:
                requested_at = when if isinstance(when, datetime) else datetime.fromisoformat(str(when))
            except ValueError:
                raise ValidationError("requestedAt", f"must be ISO-8601, got {when!r}") from None
        if requested_at.tzinfo is None:
            raise ValidationError("requestedAt", "must carry a timezone offset (e.g. 2025-01-31T12:00:00-05:00)")
        return cls(mch_id=_text(data, "mchId", required=True) or "",
                   mch_refund_no=_text(data, "mchRefundNo", required=True) or "",
                   original_order_id=_text(data, "originalOrderId", required=True) or "",
                   amount=amount, currency=currency, requested_at=requested_at)

    def to_dict(self) -> dict[str, Any]:
        """The camelCase form (what the actor's message carries)."""
        return {"mchId": self.mch_id, "mchRefundNo": self.mch_refund_no, "originalOrderId": self.original_order_id,
                "amount": self.amount, "currency": self.currency, "requestedAt": self.requested_at.isoformat()}


def record_refund(conn: psycopg.Connection, refund: ExpectedRefund) -> bool:
    """Record an expected refund in its own transaction; True when new, False when already known.

    Raises ValidationError (field named) when it contradicts the recorded refund, RetryableError
    when PostgreSQL is unavailable.
    """
    params = {"mch_id": refund.mch_id, "mch_refund_no": refund.mch_refund_no,
              "original_order_id": refund.original_order_id, "amount": refund.amount, "currency": refund.currency,
              "requested_at": refund.requested_at}
    where = f"while recording refund {refund.mch_refund_no}"
    with db.translated(where), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q("expect_refund_insert"), params)
        if cur.fetchone() is not None:
            return True
        known = cur.execute(q("expect_refund_get"), params).fetchone()
        for column, name in (("original_order_id", "originalOrderId"), ("amount", "amount"),
                             ("currency", "currency")):
            if known[column] != params[column]:
                raise ValidationError(name, f"refund {refund.mch_refund_no} was recorded with {known[column]!r}, "
                                            f"now {params[column]!r}; not changed")
        return False
