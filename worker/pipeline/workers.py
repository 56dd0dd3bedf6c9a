"""The module the `dramatiq` command loads (`iotledger worker` runs it): the process's broker,
with every actor consuming IOTLEDGER_QUEUE declared on it (worker.runtime.worker_broker):
the notify pipeline's, and the gateway's `expect_order` / `expect_refund` (the checkout's
expected orders and refunds), since a worker drops messages for actors it does not know.
"""

from __future__ import annotations

from worker import runtime
from worker.pipeline.stopping import absorb_repeated_stop

absorb_repeated_stop()  # in a worker process: honcho's SIGTERM and the master's are one stop

broker = runtime.worker_broker()

__all__ = ["broker"]
