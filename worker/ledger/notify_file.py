"""A file of notifies for `iotledger ingest`: JSON lines, as IOTPay sent them, each through the
ledger's intake (verify and post).

Also the backfill and replay tool: posting is idempotent, so feeding the same file twice posts
nothing new.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import psycopg

from worker.errors import PermanentError
from worker.iotpay.body import NotifyBody
from worker.iotpay.notify import DEFAULT_MAX_AMOUNT_CENTS
from worker.ledger.intake import verify_and_post
from worker.ledger.outcome import Outcome
from worker.merchants import Merchants

# ledger outcomes that mean "this line was refused"
REFUSED = {Outcome.REJECTED, Outcome.CONFLICT}


@dataclass
class IngestSummary:
    """Counts per outcome, and the reason of every line that was not simply posted."""

    lines: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    details: list[dict[str, object]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.counts["rejected"] + self.counts["conflict"]

    def add(self, line_no: int, outcome: str, pay_order_id: str | None, reason: str | None) -> None:
        self.counts[outcome] += 1
        if outcome != Outcome.POSTED.value:
            self.details.append({"line": line_no, "outcome": outcome, "pay_order_id": pay_order_id, "reason": reason})

    def as_json(self) -> dict[str, object]:
        return {"lines": self.lines, "counts": dict(sorted(self.counts.items())), "rejected": self.rejected,
                "details": self.details}


def ingest_lines(conn: psycopg.Connection, lines: Iterable[str], merchants: Merchants, gateway_tz: ZoneInfo, *,
                 max_amount: int = DEFAULT_MAX_AMOUNT_CENTS) -> IngestSummary:
    """Verify and post each non-blank line; a bad line is reported with its number and reason, never fatal.

    Raises RetryableError when PostgreSQL goes away (what was posted stays posted; rerun to finish).
    """
    summary = IngestSummary()
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        summary.lines += 1
        try:
            params = json.loads(line)
        except json.JSONDecodeError as exc:
            summary.add(line_no, "rejected", None, f"line is not JSON ({exc.msg} at char {exc.pos})")
            continue
        if not isinstance(params, dict):
            summary.add(line_no, "rejected", None, "line must be one JSON object")
            continue
        order_id = params.get("payOrderId") if isinstance(params.get("payOrderId"), str) else None
        try:
            result = verify_and_post(conn, NotifyBody.from_params(params), merchants, gateway_tz, source="ingest",
                                     max_amount=max_amount)
        except PermanentError as exc:
            summary.add(line_no, "rejected", order_id, str(exc))
            continue
        summary.add(line_no, result.outcome.value, result.pay_order_id, result.reason)
        for released in result.released:
            summary.add(line_no, f"released_{released.outcome.value}", released.pay_order_id,
                        f"parked refund released by {result.pay_order_id}" + (f": {released.reason}" if released.reason else ""))
    return summary
