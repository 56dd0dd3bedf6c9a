"""The module the `dramatiq` command loads (`iotledger worker` runs it): broker first, then actors."""

from __future__ import annotations

from worker.broker import setup_broker
from worker.cli.context import app_endpoints, app_settings

app_settings()  # configures logging (with the merchants' keys redacted) before anything logs
broker = setup_broker(app_endpoints().redis_url, prometheus=True)

from worker.pipeline import actors  # noqa: E402  (must follow setup_broker)

__all__ = ["actors", "broker"]
