"""The ASGI front of the ingress: whole requests in, the WSGI app on a few threads, load shed early.

uvicorn (server.py) reads requests on an event loop; this front stands between it and the WSGI
app (ingress.Ingress), so that the app's threads only ever see whole requests:

1. The body is read on the event loop: a slow body costs a coroutine, never a thread (the
   connection's deadline in server.py ends it with 408). A client that leaves before its
   Content-Length is complete is dropped: nothing reaches the app, nothing is stored. A body
   declared or found larger than max_body_bytes is not read further; the app answers 413.
2. Load is shed early: a notify that would wait longer than max_wait for a thread (the queue
   ahead of it times the recent service time) is answered 503 with Retry-After at once, and one
   that did wait longer is answered 503 without being processed, so the server never works
   through requests whose clients have given up. IOTPay sends the notify again later.
3. The app runs on a thread with the buffered body; its answer is sent, and only then is its
   response closed (on a thread: the ingress enqueues the inbox id there, after the answer).
   At shutdown the app's close() runs once the threads are done (the enqueuer sends what waits).

`GET /healthz` is answered on the event loop itself: it says the process is alive even when
every thread is busy.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import structlog

from worker.pipeline import metrics

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Response = tuple[int, list[tuple[bytes, bytes]], bytes]
# what a shed request is told; IOTPay retries on its own schedule anyway
RETRY_AFTER_S = 5
# first guess of a request's time on a thread, until requests have been measured
INITIAL_SERVICE_S = 0.01
# how often the event loop checks how late it runs (a loop behind by seconds must shed too)
LAG_PROBE_S = 0.1
# scope key: time.monotonic() when the server had the request's headers (set by server.py)
ARRIVED = "iotledger.arrived"

log = structlog.get_logger("worker.pipeline.front")


def _plain(status: int, text: bytes, *extra: tuple[bytes, bytes]) -> Response:
    return status, [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode()),
                    *extra], text


def _overloaded() -> Response:
    metrics.SHED.inc()
    return _plain(503, b"overloaded, try again", (b"retry-after", str(RETRY_AFTER_S).encode()))


class Admission:
    """Work queued for the threads: the wait a newcomer would face, from the queue as it stands.

    The oldest queued task's age is the wait the queue imposes now; the tasks between it and a
    newcomer add their share of the threads' recent service time. Thread-safe.
    """

    def __init__(self, threads: int, max_wait: float) -> None:
        self.threads = threads
        self.max_wait = max_wait
        self.service_s = INITIAL_SERVICE_S  # moving average of a task's time on a thread
        self.loop_lag_s = 0.0  # how late the event loop ran its last probe (front.watch_loop)
        self._queued: deque[float] = deque()  # when each waiting task was queued, oldest first
        self._lock = threading.Lock()

    def expected_wait(self, now: float) -> float:
        """Seconds a task queued now would wait for a thread (and, when late, for the event loop)."""
        with self._lock:
            if len(self._queued) < self.threads:
                return self.loop_lag_s
            return self.loop_lag_s + now - self._queued[0] + len(self._queued) / self.threads * self.service_s

    def would_wait_too_long(self) -> bool:
        return self.expected_wait(time.monotonic()) > self.max_wait

    def queue(self, now: float) -> None:
        with self._lock:
            self._queued.append(now)

    def start(self) -> None:
        with self._lock:
            self._queued.popleft()  # the executor runs tasks in the order they were queued

    def done(self, seconds: float) -> None:
        with self._lock:
            self.service_s += (seconds - self.service_s) / 20


class Front:
    """The ASGI application gunicorn's uvicorn workers serve, around the WSGI app."""

    def __init__(self, app: WSGIApp, *, threads: int, max_body_bytes: int, max_wait: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.admission = Admission(threads, max_wait)
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="ingress")

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/healthz":
            await self._send(send, _plain(200, b"ok"))
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            body, whole = b"", False  # not read: the app refuses it by its Content-Length (413)
        else:
            read = await self._read_body(receive)
            if read is None:
                return  # the client left before its request was complete: nothing to answer
            body, whole = read
        shed = scope["method"] == "POST"
        if shed and self.admission.would_wait_too_long():
            response = _overloaded()
            closer = None
        else:
            environ = _environ(scope, body, declared, self.max_body_bytes)
            # the wait is counted from when the server had the whole request (server.py), so that
            # time behind a busy event loop counts too
            arrived = scope.get(ARRIVED, time.monotonic())
            response, closer = await self._run(self._call_app, environ, arrived, shed)
        if not whole:
            response = (response[0], [*response[1], (b"connection", b"close")], response[2])
        await self._send(send, response)
        if closer is not None:  # after the answer; shutdown waits for it (executor.shutdown)
            self._submit(closer)

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
                return b"".join(chunks), True

    # ------------------------------------------------------------------ threads
    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self._submit(fn, *args))

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        self.admission.queue(time.monotonic())
        return self.executor.submit(self._timed, fn, args)

    async def _watch_loop(self) -> None:
        """Measure how late the event loop runs: requests behind a late loop wait too."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            self.admission.loop_lag_s = max(0.0, time.monotonic() - started - LAG_PROBE_S)

    def _timed(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        self.admission.start()
        started = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.admission.done(time.monotonic() - started)

    def _call_app(self, environ: dict[str, Any], arrived: float, shed: bool) -> tuple[Response, Callable[[], None] | None]:
        """On a thread: the app's answer (collected whole) and its close(), or 503 if it waited too long."""
        if shed and time.monotonic() - arrived > self.admission.max_wait:
            return _overloaded(), None
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
            close = getattr(result, "close", None)
            if close is not None:
                close()
            return _plain(500, b"internal error"), None
        status, headers = started
        response = (int(status.split(" ", 1)[0]),
                    [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers], body)
        return response, getattr(result, "close", None)

    # ------------------------------------------------------------------ plumbing
    @staticmethod
    async def _send(send: Callable[..., Any], response: Response) -> None:
        status, headers, body = response
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        watcher: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                watcher = asyncio.get_running_loop().create_task(self._watch_loop())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if watcher is not None:
                    watcher.cancel()
                # the threads finish what they hold (uvicorn waited for the requests already),
                # then the app sends what it still holds: the process may end by the signal right
                # after this, before any atexit hook would run
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, self.executor.shutdown)
                close = getattr(self.app, "close", None)
                if close is not None:
                    await loop.run_in_executor(None, close)
                await send({"type": "lifespan.shutdown.complete"})
                return


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
