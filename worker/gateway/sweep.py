"""The pending-order sweep: ask IOTPay about orders whose notify never came.

One pass (`sweep_once`, run by `iotledger sweep` and the clock every minute):

1. settle from the ledger: expected orders that a notify already posted (or failed) are
   resolved without a query, and parked refunds whose original has since posted are done;
2. find the due work: expected orders not final whose `next_query_at` has come, and the
   original pay of every refund parked without it;
3. query the gateway with bounded concurrency (a thread pool) and a per-merchant rate limit;
4. post every answer through the ledger's own `post_notify` (source "query"): a success posts
   exactly once even when the notify arrives at the same moment (the ledger's advisory lock
   and unique constraints decide); posting an original releases the refunds parked on it;
5. schedule the next query by the order's age (worker/gateway/schedule.py), or give up at the
   give-up age: `gave_up_at` is set, `sweep.gave_up` is logged, and it is never queried again.

Time is a parameter (`now`), so tests drive the schedule without sleeping. Two passes never
run at once: a PostgreSQL advisory lock is held for the pass (a second one returns skipped).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from worker import db, logs
from worker.errors import IotLedgerError, RetryableError
from worker.gateway.client import GatewayAnswer, GatewayClient
from worker.gateway.errors import GatewayFailError, GatewayNetworkError
from worker.gateway.ratelimit import RateLimiter
from worker.gateway.schedule import PARKED_STEPS, Schedule
from worker.iotpay.channels import family_for_channel
from worker.ledger.posting import post_notify
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


@dataclass(frozen=True)
class QueryResult:
    """The result of one query task, applied to the report by the coordinating thread."""

    kind: str  # paid | failed | pending | rejected | error (no usable answer)
    released: int = 0
    gave_up: dict[str, Any] | None = None


def open_pool(database_url: str, concurrency: int = DEFAULT_CONCURRENCY) -> psycopg_pool.ConnectionPool:
    """A connection pool sized for one sweep pass (the lock connection plus one per worker)."""
    return db.open_pool(database_url, name="sweep", max_size=concurrency + 1, timeout=30.0)


def sweep_once(pool: psycopg_pool.ConnectionPool, client: GatewayClient, *, now: datetime,
               schedule: Schedule | None = None, concurrency: int = DEFAULT_CONCURRENCY,
               limiter: RateLimiter | None = None, batch: int = DEFAULT_BATCH) -> SweepReport:
    """Run one sweep pass as of `now` (aware). Returns its report (skipped when another pass runs).

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
            _run(lock_conn, pool, client, now, schedule, concurrency, limiter, batch, report)
        finally:
            lock_conn.execute(q("sweep_unlock"), {"key": db.SWEEP_LOCK_KEY})
            lock_conn.autocommit = False
    report.seconds = time.perf_counter() - started
    log.info("sweep.pass", **{k: v for k, v in report.counts().items() if k != "now"})
    return report


def _run(conn: psycopg.Connection, pool: psycopg_pool.ConnectionPool, client: GatewayClient, now: datetime,
         schedule: Schedule, concurrency: int, limiter: RateLimiter | None, batch: int, report: SweepReport) -> None:
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

    def task(fn: Callable[..., QueryResult], row: dict[str, Any]) -> QueryResult:
        with pool.connection() as task_conn:  # one connection per task: post, then record
            return fn(task_conn, client, row, now, schedule, limiter)

    tasks: list[Callable[[], QueryResult]] = [
        (lambda r=row: task(_sweep_expected, r)) for row in expected
    ] + [(lambda r=row: task(_sweep_parked, r)) for row in parked]
    if tasks:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sweep") as pool_exec:
            for result in pool_exec.map(lambda run_task: run_task(), tasks):
                _tally(report, result)
    conn.execute(q("sweep_run_finish"), {"id": run_id, "counts": Jsonb(report.counts())})


def _tally(report: SweepReport, result: QueryResult) -> None:
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


def _order_state(conn: psycopg.Connection, pay_order_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("sweep_order_state"), {"pay_order_id": pay_order_id}).fetchone()
    conn.commit()
    return row or {"state": None, "pay_type": None, "inbox_open": False, "parked": 0}


def _classify(order: dict[str, Any]) -> str:
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


def _query(client: GatewayClient, limiter: RateLimiter | None, family: str, mch_id: str, **ids: str | None) -> GatewayAnswer:
    if limiter is not None:
        limiter.acquire(mch_id)
    return client.query(family, mch_id, **ids)  # type: ignore[arg-type]


def _save(conn: psycopg.Connection, query: str, params: dict[str, Any]) -> None:
    """Record the sweep's own bookkeeping. Asynchronous commit: losing the last few updates in a
    crash only means those orders are queried once more (posting is idempotent), and it halves
    the fsyncs per order. The ledger's posting itself commits synchronously."""
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit TO OFF")
        conn.execute(q(query), params)


def _sweep_expected(conn: psycopg.Connection, client: GatewayClient, row: dict[str, Any], now: datetime,
                    schedule: Schedule, limiter: RateLimiter | None) -> QueryResult:
    ids = {"pay_order_id": row["pay_order_id"]} if row["pay_order_id"] else {"mch_order_no": row["mch_order_no"]}
    who = {"mch_id": row["mch_id"], "mch_order_no": row["mch_order_no"]}
    record = {**who, "now": now, "last_status": None, "last_error": None, "pay_order_id": row["pay_order_id"],
              "next_query_at": None, "resolved_at": None, "resolution": None, "gave_up_at": None}
    kind, released = "error", 0
    try:
        answer = _query(client, limiter, row["family"], row["mch_id"], **ids)
        _require_pay(answer, row["pay_order_id"] or f"{row['mch_id']}/{row['mch_order_no']}")
        record.update(last_status=answer.notify.status)
        result = post_notify(conn, answer.notify, source="query")
        kind = _classify(_order_state(conn, answer.notify.pay_order_id))
        released = len(result.released)
        record.update(pay_order_id=answer.notify.pay_order_id)
        if kind != "pending":
            record.update(resolved_at=now, resolution=kind)
            log.info("sweep.found", **who, pay_order_id=answer.notify.pay_order_id, status=answer.notify.status,
                     outcome=result.outcome.value, resolution=kind)
    except (GatewayNetworkError, GatewayFailError) as exc:
        record["last_error"] = str(exc)[:500]
        log.info("sweep.no_answer", **who, error=str(exc))
    except RetryableError:
        raise
    except IotLedgerError as exc:  # bad sign, malformed answer: keep asking, someone must look
        record["last_error"] = str(exc)[:500]
        log.warning("sweep.bad_answer", **who, error=str(exc))
    except Exception as exc:  # a bug must not stop the other orders of the pass; logged with its traceback
        record["last_error"] = f"{type(exc).__name__}: {exc}"[:500]
        log.exception("sweep.task_failed", **who)
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
    _save(conn, "sweep_record_expected", record)
    return QueryResult(kind, released, gave_up)


def _sweep_parked(conn: psycopg.Connection, client: GatewayClient, row: dict[str, Any], now: datetime,
                  schedule: Schedule, limiter: RateLimiter | None) -> QueryResult:
    original = row["original_order_id"]
    record = {"original_order_id": original, "now": now, "last_status": None, "last_error": None,
              "next_query_at": None, "resolved_at": None, "gave_up_at": None}
    kind, released = "error", 0
    try:
        answer = _query(client, limiter, row["family"], row["mch_id"], pay_order_id=original)
        _require_pay(answer, original)
        record["last_status"] = answer.notify.status
        result = post_notify(conn, answer.notify, source="query")
        order = _order_state(conn, original)
        kind = _classify(order)
        released = len(result.released)
        if kind == "paid" and order["parked"]:
            kind = "pending"  # posted, yet refunds still wait on it: keep asking until they leave or give-up
            record["last_error"] = f"{order['parked']} refund(s) still parked on {original} after it posted"
        if kind == "paid":
            record["resolved_at"] = now
            log.info("sweep.found_original", original_order_id=original, outcome=result.outcome.value,
                     released=[r.pay_order_id for r in result.released])
    except (GatewayNetworkError, GatewayFailError) as exc:
        record["last_error"] = str(exc)[:500]
        log.info("sweep.no_answer", original_order_id=original, error=str(exc))
    except RetryableError:
        raise
    except IotLedgerError as exc:
        record["last_error"] = str(exc)[:500]
        log.warning("sweep.bad_answer", original_order_id=original, error=str(exc))
    except Exception as exc:  # a bug must not stop the other orders of the pass; logged with its traceback
        record["last_error"] = f"{type(exc).__name__}: {exc}"[:500]
        log.exception("sweep.task_failed", original_order_id=original)
    if kind in ("conflict", "rejected"):
        kind = "rejected"
    gave_up = None
    if record["resolved_at"] is None:
        parked_schedule = Schedule(give_up_after=schedule.give_up_after, default_steps=PARKED_STEPS)
        record["next_query_at"] = parked_schedule.next_query_at(row["first_parked_at"], now, None)
        if kind in ("failed", "rejected"):
            # the original will never post: the refunds stay parked and the ledger reports them
            record["next_query_at"] = None
            record["gave_up_at"] = now
        if record["next_query_at"] is None:
            record["gave_up_at"] = now
            gave_up = {"original_order_id": original, "mch_id": row["mch_id"], "query_count": row["query_count"] + 1,
                       "last_status": record["last_status"], "last_error": record["last_error"],
                       "first_parked_at": row["first_parked_at"].isoformat()}
            log.warning("sweep.gave_up", kind="parked_original", **gave_up,
                        age_seconds=int((now - row["first_parked_at"]).total_seconds()))
    _save(conn, "sweep_record_parked", record)
    return QueryResult(kind, released, gave_up)


def next_due(pool: psycopg_pool.ConnectionPool) -> datetime | None:
    """When the next query is due (None: nothing left to ask)."""
    with pool.connection() as conn:
        return conn.execute(q("sweep_next_due")).fetchone()[0]


def sweep_for(pool: psycopg_pool.ConnectionPool, client: GatewayClient, *, seconds: float,
              clock: Callable[[], datetime], sleep: Callable[[float], None] = time.sleep,
              min_pause: float = 1.0, idle_pause: float = 2.0, **kwargs: Any) -> list[SweepReport]:
    """Run passes for `seconds`, sleeping until the next query is due between them.

    This is how POS orders get their 2-second polling while the clock starts the sweep once a
    minute (`iotledger sweep --for 55`). With nothing scheduled it looks again every
    `idle_pause` seconds, since a new POS order may be expected at any moment. Raises as sweep_once.
    """
    deadline = clock() + timedelta(seconds=seconds)
    reports = []
    while True:
        now = clock()
        reports.append(sweep_once(pool, client, now=now, **kwargs))
        due = next_due(pool)
        wake = now + timedelta(seconds=idle_pause) if due is None else max(due, now + timedelta(seconds=min_pause))
        if wake > deadline:
            return reports
        sleep(max(0.0, (wake - clock()).total_seconds()))
