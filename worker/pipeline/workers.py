"""The module the `dramatiq` command loads (`iotledger worker` runs it): broker first, then actors.

Every actor consuming IOTLEDGER_QUEUE is declared here, since a worker drops messages for
actors it does not know: the notify pipeline's, and the gateway's `expect_order` (the
checkout's expected orders).
"""

from __future__ import annotations

from worker.broker import setup_broker
from worker.cli.context import app_endpoints, app_settings
from worker.pipeline.stopping import absorb_repeated_stop

absorb_repeated_stop()  # in a worker process: honcho's SIGTERM and the master's are one stop

app_settings()  # configures logging (with the merchants' keys redacted) before anything logs
broker = setup_broker(app_endpoints().redis_url, prometheus=True)

from worker.gateway.actors import expect_actor  # noqa: E402  (must follow setup_broker)
from worker.pipeline import actors  # noqa: E402

expect_actor()

__all__ = ["actors", "broker"]
