"""The sweep's records: the answers posted and what each means for its order, a batch at a time.

A sweep task only asks the gateway (worker/gateway/sweep.py). The pass's coordinating thread then
takes a batch of answers at once: it posts them through the ledger in one transaction
(worker/ledger/batch.py, source "query": each answer gets what posting it alone gives, the plain
ones as a set), reads the ledger's state of every order answered, decides what each answer means
(paid, failed, rejected, still pending), the next query time or the give-up, and writes one
UPDATE per table for the whole batch. Each query used to pay a posting transaction and two more
of its own for this.

The posts commit synchronously, as every post does. The bookkeeping commits asynchronously:
losing the last batches in a crash only means those orders are asked once more (posting is
idempotent, and a posted order is settled from the ledger without a query).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from worker import logs
from worker.errors import IotLedgerError
from worker.gateway.schedule import PARKED_STEPS, Schedule
from worker.iotpay.notify import Notify
from worker.ledger.batch import post_batch
from worker.ledger.outcome import PostResult
from worker.sqlfiles import q

DEFAULT_RECORD_BATCH = 200  # answers recorded per statement

log = logs.get("worker.gateway.sweep")

_EXPECTED_COLUMNS = ("mch_id", "mch_order_no", "last_status", "last_error", "pay_order_id", "next_query_at",
                     "resolved_at", "resolution", "gave_up_at")
_PARKED_COLUMNS = ("original_order_id", "last_status", "last_error", "next_query_at", "resolved_at", "gave_up_at")
_NOT_IN_LEDGER = {"state": None, "pay_type": None, "inbox_open": False, "parked": 0}


@dataclass(frozen=True)
class Answered:
    """What one sweep task found: the due row it asked about, and the answer to post or why none."""

    table: Literal["expected", "parked"]
    row: dict[str, Any]  # the row of sweep_due_expected / sweep_due_parked
    status: int | None = None  # the gateway's status, once the answer was taken as one about a pay
    pay_order_id: str | None = None  # the order whose ledger state decides (set with the answer)
    result: PostResult | None = None  # the post of the answer (set by Records); None: no usable answer
    error: str | None = None  # why there is no usable answer (already logged)
    notify: Notify | None = None  # the answer, to be posted


@dataclass(frozen=True)
class QueryResult:
    """What an answer came to, for the pass's report."""

    kind: str  # paid | failed | pending | rejected | error (no usable answer)
    released: int = 0
    gave_up: dict[str, Any] | None = None


class Records:
    """Answers waiting to be recorded on `conn` (autocommit, the pass's own connection).

    `add` writes every `size` answers and `flush` the rest; both return the outcomes of the answers
    they wrote, in the order added. Both raise psycopg errors when PostgreSQL fails (the pass's
    caller translates them).
    """

    def __init__(self, conn: psycopg.Connection, now: datetime, schedule: Schedule,
                 size: int = DEFAULT_RECORD_BATCH) -> None:
        self.conn, self.now, self.schedule, self.size = conn, now, schedule, size
        self.parked_schedule = Schedule(give_up_after=schedule.give_up_after, default_steps=PARKED_STEPS)
        self.waiting: list[Answered] = []

    def add(self, answered: Answered) -> list[QueryResult]:
        """Keep one answer; write the batch once it is full."""
        self.waiting.append(answered)
        return self.flush() if len(self.waiting) >= self.size else []

    def flush(self) -> list[QueryResult]:
        """Post and record every waiting answer: one posting transaction, one read of the ledger,
        one UPDATE per table."""
        batch, self.waiting = self._post(self.waiting), []
        if not batch:
            return []
        states = self._states(sorted({a.pay_order_id for a in batch if a.result is not None}))
        outcomes, rows = [], {"expected": [], "parked": []}
        for answered in batch:
            record, outcome = self._finish(answered, states)
            rows[answered.table].append(record)
            outcomes.append(outcome)
        with self.conn.transaction():
            self.conn.execute("SET LOCAL synchronous_commit TO OFF")
            for table, columns in (("expected", _EXPECTED_COLUMNS), ("parked", _PARKED_COLUMNS)):
                if rows[table]:
                    params = {c: [r[c] for r in rows[table]] for c in columns}
                    self.conn.execute(q(f"sweep_record_{table}"), {**params, "now": self.now})
        return outcomes

    def _post(self, batch: list[Answered]) -> list[Answered]:
        """The answers with their posts, in one transaction; an answer the ledger refuses becomes
        an error (logged), as it was when each task posted its own. Raises RetryableError when
        PostgreSQL is unavailable."""
        todo = [i for i, a in enumerate(batch) if a.notify is not None and a.result is None]
        if not todo:
            return batch
        with self.conn.transaction():
            posted = post_batch(self.conn, [batch[i].notify for i in todo], source="query")  # type: ignore[misc]
        out = list(batch)
        for i, result in zip(todo, posted):
            if not isinstance(result, Exception):
                out[i] = replace(batch[i], result=result)
                continue
            ids = {k: batch[i].row[k] for k in ("mch_id", "mch_order_no", "original_order_id") if k in batch[i].row}
            if isinstance(result, IotLedgerError):  # refused by the ledger: keep asking, someone must look
                error = str(result)[:500]
                log.warning("sweep.bad_answer", **ids, error=str(result))
            else:  # a bug must not stop the other answers; logged with its traceback
                error = f"{type(result).__name__}: {result}"[:500]
                log.error("sweep.task_failed", **ids, exc_info=result)
            out[i] = replace(batch[i], pay_order_id=None, error=error)
        return out

    def _states(self, pay_order_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not pay_order_ids:
            return {}
        with self.conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(q("sweep_order_states"), {"pay_order_ids": pay_order_ids}).fetchall()
        return {r["pay_order_id"]: r for r in rows}

    def _finish(self, answered: Answered, states: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], QueryResult]:
        finish, schedule = ((_finish_expected, self.schedule) if answered.table == "expected"
                            else (_finish_parked, self.parked_schedule))
        order = states.get(answered.pay_order_id or "", _NOT_IN_LEDGER)
        try:
            return finish(answered, order, self.now, schedule)
        except Exception as exc:  # a bug must not stop the other answers of the batch; logged with its traceback
            ids = {k: answered.row[k] for k in ("mch_id", "mch_order_no", "original_order_id") if k in answered.row}
            log.exception("sweep.task_failed", **ids)
            failed = replace(answered, result=None, error=f"{type(exc).__name__}: {exc}"[:500])
            return finish(failed, order, self.now, schedule)


def classify(order: dict[str, Any]) -> str:
    """What the ledger's state of the order means for the question: answered for good, or ask again."""
    state = order["state"]
    if order["pay_type"] != "pay":
        return "pending"  # the id is held by a refund in the ledger (a conflict): not an answer about a pay
    if state == "posted":
        return "paid"  # even if the gateway now says otherwise: that is a recorded status_regression
    if state == "rejected":
        return "rejected"
    if state == "failed" and not order["inbox_open"]:
        return "failed"
    return "pending"  # pending, unknown, parked, or failed with a notify unprocessed or failed: ask again


def _finish_expected(answered: Answered, order: dict[str, Any], now: datetime,
                     schedule: Schedule) -> tuple[dict[str, Any], QueryResult]:
    row, result = answered.row, answered.result
    who = {"mch_id": row["mch_id"], "mch_order_no": row["mch_order_no"]}
    record = {**who, "last_status": answered.status, "last_error": answered.error, "pay_order_id": row["pay_order_id"],
              "next_query_at": None, "resolved_at": None, "resolution": None, "gave_up_at": None}
    kind, released = "error", 0
    if result is not None:
        kind = classify(order)
        released = len(result.released)
        record["pay_order_id"] = answered.pay_order_id
        if kind != "pending":
            record.update(resolved_at=now, resolution=kind)
            log.info("sweep.found", **who, pay_order_id=answered.pay_order_id, status=answered.status,
                     outcome=result.outcome.value, resolution=kind)
    gave_up = None
    if record["resolved_at"] is None:
        record["next_query_at"] = schedule.next_query_at(row["created_at"], now, row["channel"])
        if record["next_query_at"] is None:
            record["gave_up_at"] = now
            gave_up = {**who, "pay_order_id": record["pay_order_id"], "amount": row["amount"],
                       "currency": row["currency"], "channel": row["channel"], "created_at": row["created_at"].isoformat(),
                       "query_count": row["query_count"] + 1, "last_status": record["last_status"],
                       "last_error": record["last_error"]}
            log.warning("sweep.gave_up", kind="expected", **{k: v for k, v in gave_up.items() if k not in who}, **who,
                        age_seconds=int((now - row["created_at"]).total_seconds()))
    return record, QueryResult(kind, released, gave_up)


def _finish_parked(answered: Answered, order: dict[str, Any], now: datetime,
                   schedule: Schedule) -> tuple[dict[str, Any], QueryResult]:
    row, result = answered.row, answered.result
    original = row["original_order_id"]
    record = {"original_order_id": original, "last_status": answered.status, "last_error": answered.error,
              "next_query_at": None, "resolved_at": None, "gave_up_at": None}
    kind, released = "error", 0
    if result is not None:
        kind = classify(order)
        released = len(result.released)
        if kind == "paid" and order["parked"]:
            kind = "pending"  # posted, yet refunds still wait on it: keep asking until they leave or give-up
            record["last_error"] = f"{order['parked']} refund(s) still parked on {original} after it posted"
        if kind == "paid":
            record["resolved_at"] = now
            log.info("sweep.found_original", original_order_id=original, outcome=result.outcome.value,
                     released=[r.pay_order_id for r in result.released])
    gave_up = None
    if record["resolved_at"] is None:
        record["next_query_at"] = schedule.next_query_at(row["first_parked_at"], now, None)
        if kind in ("failed", "rejected"):
            # the original will never post: the refunds stay parked and the ledger reports them
            record["next_query_at"] = None
        if record["next_query_at"] is None:
            record["gave_up_at"] = now
            gave_up = {"original_order_id": original, "mch_id": row["mch_id"], "query_count": row["query_count"] + 1,
                       "last_status": record["last_status"], "last_error": record["last_error"],
                       "first_parked_at": row["first_parked_at"].isoformat()}
            log.warning("sweep.gave_up", kind="parked_original", **gave_up,
                        age_seconds=int((now - row["first_parked_at"]).total_seconds()))
    return record, QueryResult(kind, released, gave_up)
