"""run_demo: set the stage, run the steps in order under a progress bar, and always clean up."""

from __future__ import annotations

import contextlib
import secrets
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from worker.broker import delete_queue, sender_broker
from worker.config import Settings
from worker.demo.database import drop_scratch_database
from worker.demo.report import DemoError, DemoReport
from worker.demo.stage import SimulatorControl, Stage
from worker.demo.steps import LOGIN, MCH_ID, MIN_ORDERS, STEPS
from worker.errors import RetryableError
from worker.gateway.client import GatewayClient
from worker.gateway.schedule import Schedule
from worker.merchants import Merchant, Merchants
from worker.processes import ProcessError, ProcessGroup, free_port
from worker.reports.businessday import business_day, last_closed_day

OPENING = timedelta(hours=8)  # the shop opens at 08:00
EXTRA_EVENTS = 8  # room in the day for what follows the pays: a difference, refunds, a void


def run_demo(settings: Settings, server_url: str, broker_url: str, out_dir: Path, *, orders: int = 24,
             seed: int = 7, fresh_database: bool = True, drop_database: bool = False, progress: TextIO | None = None,
             now: datetime | None = None) -> DemoReport:
    """Play the day and return its report. Raises DemoError when a step did not happen as planned.

    The processes it started are stopped, and a scratch database is dropped with `drop_database`,
    whatever happens.
    """
    if orders < MIN_ORDERS:
        raise DemoError(f"--orders: at least {MIN_ORDERS}, got {orders}")
    stage = _stage(settings, server_url, broker_url, out_dir, orders, seed, fresh_database,
                   now or datetime.now(timezone.utc))
    report = stage.report
    with _progress(progress, [label for label, _ in STEPS]) as done:
        try:
            for label, step in STEPS:
                step(stage)
                done(label)
        except ProcessError as exc:
            raise DemoError(str(exc)) from None
        finally:
            stage.procs.stop()
            stage.client.close()
            stage.sim.close()
            _delete_queue(stage)
            if fresh_database and drop_database and report.database_url:
                drop_scratch_database(server_url, report.database_url)
                report.dropped_database = True
    return report


def _stage(settings: Settings, server_url: str, broker_url: str, out_dir: Path, orders: int, seed: int,
           fresh_database: bool, now: datetime) -> Stage:
    tz = settings.settlement_tz
    bd = business_day(last_closed_day(now, tz), tz)
    data_dir = settings.data_dir / "demo" / f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
    report = DemoReport(tz=tz.key, day=bd.day, logs=data_dir)
    key = secrets.token_hex(16)
    sim_port, web_port = free_port(), free_port()
    sim = SimulatorControl(f"http://127.0.0.1:{sim_port}")
    client = GatewayClient(Merchants({MCH_ID: Merchant(MCH_ID, (key,), LOGIN)}), v3_base_url=sim.base + "/v3",
                           v1_base_url=sim.base + "/v1", gateway_tz=settings.gateway_tz)
    return Stage(settings=settings, server_url=server_url, broker_url=broker_url, out_dir=out_dir, orders=orders,
                 seed=seed, now=now, bd=bd, key=key, fresh_database=fresh_database, report=report,
                 procs=ProcessGroup(data_dir),
                 schedule=Schedule(give_up_after=timedelta(seconds=settings.sweep_give_up_seconds)),
                 sim_port=sim_port, web_port=web_port, sim=sim, client=client, t=bd.start + OPENING,
                 # every event between 08:00 and 22:00
                 gap=timedelta(minutes=(14 * 60) // (orders + EXTRA_EVENTS)))


def _delete_queue(stage: Stage) -> None:
    # the demo's queue on the configured broker (an empty RabbitMQ queue stays otherwise); a broker
    # that is down now keeps it, harmlessly
    if "IOTLEDGER_QUEUE" in stage.env:
        with contextlib.suppress(RetryableError):
            delete_queue(sender_broker(stage.broker_url), stage.env["IOTLEDGER_QUEUE"])


@contextlib.contextmanager
def _progress(stream: TextIO | None, labels: list[str]) -> Iterator[Callable[[str], None]]:
    """A progress bar that names the step running; yields done(label), called as each step ends."""
    bar = tqdm(total=len(labels), desc="demo", unit="step", file=stream or sys.stderr, leave=True,
               bar_format="{desc:<28} {bar} {n_fmt}/{total_fmt} [{elapsed}]")
    bar.set_description_str(labels[0])

    def done(label: str) -> None:
        following = labels.index(label) + 1
        bar.set_description_str(labels[following] if following < len(labels) else "done")
        bar.update(1)

    try:
        yield done
    finally:
        bar.close()
