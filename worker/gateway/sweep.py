"""The pending-order sweep: ask IOTPay about orders whose notify never came.

One pass (`sweep_once`, run by `iotledger sweep` and the clock every minute):

1. settle from the ledger: expected orders that a notify already posted (or failed) are
   resolved without a query, and parked refunds whose original has since posted are done;
2. find the due work: expected orders not final whose `next_query_at` has come, and the
   original pay of every refund parked without it;
3. query the gateway with bounded concurrency (a thread pool) and a per-merchant rate limit;
4. post the answers, a batch at a time, through the ledger's own batch posting (source "query",
   worker/ledger/batch.py): a success posts exactly once even when the notify arrives at the same
   moment (the ledger's advisory locks and unique constraints decide); posting an original
   releases the refunds parked on it;
5. schedule the next query by the order's age (worker/gateway/schedule.py), or give up at the
   give-up age: `gave_up_at` is set, `sweep.gave_up` is logged, and it is never queried again.
   This bookkeeping is written a batch of answers at a time (worker/gateway/sweep_records.py),
   not in a transaction per query.

Time is a parameter (`now`), so tests drive the schedule without sleeping. Two passes never
run at once: a PostgreSQL advisory lock is held for the pass (a second one returns skipped).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from worker import db, logs
from worker.errors import IotLedgerError, RetryableError
from worker.gateway.client import GatewayAnswer, GatewayClient
from worker.gateway.errors import GatewayFailError, GatewayNetworkError
from worker.gateway.ratelimit import RateLimiter
from worker.gateway.schedule import Schedule
from worker.gateway.sweep_records import DEFAULT_RECORD_BATCH, Answered, QueryResult, Records
from worker.iotpay.channels import family_for_channel
from worker.sqlfiles import q

DEFAULT_CONCURRENCY = 8
DEFAULT_BATCH = 20_000  # most orders one pass handles; the rest are next minute's

log = logs.get("worker.gateway.sweep")


@dataclass
class SweepReport:
    """What one pass did."""

    now: datetime
    skipped: bool = False  # another sweep held the lock
    settled: int = 0  # expected orders found final in the ledger, no query needed
    due: int = 0
    queried: int = 0
    paid: int = 0  # success found (posted now, or already posted)
    failed: int = 0
    pending: int = 0  # still not final, queried again later
    rejected: int = 0
    gave_up: int = 0
    errors: int = 0  # no usable answer (network, FAIL, bad sign, malformed)
    released: int = 0  # parked refunds posted because their original posted
    seconds: float = 0.0
    concurrency: int = 0
    gave_up_orders: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """The numbers, for logs, sweep_runs and the CLI."""
        out = asdict(self)
        out.pop("gave_up_orders")
        out["now"] = self.now.isoformat()
        return out


def open_pool(database_url: str) -> psycopg_pool.ConnectionPool:
    """A connection pool for sweep passes: a pass's work is on one connection (its queries need
    none); two let `next_due` and a pass share it."""
    return db.open_pool(database_url, name="sweep", max_size=2, timeout=30.0)


def sweep_once(pool: psycopg_pool.ConnectionPool, client: GatewayClient, *, now: datetime,
               schedule: Schedule | None = None, concurrency: int = DEFAULT_CONCURRENCY,
               limiter: RateLimiter | None = None, batch: int = DEFAULT_BATCH,
               record_batch: int = DEFAULT_RECORD_BATCH) -> SweepReport:
    """Run one sweep pass as of `now` (aware). Returns its report (skipped when another pass runs).

    `batch` is the most due rows one pass asks about, `record_batch` how many answers are recorded
    per statement.

    Raises RetryableError when PostgreSQL is unavailable; gateway errors are counted, logged and
    retried on the next scheduled query, never raised.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    schedule = schedule or Schedule()
    report = SweepReport(now=now, concurrency=concurrency)
    started = time.perf_counter()
    with db.translated("during the sweep"), pool.connection() as lock_conn:
        lock_conn.autocommit = True
        if not lock_conn.execute(q("sweep_try_lock"), {"key": db.SWEEP_LOCK_KEY}).fetchone()[0]:
            report.skipped = True
            log.info("sweep.skipped", reason="another sweep is running")
            return report
        try:
            _run(lock_conn, client, now, schedule, concurrency, limiter, batch, record_batch, report)
        finally:
            lock_conn.execute(q("sweep_unlock"), {"key": db.SWEEP_LOCK_KEY})
            lock_conn.autocommit = False
    report.seconds = time.perf_counter() - started
    counts = {k: v for k, v in report.counts().items() if k != "now"}
    if report.due or report.errors:
        log.info("sweep.pass", **counts)
    else:  # nothing was due: polling every 2 s, an info line would bury the log
        log.debug("sweep.pass", **counts)
    return report


def _run(conn: psycopg.Connection, client: GatewayClient, now: datetime,
         schedule: Schedule, concurrency: int, limiter: RateLimiter | None, batch: int, record_batch: int,
         report: SweepReport) -> None:
    with conn.transaction():
        for name in ("sweep_settle_by_pay_order_id", "sweep_settle_by_mch_order_no"):
            report.settled += len(conn.execute(q(name), {"now": now}).fetchall())
    _discover_parked(conn, now, schedule)
    conn.execute(q("sweep_parked_settle"), {"now": now})
    with conn.cursor(row_factory=dict_row) as cur:
        expected = cur.execute(q("sweep_due_expected"), {"now": now, "limit": batch}).fetchall()
        parked = cur.execute(q("sweep_due_parked"), {"now": now, "limit": batch}).fetchall()
    report.due = len(expected) + len(parked)
    run_id = conn.execute(q("sweep_run_start"), {"now": now, "concurrency": concurrency}).fetchone()[0]

    def task(item: tuple[Literal["expected", "parked"], dict[str, Any]]) -> Answered:
        return _ask(client, limiter, *item)

    records = Records(conn, now, schedule, record_batch)
    tasks: list[tuple[Literal["expected", "parked"], dict[str, Any]]] = \
        [("expected", row) for row in expected] + [("parked", row) for row in parked]
    if tasks:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sweep") as pool_exec:
            try:
                for answered in pool_exec.map(task, tasks):
                    _tally(report, records.add(answered))
            except BaseException:
                # what was answered before the failure is still recorded, if PostgreSQL lets us
                with contextlib.suppress(Exception):
                    records.flush()
                raise
    _tally(report, records.flush())
    conn.execute(q("sweep_run_finish"), {"id": run_id, "counts": Jsonb(report.counts())})


def _tally(report: SweepReport, outcomes: list[QueryResult]) -> None:
    for result in outcomes:
        if result.kind == "error":
            report.errors += 1
        else:
            report.queried += 1
            if result.kind != "pending" or result.gave_up is None:
                setattr(report, result.kind, getattr(report, result.kind) + 1)
        report.released += result.released
        if result.gave_up is not None:
            report.gave_up += 1
            report.gave_up_orders.append(result.gave_up)


def _discover_parked(conn: psycopg.Connection, now: datetime, schedule: Schedule) -> None:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("sweep_parked_unqueried")).fetchall()
        for row in rows:
            family = row["expected_family"] or ("v1" if row["v1_fields"] else  # channelId: a v1 notify's field
                                                "v3" if row["channel"] is None else family_for_channel(row["channel"]))
            # the refund is here and its pay is not: the pay's notify is late or lost, so ask now
            cur.execute(q("sweep_parked_insert"), {
                "original_order_id": row["original_order_id"], "mch_id": row["mch_id"], "family": family,
                "first_parked_at": row["first_parked_at"], "next_query_at": min(now, row["first_parked_at"]),
            })


class WrongAnswerError(IotLedgerError):
    """The gateway answered about something other than what was asked (a refund for a pay)."""


def _require_pay(answer: GatewayAnswer, asked: str) -> None:
    """Only a pay answers a question about a pay: a refund's mchOrderNo is its mchRefundNo."""
    n = answer.notify
    if n.pay_type != "pay":
        raise WrongAnswerError(f"asked about pay {asked}, the gateway answered with a {n.pay_type} "
                               f"{n.pay_order_id} (originalOrderId {n.original_order_id}); not taken as the answer")


def _query(client: GatewayClient, limiter: RateLimiter | None, family: str, mch_id: str, **ids: str | None) -> GatewayAnswer:
    if limiter is not None:
        limiter.acquire(mch_id)
    return client.query(family, mch_id, **ids)  # type: ignore[arg-type]


def _ask(client: GatewayClient, limiter: RateLimiter | None,
         table: Literal["expected", "parked"], row: dict[str, Any]) -> Answered:
    """One task: ask the gateway about a due row.

    The answer is posted, and what it means decided, when its batch is recorded
    (worker/gateway/sweep_records.py). Every failure is logged and returned as an answer with
    its error.
    """
    if table == "expected":
        ids = {"pay_order_id": row["pay_order_id"]} if row["pay_order_id"] else {"mch_order_no": row["mch_order_no"]}
        asked = row["pay_order_id"] or f"{row['mch_id']}/{row['mch_order_no']}"
        who = {"mch_id": row["mch_id"], "mch_order_no": row["mch_order_no"]}
    else:
        ids = {"pay_order_id": row["original_order_id"]}
        asked = row["original_order_id"]
        who = {"original_order_id": asked}
    status = None
    try:
        answer = _query(client, limiter, row["family"], row["mch_id"], **ids)
        _require_pay(answer, asked)
        status = answer.notify.status
        # an expected order is settled by the order the gateway named; a parked original by itself
        decides = answer.notify.pay_order_id if table == "expected" else asked
        return Answered(table, row, status, decides, notify=answer.notify)
    except (GatewayNetworkError, GatewayFailError) as exc:
        error = str(exc)[:500]
        log.info("sweep.no_answer", **who, error=str(exc))
    except IotLedgerError as exc:  # bad sign, malformed answer: keep asking, someone must look
        error = str(exc)[:500]
        log.warning("sweep.bad_answer", **who, error=str(exc))
    except Exception as exc:  # a bug must not stop the other orders of the pass; logged with its traceback
        error = f"{type(exc).__name__}: {exc}"[:500]
        log.exception("sweep.task_failed", **who)
    return Answered(table, row, status, None, None, error)


def next_due(pool: psycopg_pool.ConnectionPool) -> datetime | None:
    """When the next query is due (None: nothing left to ask)."""
    with pool.connection() as conn:
        return conn.execute(q("sweep_next_due")).fetchone()[0]


def sweep_for(pool: psycopg_pool.ConnectionPool, client: GatewayClient, *, seconds: float,
              clock: Callable[[], datetime], sleep: Callable[[float], None] = time.sleep,
              min_pause: float = 1.0, idle_pause: float = 2.0, stop: threading.Event | None = None,
              **kwargs: Any) -> list[SweepReport]:
    """Run passes for `seconds`, sleeping until the next query is due between them.

    This is how POS orders get their 2-second polling while the clock starts the sweep once a
    minute (`iotledger sweep --for 55`). With nothing scheduled it looks again every
    `idle_pause` seconds, since a new POS order may be expected at any moment. When `stop` is
    set (the clock was asked to stop) it returns after the pass under way. Raises as sweep_once.
    """
    deadline = clock() + timedelta(seconds=seconds)
    reports = []
    while True:
        now = clock()
        reports.append(sweep_once(pool, client, now=now, **kwargs))
        due = next_due(pool)
        wake = now + timedelta(seconds=idle_pause) if due is None else max(due, now + timedelta(seconds=min_pause))
        if wake > deadline or (stop is not None and stop.is_set()):
            return reports
        pause = max(0.0, (wake - clock()).total_seconds())
        if stop is None:
            sleep(pause)
        elif stop.wait(pause):
            return reports
