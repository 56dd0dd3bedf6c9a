"""What the demo's steps share: the run's settings and day, its processes, the simulator's control
API, the gateway client, and the time of day the simulated gateway is set to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from worker.config import Settings
from worker.demo.report import DemoError, DemoReport
from worker.gateway.client import GatewayClient
from worker.gateway.schedule import Schedule
from worker.processes import ProcessGroup
from worker.reports.businessday import BusinessDay


class SimulatorControl:
    """The simulator's control API (`/_sim/`)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, timeout=10)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The JSON answer of `method /_sim/<path>`. Raises DemoError when it is not HTTP 200."""
        resp = self.http.request(method, "/_sim/" + path, json=body)
        if resp.status_code != 200:
            raise DemoError(f"simulator {method} /_sim/{path}: HTTP {resp.status_code} {resp.text[:200]}")
        return resp.json()

    def at(self, instant: datetime) -> None:
        """Set the simulator's clock (what happens next at the gateway happens then)."""
        self.call("POST", "clock", {"now": instant.isoformat()})

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()


@dataclass
class Stage:
    """One demo run: set up by run_demo, filled in by the steps in turn."""

    settings: Settings
    server_url: str
    broker_url: str
    out_dir: Path
    orders: int
    seed: int
    now: datetime
    bd: BusinessDay  # the business day played
    key: str  # the demo merchant's signing key
    fresh_database: bool
    report: DemoReport
    procs: ProcessGroup  # logging to the run's data folder
    schedule: Schedule
    sim_port: int
    web_port: int
    sim: SimulatorControl
    client: GatewayClient
    t: datetime  # the simulated gateway's time of day
    gap: timedelta  # between two events of the day
    db: str = ""
    env: dict[str, str] = field(default_factory=dict)  # of the simulator, web and worker processes
    paid: list[dict[str, Any]] = field(default_factory=list)  # the pays notified: id, amount, channel, currency

    @property
    def sim_url(self) -> str:
        """The simulator's base URL."""
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def web_url(self) -> str:
        """The ingress's base URL."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def notify_url(self) -> str:
        """Where the simulator sends notifies: the ingress."""
        return self.web_url + "/iotpay/notify"

    def next_event(self) -> datetime:
        """Move the day's time on by one gap and set the simulator's clock there."""
        self.t += self.gap
        self.sim.at(self.t)
        return self.t
