"""The HTTP server of `iotledger web`: gunicorn's master with uvicorn workers, and a request deadline.

gunicorn's master keeps what it is good at: worker processes, `kill -HUP` (new workers on the
same listening socket, the old ones finish what they hold), graceful SIGTERM. Its gthread
worker, though, reads a request on the very thread that will answer it, so a client sending
its headers one byte a second holds that thread, and a few such clients hold them all.

Here each worker is uvicorn (`IngressWorker`, from the uvicorn-worker package): requests are
read on an event loop, where a slow or idle connection costs a little memory and no thread;
the front (front.py) hands only whole requests to the WSGI app's threads and sheds load early.
On top of uvicorn's h11 protocol, `DeadlineProtocol` bounds what a connection may cost:

- a request's headers and body must arrive within IOTLEDGER_WEB_REQUEST_TIMEOUT_SECONDS of the
  connection being opened or its previous answer; past that the answer is 408 and the
  connection is closed (uvicorn itself has no such deadline);
- the request line and headers together are at most MAX_HEADER_BYTES (h11 answers 400 beyond).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn_worker import UvicornWorker

from worker.config import settings
from worker.pipeline import metrics
from worker.pipeline.front import ARRIVED, Front

SWITCH_INTERVAL_S = 0.001
# the request line and headers, in all: a notify needs well under 2 KiB
MAX_HEADER_BYTES = 16 * 1024
_TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
              b"content-length: 30\r\nconnection: close\r\n\r\nrequest not received in time\r\n")


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline for reading each whole request (then 408)."""

    request_timeout: float = 10.0  # set from Settings by IngressWorker

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._disarm_if_read()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this connection has its own deadline
            self._disarm_if_read()  # unless a pipelined one was read whole already

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _reading(self) -> bool:
        """True while a request is still to come or coming (nothing answered yet)."""
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    def _disarm_if_read(self) -> None:
        if not self._reading():
            self._disarm()
            if self.cycle is not None and ARRIVED not in self.cycle.scope:
                # the request is whole from now: the front counts its wait from here
                self.cycle.scope[ARRIVED] = time.monotonic()  # type: ignore[typeddict-unknown-key]

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or not self._reading():
            return
        if self.cycle is not None and self.cycle.response_started:
            return
        metrics.TIMED_OUT.inc()
        # written as bytes: h11 cannot frame a response to a request whose headers never came
        self.transport.write(_TIMED_OUT)
        self.transport.close()  # a coroutine waiting for the body sees a disconnect and stores nothing


class IngressWorker(UvicornWorker):
    """gunicorn worker class: uvicorn on asyncio with DeadlineProtocol, serving the WSGI app through Front."""

    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        "http": "worker.pipeline.server:DeadlineProtocol",
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "lifespan": "on",
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        DeadlineProtocol.request_timeout = settings().web_request_timeout_seconds

    def run(self) -> None:
        # the event loop shares the GIL with the app's threads: let it take the GIL back sooner
        # than the default 5 ms, so that reading, answering and shedding keep pace under load
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        super().run()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        s = settings()
        self.wsgi = Front(self.wsgi, threads=self.cfg.threads, max_body_bytes=s.max_body_bytes,
                          max_wait=s.web_max_wait_seconds)
