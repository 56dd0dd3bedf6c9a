"""The simulator's orders: pays and the refunds or voids made against them, in memory.

All rules of the real gateway that the ledger depends on are kept here: an order id is unique,
a refund never exceeds what remains refundable, a void cancels a not-yet-settled pay in full,
the same mchRefundNo twice returns the same refund (so a retried refund is not applied twice).
Status changes scheduled for later (`complete_at`, `fail_at`) happen when the simulator clock
passes them.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from worker.iotpay.channels import POS_CHANNELS, Family
from worker.iotpay.status import is_final


class SimError(Exception):
    """A request the gateway refuses; the message is the retMsg it answers with."""


@dataclass
class SimOrder:
    """One order at the simulated gateway."""

    pay_order_id: str
    family: Family
    mch_id: str
    mch_order_no: str
    channel: str
    amount: int
    currency: str
    status: int
    created_at: datetime
    pay_type: str = "pay"
    original_order_id: str | None = None
    refunded: int = 0
    pay_succ_time: datetime | None = None
    notify_url: str | None = None
    card_num: str | None = None
    card_type: str | None = None
    expiry_date: str | None = None
    auth_num: str | None = None
    trans_num: str | None = None
    invoice_num: str | None = None
    complete_at: datetime | None = None
    complete_status: int = 2
    fail_at: datetime | None = None
    settled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def refundable(self) -> int:
        """What can still be refunded: the amount less refunds for a paid order, else 0."""
        if self.pay_type != "pay" or self.status not in (2, 3):
            return 0
        return self.amount - self.refunded


class OrderStore:
    """Thread-safe order book. `on_final` is called (outside the lock) with a copy of each order
    that reaches a success status, so the notify sender can tell the merchant."""

    def __init__(self, now: Callable[[], datetime], *, seed: int = 0,
                 on_final: Callable[[SimOrder], None] | None = None) -> None:
        self._now = now
        self._lock = threading.RLock()
        self._rng = random.Random(f"ids:{seed}")
        self._orders: dict[str, SimOrder] = {}
        self._by_mch_no: dict[tuple[str, str], str] = {}
        self._refund_nos: dict[tuple[str, str], str] = {}
        self._scheduled: set[str] = set()
        self.on_final = on_final

    # ---------------------------------------------------------------- reading
    def get(self, mch_id: str, *, pay_order_id: str | None = None, mch_order_no: str | None = None) -> SimOrder:
        """A copy of the order, after applying due status changes. Raises SimError when unknown."""
        self.advance()
        with self._lock:
            if pay_order_id:
                order = self._orders.get(pay_order_id)
            else:
                oid = self._by_mch_no.get((mch_id, mch_order_no or ""))
                order = self._orders.get(oid) if oid else None
            if order is None or order.mch_id != mch_id:
                raise SimError("order not exist")
            return replace(order)

    def by_id(self, pay_order_id: str) -> SimOrder:
        """A copy of any order by id (control API). Raises SimError when unknown."""
        self.advance()
        with self._lock:
            order = self._orders.get(pay_order_id)
            if order is None:
                raise SimError(f"order {pay_order_id} not exist")
            return replace(order)

    def __len__(self) -> int:
        return len(self._orders)

    def __iter__(self) -> Iterator[SimOrder]:
        with self._lock:
            return iter([replace(o) for o in self._orders.values()])

    # ---------------------------------------------------------------- writing
    def new_id(self, family: Family, channel: str, pay_type: str = "pay") -> str:
        """A fresh gateway id with the observed prefixes (PC, CP, P, RP), reproducible by seed."""
        prefix = "RP" if pay_type != "pay" else "PC" if family == "v3" else "CP" if channel in POS_CHANNELS else "P0"
        with self._lock:
            while True:
                oid = f"{prefix}{self._now():%Y}{self._rng.randrange(10**19, 10**20)}"
                if oid not in self._orders:
                    return oid

    def create(self, order: SimOrder) -> SimOrder:
        """Add a new pay order. Raises SimError on a duplicate id or mchOrderNo."""
        notify = False
        with self._lock:
            if order.pay_order_id in self._orders:
                raise SimError(f"payOrderId {order.pay_order_id} already exists")
            key = (order.mch_id, order.mch_order_no)
            if key in self._by_mch_no:
                raise SimError(f"mchOrderNo {order.mch_order_no} already exists")
            if order.status in (2, 3) and order.pay_succ_time is None:
                order.pay_succ_time = order.created_at
            self._orders[order.pay_order_id] = order
            self._by_mch_no[key] = order.pay_order_id
            if order.complete_at or order.fail_at:
                self._scheduled.add(order.pay_order_id)
            notify = order.status in (2, 3)
            snapshot = replace(order)
        if notify:
            self._final(snapshot)
        return snapshot

    def set_status(self, pay_order_id: str, status: int, *, at: datetime | None = None) -> SimOrder:
        """Move an order to any status now (2/3 set paySuccTime and notify). Raises SimError when unknown."""
        with self._lock:
            order = self._orders.get(pay_order_id)
            if order is None:
                raise SimError(f"order {pay_order_id} not exist")
            became_paid = status in (2, 3) and order.status not in (2, 3)
            order.status = status
            if became_paid:
                order.pay_succ_time = at or self._now()
            if is_final(status):
                order.complete_at = order.fail_at = None
                self._scheduled.discard(pay_order_id)
            snapshot = replace(order)
        if became_paid:
            self._final(snapshot)
        return snapshot

    def settle(self, pay_order_id: str) -> SimOrder:
        """Mark a pay as settled (it can be refunded, no longer voided)."""
        with self._lock:
            order = self._orders[pay_order_id]
            order.settled = True
            return replace(order)

    def advance(self) -> None:
        """Apply every scheduled completion or failure that the clock has passed."""
        if not self._scheduled:
            return
        now = self._now()
        due: list[tuple[str, int, datetime]] = []
        with self._lock:
            for oid in list(self._scheduled):
                order = self._orders[oid]
                if order.fail_at is not None and order.fail_at <= now and (order.complete_at is None or order.fail_at <= order.complete_at):
                    due.append((oid, 9, order.fail_at))
                elif order.complete_at is not None and order.complete_at <= now:
                    due.append((oid, order.complete_status, order.complete_at))
        for oid, status, at in due:
            self.set_status(oid, status, at=at)

    def refund(self, mch_id: str, pay_order_id: str, mch_refund_no: str, amount: int | None, *,
               void: bool = False) -> SimOrder:
        """Refund (or void, amount None) a paid order; return the refund order.

        The same mchRefundNo again for the same order and amount returns the first refund.
        Raises SimError with the gateway's reason otherwise.
        """
        self.advance()
        with self._lock:
            original = self._orders.get(pay_order_id)
            if original is None or original.mch_id != mch_id:
                raise SimError("original order not exist")
            previous = self._refund_nos.get((mch_id, mch_refund_no))
            if previous is not None:
                prior = self._orders[previous]
                if prior.original_order_id == pay_order_id and (void or prior.amount == amount):
                    return replace(prior)
                raise SimError(f"mchRefundNo {mch_refund_no} already used")
            if original.pay_type != "pay":
                raise SimError("cannot refund a refund")
            if original.status not in (2, 3):
                raise SimError("order is not paid")
            if void:
                if original.settled:
                    raise SimError("order already settled, use refund")
                if original.refunded:
                    raise SimError("order partially refunded, cannot void")
                amount = original.amount
            assert amount is not None
            if amount <= 0:
                raise SimError("refundAmount must be positive")
            if amount > original.refundable:
                raise SimError(f"refundAmount exceeds refundable ({original.refundable})")
            original.refunded += amount
            now = self._now()
            refund = SimOrder(
                pay_order_id=self.new_id(original.family, original.channel, "refund"),
                family=original.family, mch_id=mch_id, mch_order_no=mch_refund_no, channel=original.channel,
                amount=amount, currency=original.currency, status=2, created_at=now, pay_type="refund",
                original_order_id=pay_order_id, pay_succ_time=now, notify_url=original.notify_url,
                card_num=original.card_num, card_type=original.card_type, expiry_date=original.expiry_date,
                auth_num=original.auth_num, trans_num=original.trans_num, invoice_num=original.invoice_num,
            )
            self._orders[refund.pay_order_id] = refund
            self._refund_nos[(mch_id, mch_refund_no)] = refund.pay_order_id
            # a refund's mchOrderNo is its mchRefundNo, and a lookup by mchOrderNo may find it
            self._by_mch_no.setdefault((mch_id, mch_refund_no), refund.pay_order_id)
            snapshot = replace(refund)
        self._final(snapshot)
        return snapshot

    def _final(self, order: SimOrder) -> None:
        if self.on_final is not None:
            self.on_final(order)


def after(now: datetime, seconds: float | None) -> datetime | None:
    """now + seconds, or None."""
    return None if seconds is None else now + timedelta(seconds=seconds)
