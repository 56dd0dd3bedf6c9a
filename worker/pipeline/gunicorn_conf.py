"""gunicorn settings for `iotledger web` (`gunicorn -c python:worker.pipeline.gunicorn_conf`).

Host, port and worker processes come from Settings (IOTLEDGER_WEB_HOST, PORT or
IOTLEDGER_WEB_PORT, IOTLEDGER_WEB_WORKERS); `iotledger web --host/--port/--workers` override
them on gunicorn's command line. Any other gunicorn option can be given in GUNICORN_CMD_ARGS.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from worker.config import settings

_s = settings()

bind = f"{_s.web_host}:{_s.web_port}"
workers = _s.web_workers
# uvicorn workers (server.py): requests are read on an event loop, so a slow client holds no
# thread; whole requests go to the app on THREADS threads per process (front.py)
worker_class = "worker.pipeline.server.IngressWorker"
THREADS = 4
threads = THREADS
# a worker whose event loop does not report for this long is killed and replaced
timeout = 30
# SIGTERM: stop accepting, finish what is held (each request is bounded by its read deadline)
graceful_timeout = 20
keepalive = 5
accesslog = None
# gunicorn's control socket (for gunicornc) is not used; disabled so that several servers on one
# host (tests, benchmarks) do not fight over $HOME/.gunicorn/gunicorn.ctl
control_socket_disable = True
proc_name = "iotledger-web"


def on_starting(server: Any) -> None:
    """Start from an empty metrics folder: the counters of a previous run must not add up."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead web worker's live gauges from the multiprocess metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
