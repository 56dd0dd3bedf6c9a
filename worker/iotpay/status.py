"""IOTPay order status values and what they mean for the ledger."""

from __future__ import annotations

from enum import Enum

SUCCESS_STATUSES = frozenset({2, 3})
FAILED_STATUSES = frozenset({4, 9})
PENDING_STATUSES = frozenset({0, 1})


class PayStatus(str, Enum):
    """What an order's status value means for us."""

    SUCCESS = "success"  # 2, 3: post it
    PENDING = "pending"  # 0, 1: record, do not post, ask again later
    FAILED = "failed"  # 4 (v1 cancelled by system), 9 (failed / cancelled by user): final, nothing to post
    UNKNOWN = "unknown"  # anything undocumented: keep it, log it, treat as not final


def classify(status: int) -> PayStatus:
    """What a gateway status value means."""
    if status in SUCCESS_STATUSES:
        return PayStatus.SUCCESS
    if status in PENDING_STATUSES:
        return PayStatus.PENDING
    if status in FAILED_STATUSES:
        return PayStatus.FAILED
    return PayStatus.UNKNOWN


def is_final(status: int) -> bool:
    """True when the gateway will not change this order's status any more."""
    return classify(status) in (PayStatus.SUCCESS, PayStatus.FAILED)
