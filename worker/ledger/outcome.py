"""What posting one notify did."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Outcome(str, Enum):
    """The result of posting one notify (or query result) to the ledger."""

    POSTED = "posted"  # a new journal entry
    DUPLICATE = "duplicate"  # already posted (or already recorded in this state): nothing new
    PENDING = "pending"  # status 0/1: recorded on the order, not posted
    FAILED = "failed"  # status 4/9: recorded as failed
    PARKED = "parked"  # refund whose original pay is not posted yet: kept, posts when the pay arrives
    REJECTED = "rejected"  # refund beyond refundable, wrong currency, amount <= 0: recorded as an exception
    CONFLICT = "conflict"  # same order id, different content: first outcome stands, conflict recorded
    UNKNOWN_STATUS = "unknown_status"  # undocumented status: kept, logged, not final
    # the gateway moved a final order's status backwards (posted/rejected/failed -> failed/pending):
    # the ledger does not change by itself; a status_regression exception records it and is alerted
    STATUS_REGRESSION = "status_regression"

    @property
    def is_final(self) -> bool:
        """True when nothing more will happen to this order without new gateway information."""
        return self in (Outcome.POSTED, Outcome.DUPLICATE, Outcome.FAILED, Outcome.REJECTED, Outcome.CONFLICT,
                        Outcome.STATUS_REGRESSION)


@dataclass(frozen=True)
class PostResult:
    """Outcome of one post, with the reason when it was not posted and any parked refunds it released."""

    outcome: Outcome
    pay_order_id: str
    reason: str | None = None
    released: tuple[PostResult, ...] = field(default=())
