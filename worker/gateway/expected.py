"""Expected orders: what the merchant's checkout says it created, so the sweep and the
reconciliation can compare the gateway and the ledger against it.

Recording the same order again is harmless: identical facts change nothing, a payOrderId
learned later is added. Different facts for a recorded order (amount, currency, channel,
another payOrderId) are refused with a ValidationError naming the field; nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg.rows import dict_row

from worker import db
from worker.errors import ValidationError
from worker.gateway.schedule import Schedule
from worker.iotpay.channels import CURRENCIES, FAMILIES, V3_CURRENCIES, Family, family_for_channel
from worker.sqlfiles import q

FIELDS = ("mchId", "mchOrderNo", "payOrderId", "amount", "currency", "channel", "createdAt", "family")


@dataclass(frozen=True)
class ExpectedOrder:
    """One order the merchant created at the gateway."""

    mch_id: str
    mch_order_no: str
    amount: int
    currency: str
    channel: str
    created_at: datetime
    pay_order_id: str | None = None
    family: Family = "v3"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, now: datetime | None = None) -> ExpectedOrder:
        """Validate camelCase fields (as the CLI and the actor receive them).

        createdAt is ISO-8601 with a zone (default: now); family defaults from the channel.
        Raises ValidationError naming the field.
        """
        if not isinstance(data, dict):
            raise ValidationError("order", "must be an object of fields")
        unknown = sorted(set(data) - set(FIELDS))
        if unknown:
            raise ValidationError(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
        mch_id = _text(data, "mchId", required=True)
        mch_order_no = _text(data, "mchOrderNo", required=True)
        channel = _text(data, "channel", required=True)
        amount = data.get("amount")
        if isinstance(amount, str) and amount.isdigit():
            amount = int(amount)
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise ValidationError("amount", f"must be integer cents, got {amount!r}")
        if amount <= 0:
            raise ValidationError("amount", f"must be > 0 cents, got {amount}")
        currency = _text(data, "currency", required=False) or "CAD"
        if currency not in CURRENCIES:
            raise ValidationError("currency", f"must be CAD or USD, got {currency!r}")
        family = _text(data, "family", required=False) or family_for_channel(channel or "")
        if family not in FAMILIES:
            raise ValidationError("family", f"must be v3 or v1, got {family!r}")
        if family == "v3" and currency not in V3_CURRENCIES:
            raise ValidationError("currency", f"V3 orders are CAD only, got {currency!r}")
        created = data.get("createdAt")
        if created in (None, ""):
            created_at = now or datetime.now(timezone.utc)
        elif isinstance(created, datetime):
            created_at = created
        else:
            try:
                created_at = datetime.fromisoformat(str(created))
            except ValueError:
                raise ValidationError("createdAt", f"must be ISO-8601, got {created!r}") from None
        if created_at.tzinfo is None:
            raise ValidationError("createdAt", "must carry a timezone offset (e.g. 2025-01-31T12:00:00-05:00)")
        return cls(mch_id=mch_id or "", mch_order_no=mch_order_no or "", amount=amount, currency=currency,
                   channel=channel or "", created_at=created_at,
                   pay_order_id=_text(data, "payOrderId", required=False), family=family)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The camelCase form (what the actor's message carries)."""
        return {"mchId": self.mch_id, "mchOrderNo": self.mch_order_no, "payOrderId": self.pay_order_id,
                "amount": self.amount, "currency": self.currency, "channel": self.channel,
                "createdAt": self.created_at.isoformat(), "family": self.family}


def _text(data: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise ValidationError(name, "missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(name, f"must be a string, got {type(value).__name__}")
    text = str(value)
    if text != text.strip():
        raise ValidationError(name, "has leading or trailing spaces")
    return text


def record(conn: psycopg.Connection, order: ExpectedOrder, schedule: Schedule | None = None) -> bool:
    """Record an expected order in its own transaction; True when new, False when already known.

    Raises ValidationError (field named) when it contradicts the recorded order, RetryableError
    when PostgreSQL is unavailable.
    """
    schedule = schedule or Schedule()
    params = {"mch_id": order.mch_id, "mch_order_no": order.mch_order_no, "pay_order_id": order.pay_order_id,
              "amount": order.amount, "currency": order.currency, "channel": order.channel, "family": order.family,
              "created_at": order.created_at, "next_query_at": schedule.first_query_at(order.created_at, order.channel)}
    where = f"while recording {order.mch_order_no}"
    with db.translated(where), conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q("expect_insert"), params)
        if cur.fetchone() is not None:
            return True
        cur.execute(q("expect_get_for_update"), params)
        known = cur.fetchone()
        for column, name in (("amount", "amount"), ("currency", "currency"), ("channel", "channel"),
                             ("family", "family")):
            if known[column] != params[column]:
                raise ValidationError(name, f"order {order.mch_order_no} was recorded with {known[column]!r}, "
                                            f"now {params[column]!r}; not changed")
        if order.pay_order_id and known["pay_order_id"] not in (None, order.pay_order_id):
            raise ValidationError("payOrderId", f"order {order.mch_order_no} was recorded with "
                                                f"{known['pay_order_id']!r}, now {order.pay_order_id!r}; not changed")
        if order.pay_order_id and known["pay_order_id"] is None:
            cur.execute(q("expect_set_pay_order_id"), params)
        return False
