"""IOTPay order status values and what they mean for the ledger."""

from __future__ import annotations

from enum import Enum

SUCCESS_STATUSES = frozenset({2, 3})
FAILED_STATUSES = frozenset({4, 9})
PENDING_STATUSES = frozenset({0, 1})


class Outcome(str, Enum):
    """What an order status means for us."""

    SUCCESS = "success"  # 2, 3: post it
    PENDING = "pending"  # 0, 1: record, do not post, ask again later
    FAILED = "failed"  # 4 (v1 cancelled by system), 9 (failed / cancelled by user): final, nothing to post
    UNKNOWN = "unknown"  # anything undocumented: keep it, log it, treat as not final


def outcome(status: int) -> Outcome:
    """Classify a gateway status value."""
    if status in SUCCESS_STATUSES:
        return Outcome.SUCCESS
    if status in PENDING_STATUSES:
        return Outcome.PENDING
    if status in FAILED_STATUSES:
        return Outcome.FAILED
    return Outcome.UNKNOWN


def is_final(status: int) -> bool:
    """True when the gateway will not change this order's status any more."""
    return outcome(status) in (Outcome.SUCCESS, Outcome.FAILED)
