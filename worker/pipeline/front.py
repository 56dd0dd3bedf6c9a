"""The ASGI front of the ingress: whole requests in; the notify on the event loop, the rest on threads.

uvicorn (server.py) reads requests on an event loop; this front stands between it and the handlers:

1. The body is read on the event loop: a slow body costs a coroutine, never a thread (the
   connection's deadline in server.py ends it with 408). A client that leaves before its
   Content-Length is complete is dropped: nothing is handled, nothing is stored. A body declared
   or found larger than max_body_bytes is not read further (the handler answers 413) and the
   connection is closed after the answer.
2. POST /iotpay/notify goes to the notify handler on the event loop itself (notify_endpoint.py,
   which sheds load and stores with an async connection pool); its answer is sent, and then what
   the handler asked to run after it (the enqueue).
3. Every other request (GET /readyz, /metrics, a wrong method or path) goes to the WSGI app
   (ingress.py) on a few threads.

`GET /healthz` is answered on the event loop itself: it says the process is alive even when
the threads are busy.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import structlog

from worker.pipeline.exchange import NOTIFY_PATH, Answer, Request, plain

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
# threads for the WSGI app's routes (/readyz, /metrics): the notify does not use them
WSGI_THREADS = 2
# scope key: time.monotonic() when the server had the request's headers and body (set by server.py)
ARRIVED = "iotledger.arrived"

log = structlog.get_logger("worker.pipeline.front")


class NotifyHandler(Protocol):
    """What the front calls for POST /iotpay/notify (notify_endpoint.NotifyEndpoint)."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def __call__(self, request: Request) -> tuple[Answer, Callable[[], Awaitable[None]] | None]: ...


class Front:
    """The ASGI application gunicorn's uvicorn workers serve: the notify handler and the WSGI app."""

    def __init__(self, app: WSGIApp, *, notify: NotifyHandler | None = None, max_body_bytes: int,
                 threads: int = WSGI_THREADS) -> None:
        self.app = app
        self.notify = notify
        self.max_body_bytes = max_body_bytes
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="ingress")

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/healthz":
            await _send(send, plain(200, b"ok"))
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            body, whole = b"", False  # not read: the handler refuses it by its Content-Length (413)
        else:
            read = await self._read_body(receive)
            if read is None:
                return  # the client left before its request was complete: nothing to answer
            body, whole = read
        after = None
        if self.notify is not None and scope["method"] == "POST" and scope["path"] == NOTIFY_PATH:
            response, after = await self._notify(scope, body, declared)
        else:
            environ = _environ(scope, body, declared, self.max_body_bytes)
            response = await asyncio.wrap_future(self.executor.submit(self._call_app, environ))
        if not whole:
            response = (response[0], [*response[1], (b"connection", b"close")], response[2])
        await _send(send, response)
        if after is not None:  # after the answer; uvicorn's shutdown waits for this request's task
            await after()

    # ------------------------------------------------------------------ reading
    async def _read_body(self, receive: Callable[..., Any]) -> tuple[bytes, bool] | None:
        """The body and whether it was read whole, or None when the client disconnected first.

        Stops one byte past max_body_bytes (a chunked body's size is not declared)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self.max_body_bytes:
                return b"".join(chunks)[: self.max_body_bytes + 1], False
            if not message.get("more_body", False):
                return b"".join(chunks) if len(chunks) > 1 else chunk, True

    # ------------------------------------------------------------------ the notify, on the loop
    async def _notify(self, scope: dict[str, Any], body: bytes,
                      declared: int | None) -> tuple[Answer, Callable[[], Awaitable[None]] | None]:
        assert self.notify is not None
        client = scope.get("client")
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")  # the last one, as a WSGI server would
        request = Request(content_type=content_type,
                          remote_addr=(client[0] if client else "") or "unknown",
                          # the wait is counted from when the server had the whole request (server.py),
                          # so that time behind a busy event loop counts too
                          arrived=scope.get(ARRIVED) or time.monotonic(), body=body, declared_length=declared)
        try:
            return await self.notify(request)
        except Exception:  # a bug in the handler: say so in the log, answer 500 (never for a client's input)
            log.exception("ingress.app_failed", path=NOTIFY_PATH)
            return plain(500, b"internal error"), None

    # ------------------------------------------------------------------ the rest, on threads
    def _call_app(self, environ: dict[str, Any]) -> Answer:
        """On a thread: the app's answer, collected whole (its close() called once it is)."""
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            started[:] = [status, headers]
            return lambda data: None  # the legacy write() callable; our app never uses it

        result = None
        try:
            result = self.app(environ, start_response)
            body = b"".join(result)
        except Exception:  # a bug in the app: say so in the log, answer 500 (never for a client's input)
            log.exception("ingress.app_failed", path=environ.get("PATH_INFO"))
            return plain(500, b"internal error")
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        status, headers = started
        return (int(status.split(" ", 1)[0]),
                [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers], body)

    # ------------------------------------------------------------------ plumbing
    async def _lifespan(self, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.notify is not None:
                    await self.notify.open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # uvicorn waited for the requests already: send what waits, close the pools
                if self.notify is not None:
                    await self.notify.close()
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.executor.shutdown)
                close = getattr(self.app, "close", None)
                if close is not None:
                    await loop.run_in_executor(None, close)
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send(send: Callable[..., Any], response: Answer) -> None:
    status, headers, body = response
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # h11 refuses such a request before it gets here
    return None


def _environ(scope: dict[str, Any], body: bytes, declared: int | None, max_body_bytes: int) -> dict[str, Any]:
    """The WSGI environ of an ASGI request whose body has been read (PEP 3333)."""
    server = scope.get("server") or ("localhost", 80)
    client = scope.get("client")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1] or 80),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": client[0] if client else "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value.decode("latin-1")
            continue
        key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    # the app reads exactly what was buffered: the declared length when it was too large to read,
    # the read length otherwise (a chunked body has none; one past the limit tells it is too large)
    if declared is not None and declared > max_body_bytes:
        environ["CONTENT_LENGTH"] = str(declared)
    elif len(body) > max_body_bytes:
        environ.pop("CONTENT_LENGTH", None)
    else:
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ
