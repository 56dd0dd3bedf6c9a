"""The clock: job slots claimed once across clocks, failures retried, nightly close, APScheduler wiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from tests.test_reconcile_seed import TORONTO, at, expect, post
from worker.config import Settings
from worker.clock import Clock

UTC = timezone.utc


def settings() -> Settings:
    return Settings.from_env({"IOTLEDGER_SETTLEMENT_TZ": "America/Toronto"})


def clocks(db_url: str, tmp_path: Path, jobs: dict, n: int = 2) -> list[Clock]:
    return [Clock(db_url, settings(), jobs, out_dir=tmp_path, clock_id=f"clock-{i}") for i in range(n)]


def all_at_once(fns) -> list:
    barrier = threading.Barrier(len(fns))
    out: list = [None] * len(fns)

    def go(i, fn):
        barrier.wait()
        out[i] = fn()

    threads = [threading.Thread(target=go, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_two_clocks_never_run_the_same_minute_twice(db_url: str, tmp_path: Path) -> None:
    calls: list[tuple[str, datetime]] = []
    lock = threading.Lock()

    def job(now: datetime) -> dict:
        with lock:
            calls.append(("sweep", now))
        return {"ok": 1}

    cs = clocks(db_url, tmp_path, {"sweep": job}, n=4)
    minute = datetime(2026, 11, 21, 15, 0, 7, tzinfo=UTC)
    outcomes = all_at_once([lambda c=c: c.tick("sweep", minute) for c in cs * 2])
    assert sorted(outcomes) == ["done"] + ["skipped"] * 7
    assert len(calls) == 1
    # the same minute again later: still skipped; the next minute: runs once more
    assert cs[1].tick("sweep", minute + timedelta(seconds=40)) == "skipped"
    assert sorted(all_at_once([lambda c=c: c.tick("sweep", minute + timedelta(minutes=1)) for c in cs])) == \
        ["done", "skipped", "skipped", "skipped"]
    assert len(calls) == 2
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT slot, status, result FROM job_runs WHERE job = 'sweep' ORDER BY slot").fetchall()
    assert rows == [("2026-11-21T15:00:00+00:00", "done", {"ok": 1}), ("2026-11-21T15:01:00+00:00", "done", {"ok": 1})]


def test_a_failed_slot_is_retried_on_the_next_tick_and_a_done_one_is_not(db_url: str, tmp_path: Path) -> None:
    state = {"fail": True, "runs": 0}

    def job(now: datetime) -> None:
        state["runs"] += 1
        if state["fail"]:
            raise RuntimeError("gateway unreachable")

    a, b = clocks(db_url, tmp_path, {"redrive": job})
    minute = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    assert a.tick("redrive", minute) == "failed"
    state["fail"] = False
    assert b.tick("redrive", minute) == "done"
    assert a.tick("redrive", minute) == "skipped"
    assert state["runs"] == 2
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT status, attempts, clock_id FROM job_runs").fetchone() == ("done", 2, "clock-1")


def test_two_clocks_close_a_day_once(db_url: str, conn: psycopg.Connection, tmp_path: Path) -> None:
    post(conn, "PC-1", 1000, at("2026-11-21 12:00:00"))
    expect(conn, "MO-PC-1", 1000, at("2026-11-21 11:59:00"), pay_order_id="PC-1")
    post(conn, "PC-P", 500, at("2026-11-21 13:00:00"), status=0)  # stuck pending: one mismatch
    now = at("2026-11-22 00:15:00")
    a, b = clocks(db_url, tmp_path, {})
    results = all_at_once([lambda: a.nightly(now), lambda: b.nightly(now)])
    assert sorted(r["2026-11-21"] for r in results) == ["done", "skipped"]
    assert conn.execute("SELECT count(*) FROM reconcile_runs").fetchone() == (1,)
    assert conn.execute("SELECT export_date, version FROM settlement_exports").fetchall() == [(date(2026, 11, 21), 1)]
    kinds = conn.execute("SELECT kind, dedup_key FROM alerts ORDER BY id").fetchall()
    assert [(k, key.rsplit(":", 1)[0] if k == "mismatch" else key) for k, key in kinds] == \
        [("mismatch", "mismatch:stuck_pending:PC-P"), ("daily_summary", "summary:2026-11-21")]
    assert (tmp_path / "2026-11-21" / "manifest-2026-11-21.json").exists()
    # the files verify that followed the close is kept (the console's overview shows it)
    assert conn.execute("SELECT source, ok, last_day FROM files_verify_runs").fetchall() == \
        [("clock", True, date(2026, 11, 21))]
    # the next night catches up on nothing old, closes only the new day
    assert a.nightly(at("2026-11-23 00:15:00")) == {"2026-11-22": "done"}
    # after a week away, the clock catches up day by day
    assert list(b.nightly(at("2026-11-26 09:00:00"))) == ["2026-11-23", "2026-11-24", "2026-11-25"]


def test_apscheduler_wiring_fires_after_the_local_day_closes(db_url: str, tmp_path: Path) -> None:
    clock = Clock(db_url, settings(), {"sweep": lambda now: None, "redrive": lambda now: None}, out_dir=tmp_path)
    scheduler = clock.schedule(BackgroundScheduler(timezone=TORONTO))
    jobs = {j.id: j for j in scheduler.get_jobs()}
    assert set(jobs) == {"sweep", "redrive", "nightly", "nightly_retry", "nightly_catch_up"}
    nightly = jobs["nightly"].trigger
    for before, fires in [
        (at("2026-11-21 23:59:00"), at("2026-11-22 00:15:00")),
        (at("2026-03-07 23:00:00"), at("2026-03-08 00:15:00")),  # into the 23-hour day
        (at("2026-10-31 23:00:00"), at("2026-11-01 00:15:00")),  # into the 25-hour day
        (at("2026-11-01 00:16:00"), at("2026-11-02 00:15:00")),  # 25 hours later
    ]:
        assert nightly.get_next_fire_time(None, before) == fires
    minute = jobs["sweep"].trigger.get_next_fire_time(None, datetime(2026, 11, 21, 15, 0, 1, tzinfo=UTC))
    assert minute == datetime(2026, 11, 21, 15, 1, tzinfo=UTC)


@pytest.mark.slow
def test_two_clock_processes_at_once(db_url: str, redis_url: str, tmp_path: Path) -> None:
    env = dict(os.environ, DATABASE_URL=db_url, REDIS_URL=redis_url, IOTLEDGER_SETTLEMENT_TZ="America/Toronto",
               IOTLEDGER_QUEUE=f"clock{os.getpid()}")
    for name in ("IOTLEDGER_ALERT_WEBHOOK_URL", "IOTPAY_MERCHANTS", "IOTPAY_MERCHANTS_FILE"):
        env.pop(name, None)
    cmd = [str(Path(sys.executable).parent / "iotledger"), "clock", "--once", "--out", str(tmp_path)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    summaries = [json.loads(next(line for line in err.splitlines() if '"clock.once"' in line)) for _, err in outs]
    nightly = [v for s in summaries for k, v in s.items() if k.startswith("nightly ")]
    # one closed the day; the other found it being closed (skipped) or already closed (nothing to do)
    assert nightly.count("done") == 1 and set(nightly) <= {"done", "skipped"}
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM reconcile_runs").fetchone() == (1,)
        runs = conn.execute("SELECT job, slot, count(*) OVER (PARTITION BY job) FROM job_runs ORDER BY job").fetchall()
    for job in ("sweep", "redrive", "alerts"):
        outcomes = [s[job] for s in summaries]
        n_slots = sum(1 for r in runs if r[0] == job)
        # same minute: one ran, one skipped; a minute boundary between them: each ran its own minute
        assert sorted(outcomes) == (["done", "skipped"] if n_slots == 1 else ["done", "done"]), (job, outcomes)


def test_a_day_whose_close_failed_is_closed_again_before_later_days(db_url: str, tmp_path: Path, monkeypatch) -> None:
    [clock] = clocks(db_url, tmp_path, {}, n=1)
    real = Clock.close_day
    failing = {date(2026, 11, 18)}

    def flaky(self, day, now):
        if day in failing:
            raise psycopg.OperationalError("database went away")
        return real(self, day, now)

    monkeypatch.setattr(Clock, "close_day", flaky)
    assert clock.nightly(at("2026-11-19 00:15:00")) == {"2026-11-18": "failed"}
    # the next night: the failed day is found again and closed first, then the new one
    failing.clear()
    assert clock.nightly(at("2026-11-20 00:15:00")) == {"2026-11-18": "done", "2026-11-19": "done"}
    with psycopg.connect(db_url) as conn:
        days = [r[0] for r in conn.execute("SELECT export_date FROM settlement_exports ORDER BY 1")]
    assert days == [date(2026, 11, 18), date(2026, 11, 19)]
    assert clock.days_to_close(at("2026-11-21 00:15:00")) == [date(2026, 11, 20)]
