"""gunicorn settings for `iotledger console` (`gunicorn -c python:worker.console.gunicorn_conf`).

Its own address (IOTLEDGER_CONSOLE_HOST / IOTLEDGER_CONSOLE_PORT, default 127.0.0.1:8001) and
processes (IOTLEDGER_CONSOLE_WORKERS), never the ingress's: the public notify endpoint serves
nothing of this. Threads (gthread) answer the pages; a page is a few indexed queries. Other
gunicorn options go in GUNICORN_CMD_ARGS (TLS: --certfile/--keyfile; the session cookie is then
Secure). gunicorn honours X-Forwarded-Proto from FORWARDED_ALLOW_IPS (default 127.0.0.1,::1).
"""

from __future__ import annotations

from worker.config import settings

_s = settings()

bind = f"{_s.console_host}:{_s.console_port}"
workers = _s.console_workers
worker_class = "gthread"
THREADS = 4
threads = THREADS
timeout = 60  # `files verify now` hashes every file of the series
graceful_timeout = 20
keepalive = 5
accesslog = None
control_socket_disable = True
proc_name = "iotledger-console"
