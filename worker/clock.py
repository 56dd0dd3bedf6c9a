"""The clock (the Procfile's `clock`): APScheduler drives the periodic jobs.

    sweep     every minute: ask IOTPay about expected orders with no final answer (worker/gateway/sweep.py)
    redrive   every minute: queue again inbox rows not done in time (worker/pipeline/redrive.py)
    alerts    every minute: alert sweep give-ups and status regressions once each, deliver pending webhook alerts
    nightly   after each business day closes in the settlement zone (00:15 local by default), at
              start-up, and every minute while a day is still to close: reconcile the day, export
              its settlement files, send the summary, then `files verify` the series

Several clocks may run (two hosts, a deploy overlapping the old one): each run of a job is
first claimed as a row (job, slot) in `job_runs`, whose primary key lets exactly one clock
have it. The slot is the scheduled minute (UTC) for minute jobs and the business date for the
nightly job, so a job never runs twice for the same slot; a failed run is retried on the next
tick, up to a limit.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from psycopg.types.json import Jsonb

from worker import logs
from worker.config import Settings
from worker.reports.alerts import AlertSink, alert_exceptions, alert_give_ups, daily_summary, raise_alert
from worker.reports.businessday import business_day, last_closed_day
from worker.reports.export import export_day, summary_rows
from worker.reports.verify import VerifyReport, verify_files
from worker.reports.views import record_verify
from worker.reports.reconcile import reconcile
from worker.sqlfiles import q

log = logs.get("worker.clock")

DEFAULT_NIGHTLY_AT = time(0, 15)  # local: late notifies of the last minutes get a chance to arrive
MAX_ATTEMPTS = 5
STALE_AFTER = "2 hours"  # a 'running' claim this old belongs to a clock that died
UNLIMITED = 2**31 - 1  # a day's close is retried until it succeeds: it is never skipped
MAX_CLOSE_BACKOFF = timedelta(hours=1)
SWEEP_SECONDS = 50  # the sweep polls POS orders every few seconds within its minute


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


@dataclass
class Clock:
    """Claims and runs the periodic jobs. `jobs` maps a minute job's name to a callable(now)."""

    database_url: str
    settings: Settings
    jobs: dict[str, Callable[[datetime], Any]]
    out_dir: Path = Path("reports")
    sink: AlertSink = field(default_factory=AlertSink)
    clock_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}")
    nightly_at: time = DEFAULT_NIGHTLY_AT

    def _conn(self) -> psycopg.Connection:
        return psycopg.connect(self.database_url, autocommit=True)

    def claim(self, job: str, slot: str, max_attempts: int = MAX_ATTEMPTS) -> bool:
        """True when this clock got (job, slot) and must run it; False when another clock has or had it."""
        with self._conn() as conn:
            row = conn.execute(q("job_claim"), {"job": job, "slot": slot, "clock_id": self.clock_id,
                                                "max_attempts": max_attempts, "stale": STALE_AFTER}).fetchone()
        return row is not None

    def _finish(self, job: str, slot: str, status: str, result: Any = None, error: str | None = None) -> None:
        with self._conn() as conn:
            conn.execute(q("job_finish"), {"job": job, "slot": slot, "clock_id": self.clock_id, "status": status,
                                           "result": Jsonb(_jsonable(result)) if result is not None else None,
                                           "error": error})

    def run(self, job: str, slot: str, fn: Callable[[], Any], *, max_attempts: int = MAX_ATTEMPTS) -> str:
        """Claim and run one job slot; return 'done', 'failed' or 'skipped'. Never raises for the job's errors."""
        if not self.claim(job, slot, max_attempts):
            return "skipped"
        try:
            result = fn()
        except Exception as exc:  # the clock must keep ticking: the failure is recorded and retried
            log.error("clock.job_failed", job=job, slot=slot, error=f"{type(exc).__name__}: {exc}")
            self._finish(job, slot, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            return "failed"
        self._finish(job, slot, "done", result=result)
        log.info("clock.job_done", job=job, slot=slot, result=_jsonable(result))
        return "done"

    def tick(self, job: str, now: datetime | None = None) -> str:
        """Run a minute job for the minute of `now` (UTC)."""
        now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
        slot = now.replace(second=0, microsecond=0).isoformat()
        return self.run(job, slot, lambda: self.jobs[job](now))

    def days_to_close(self, now: datetime) -> list[date]:
        """Every closed business day the nightly job has not done yet, oldest first, with no cap.

        The series starts at the first day ever closed (or tried), else at the business day of
        the earliest ledger entry. A day whose close failed, or that was exported by hand, is
        still to do: it is reconciled, exported (given back unchanged) and summarised.
        """
        tz = self.settings.settlement_tz
        last = last_closed_day(now - timedelta(hours=self.nightly_at.hour, minutes=self.nightly_at.minute), tz)
        with self._conn() as conn:
            (first,) = conn.execute(q("series_start"), {"tz": tz.key}).fetchone()
            first = last if first is None else first  # an empty ledger: the series starts with the last closed day
            if first > last:
                return []
            done = {r[0] for r in conn.execute(q("nightly_done_between"), {"first": first, "last": last})}
        return [d for d in (first + timedelta(days=i) for i in range((last - first).days + 1)) if d not in done]

    def nightly_retry(self) -> dict[str, str]:
        """The minute job: close what is still to close, a failed day after its backoff."""
        return self.nightly(retry=True)

    def nightly(self, now: datetime | None = None, *, retry: bool = False) -> dict[str, str]:
        """Reconcile, export and summarise every closed day not done yet, oldest first; return {date: outcome}.

        Stops at the first day that fails, so days close in order; a failed day is tried again on
        a later tick after a backoff (1, 2, 4 ... minutes, at most an hour), never skipped, and
        alerted with its error on its first failure and once a day while it lasts. After closing
        days, `files verify` runs and any finding is alerted. `retry` (the minute job) respects
        the backoff; the nightly run at `nightly_at` and the start-up catch-up always try.
        """
        now = now or datetime.now(timezone.utc)
        outcomes: dict[str, str] = {}
        for day in self.days_to_close(now):
            if retry and not self._backoff_over(day):
                outcomes[str(day)] = "waiting"
                break
            outcomes[str(day)] = self.run("nightly", str(day), lambda d=day: self.close_day(d, now),
                                          max_attempts=UNLIMITED)
            if outcomes[str(day)] == "failed":
                self._alert_close_failed(day, now)
                break
        if any(o == "done" for o in outcomes.values()):
            self.verify(now)
        return outcomes

    def _backoff_over(self, day: date) -> bool:
        """True when a failed close of `day` may be tried again (1, 2, 4 ... minutes after its last failure)."""
        with self._conn() as conn:
            row = conn.execute(q("nightly_state"), {"slot": str(day)}).fetchone()
        if row is None or row[0] != "failed" or row[2] is None:
            return True
        wait = min(timedelta(minutes=2 ** min(row[1] - 1, 10)), MAX_CLOSE_BACKOFF)
        return datetime.now(timezone.utc) >= row[2] + wait  # job_runs times are the database's real clock

    def _alert_close_failed(self, day: date, now: datetime) -> None:
        with self._conn() as conn:
            row = conn.execute(q("nightly_state"), {"slot": str(day)}).fetchone()
        local = now.astimezone(self.settings.settlement_tz).date()
        attempts, error = (row[1], row[3]) if row else (0, "unknown")
        with psycopg.connect(self.database_url) as conn:
            raise_alert(conn, self.sink, f"close_failed:{day}:{local}", "close_failed",
                        f"closing business day {day} failed (attempt {attempts}): {error}. Later days wait for it; "
                        f"it is retried on every clock tick with backoff.",
                        {"business_date": str(day), "attempts": attempts, "error": error, "alerted_on": str(local)})
            self.sink.deliver_pending(conn)

    def verify(self, now: datetime) -> VerifyReport:
        """Run `files verify` over the series and alert its findings (again whenever they change)."""
        with psycopg.connect(self.database_url) as conn:
            report = verify_files(conn, self.out_dir, self.settings.settlement_tz, now=now)
            record_verify(conn, report, "clock")  # the console's overview shows the last run
            if not report.ok:
                text = "; ".join(f.detail for f in report.findings[:10])
                key = hashlib.sha256("\n".join(f.detail for f in report.findings).encode()).hexdigest()[:16]
                raise_alert(conn, self.sink, f"files_verify:{key}", "files_verify",
                            f"files verify found {len(report.findings)} problem(s) in {self.out_dir}: {text}",
                            {"findings": [f.detail for f in report.findings[:100]]})
                self.sink.deliver_pending(conn)
        log.info("clock.files_verify", ok=report.ok, findings=len(report.findings))
        return report

    def close_day(self, day: date, now: datetime) -> dict[str, Any]:
        """The nightly work for one day. Raises what reconcile/export raise (the run is recorded failed)."""
        tz = self.settings.settlement_tz
        with psycopg.connect(self.database_url) as conn:
            result = reconcile(conn, day, tz, self.sink)
            exported = export_day(conn, day, tz, self.out_dir, now=now,
                                  workbook_max_rows=self.settings.workbook_max_rows)
            with conn.cursor() as cur:
                totals = summary_rows(cur, day)
            conn.commit()
            daily_summary(conn, self.sink, business_day(day, tz), totals, files=str(exported.folder))
            self.sink.deliver_pending(conn)
            with conn.transaction():
                conn.execute(q("job_prune"), {"before": now - timedelta(days=7)})
        return {"run_id": result.run_id, "mismatches": len(result.mismatches), "export": exported.status,
                "folder": str(exported.folder)}

    def schedule(self, scheduler: BaseScheduler) -> BaseScheduler:
        """Add the jobs to an APScheduler scheduler (not started) and return it."""
        tz = self.settings.settlement_tz
        common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
        for name in self.jobs:
            scheduler.add_job(self.tick, CronTrigger(second=0, timezone=timezone.utc), args=[name], id=name,
                              name=name, **common)
        scheduler.add_job(self.nightly, CronTrigger(hour=self.nightly_at.hour, minute=self.nightly_at.minute,
                                                    timezone=tz), id="nightly", name="nightly",
                          max_instances=1, coalesce=True, misfire_grace_time=3600)
        # every minute: a day whose close failed is retried (with backoff) and a missed one is closed
        scheduler.add_job(self.nightly_retry, CronTrigger(second=30, timezone=timezone.utc), id="nightly_retry",
                          name="nightly retry", max_instances=1, coalesce=True, misfire_grace_time=30)
        # catch up at start-up: a day that closed while no clock ran is closed now
        scheduler.add_job(self.nightly, id="nightly_catch_up", name="nightly catch-up",
                          next_run_time=datetime.now(timezone.utc))
        return scheduler


def default_jobs(settings: Settings, database_url: str, broker_url: str, sink: AlertSink,
                 sweep_seconds: float = SWEEP_SECONDS, stop: threading.Event | None = None) -> dict[str, Callable]:
    """The production minute jobs: the gateway sweep, the inbox redrive, the alerts.

    With sweep_seconds 0 the sweep makes one pass instead of polling within its minute; once
    `stop` is set, a sweep polling within its minute returns after its pass under way.
    """
    from worker.gateway.client import GatewayClient
    from worker.gateway.ratelimit import RateLimiter
    from worker.gateway.schedule import Schedule
    from worker.gateway.sweep import DEFAULT_CONCURRENCY, open_pool, sweep_for, sweep_once
    from worker.pipeline.redrive import redrive_once

    schedule = Schedule(give_up_after=timedelta(seconds=settings.sweep_give_up_seconds))
    limiter = RateLimiter(settings.query_rate_per_second)
    state: dict[str, Any] = {}

    def sweep(now: datetime) -> dict[str, int]:
        if "pool" not in state:  # opened on first use, kept for the clock's life
            state["pool"] = open_pool(database_url)
            state["client"] = GatewayClient.from_settings(settings, max_connections=DEFAULT_CONCURRENCY)
        common = {"schedule": schedule, "concurrency": DEFAULT_CONCURRENCY, "limiter": limiter}
        if sweep_seconds:
            reports = sweep_for(state["pool"], state["client"], seconds=sweep_seconds,
                                clock=lambda: datetime.now(timezone.utc), stop=stop, **common)
        else:
            reports = [sweep_once(state["pool"], state["client"], now=now, **common)]
        keys = ("queried", "paid", "failed", "pending", "gave_up", "errors", "released")
        return {k: sum(getattr(r, k) for r in reports) for k in keys} | {"passes": len(reports)}

    def redrive(now: datetime) -> dict[str, int]:
        return {"redriven": redrive_once(database_url, broker_url, settings, now=now)}

    def alerts(now: datetime) -> dict[str, int]:
        with psycopg.connect(database_url) as conn:
            give_ups = alert_give_ups(conn, sink)
            exceptions = alert_exceptions(conn, sink)
            sent, failed = sink.deliver_pending(conn)
        return {"give_ups": give_ups, "exceptions": exceptions, "sent": sent, "not_sent": failed}

    return {"sweep": sweep, "redrive": redrive, "alerts": alerts}


def run_clock(settings: Settings, database_url: str, broker_url: str, out_dir: Path, *, once: bool = False) -> int:
    """Run the clock until interrupted (or one round of every job with `once`); return an exit code."""
    sink = AlertSink(settings.alert_webhook_url, per_class=settings.alerts_per_class)
    stopping = threading.Event()
    jobs = default_jobs(settings, database_url, broker_url, sink, sweep_seconds=0 if once else SWEEP_SECONDS,
                        stop=stopping)
    clock = Clock(database_url, settings, jobs, out_dir, sink)
    if once:
        now = datetime.now(timezone.utc)
        outcomes = {name: clock.tick(name, now) for name in clock.jobs}
        outcomes.update({f"nightly {d}": o for d, o in clock.nightly(now).items()})
        log.info("clock.once", clock_id=clock.clock_id, **outcomes)
        return 1 if "failed" in outcomes.values() else 0
    scheduler = clock.schedule(BlockingScheduler(timezone=settings.settlement_tz))
    log.info("clock.start", clock_id=clock.clock_id, jobs=[j.id for j in scheduler.get_jobs()],
             settlement_tz=settings.settlement_tz.key, nightly_at=clock.nightly_at.isoformat())

    def stop(signum: int, frame: object) -> None:
        # a process manager's SIGTERM stops the schedule; a job already running finishes first
        # (the executor's threads are joined at exit): the sweep, polling within its minute, returns
        # after its pass under way; a nightly close runs to its end (or, killed, rolls back whole)
        log.info("clock.stop", clock_id=clock.clock_id, signal=signal.Signals(signum).name)
        stopping.set()
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0
