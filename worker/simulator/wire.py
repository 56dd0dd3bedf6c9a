"""How the simulated gateway writes an order on the wire, per API family.

V3 (notify and `retData` of cc_* answers): JSON numbers for amount, status and refundable;
`paySuccTime` as `YYYY-MM-DD HH:MM:SS` in the gateway's zone. v1 notify: form fields, every
value a string, `paySuccTime` in epoch milliseconds. v1 query answer: the order's fields flat
beside retCode/resCode, with numbers as numbers (as in IOTPay's v1 documentation).
Empty values are left out, as they are not signed anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from worker.simulator.store import SimOrder


def _drop_empty(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None and v != ""}


def v3_time(moment: datetime | None, tz: ZoneInfo) -> str | None:
    """`YYYY-MM-DD HH:MM:SS` in the gateway's local time, no zone (as IOTPay sends it)."""
    return None if moment is None else moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def epoch_ms(moment: datetime | None) -> int | None:
    """Epoch milliseconds (v1 paySuccTime)."""
    return None if moment is None else int(moment.timestamp() * 1000)


def v3_fields(order: SimOrder, tz: ZoneInfo) -> dict[str, Any]:
    """The order as a V3 notify or cc_* retData (unsigned)."""
    return _drop_empty({
        "payOrderId": order.pay_order_id, "mchId": order.mch_id, "mchOrderNo": order.mch_order_no,
        "originalOrderId": order.original_order_id, "amount": order.amount, "currency": order.currency,
        "payType": order.pay_type, "refundable": order.refundable, "status": order.status,
        "invoiceNum": order.invoice_num, "paySuccTime": v3_time(order.pay_succ_time, tz),
        "cardNum": order.card_num, "cardType": order.card_type, "expiryDate": order.expiry_date,
        "authNum": order.auth_num, "transNum": order.trans_num, "channel": order.channel, **order.extra,
    })


def v1_fields(order: SimOrder) -> dict[str, Any]:
    """The order as v1 query_order / refund_order answer fields (numbers as numbers, unsigned)."""
    return _drop_empty({
        "payOrderId": order.pay_order_id, "mchId": order.mch_id, "mchOrderNo": order.mch_order_no,
        "originalOrderId": order.original_order_id, "payType": order.pay_type, "channelId": order.channel,
        "currency": order.currency, "amount": order.amount, "refundable": order.refundable,
        "status": order.status, "paySuccTime": epoch_ms(order.pay_succ_time),
        "channelOrderNo": f"ch{order.pay_order_id[-12:]}" if order.status in (2, 3) else None,
        "notifyUrl": order.notify_url, **order.extra,
    })


def v1_notify_fields(order: SimOrder) -> dict[str, str]:
    """The order as a v1 notify: form fields, all strings (unsigned)."""
    return {k: str(v) for k, v in v1_fields(order).items() if k != "notifyUrl"}
