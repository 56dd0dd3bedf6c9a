"""The ASGI front alone (worker/pipeline/front.py), driven with plain ASGI messages: what reaches
the notify handler on the event loop and the WSGI app on its threads, and in what order."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import structlog

from worker.pipeline.exchange import Request, plain
from worker.pipeline.front import Front


class App:
    """A WSGI app that records what it was given; `delay` seconds per request."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.seen: list[dict[str, Any]] = []
        self.closed: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        length = environ.get("CONTENT_LENGTH")
        body = environ["wsgi.input"].read(int(length)) if length else environ["wsgi.input"].read()
        with self.lock:
            self.seen.append(dict(environ, body=body))
        time.sleep(self.delay)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "7")])
        app = self

        class Result(list):
            def close(self) -> None:
                app.closed.append(time.monotonic())

        return Result([b"SUCCESS"])


def scope(method: str = "POST", path: str = "/iotpay/notify", length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json"), (b"x-thing", b"a"), (b"x-thing", b"b")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": method, "path": path, "query_string": b"q=1", "headers": headers,
            "client": ("203.0.113.5", 5555), "server": ("127.0.0.1", 8000), "scheme": "http", "http_version": "1.1"}


async def call(front: Front, sc: dict[str, Any], messages: list[dict[str, Any]],
               sent: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    sent = [] if sent is None else sent
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await front(sc, receive, send)
    return sent


def status(sent: list[dict[str, Any]]) -> int:
    return sent[0]["status"]


def test_the_app_gets_the_whole_body_in_one_piece_and_its_close_runs():
    app = App()
    front = Front(app, threads=2, max_body_bytes=100)
    sent = asyncio.run(call(front, scope(length=6), [{"type": "http.request", "body": b"abc", "more_body": True},
                                                     {"type": "http.request", "body": b"def"}]))
    front.executor.shutdown(wait=True)
    assert status(sent) == 200 and sent[1]["body"] == b"SUCCESS"
    [env] = app.seen
    assert env["body"] == b"abcdef" and env["CONTENT_LENGTH"] == "6" and env["REMOTE_ADDR"] == "203.0.113.5"
    assert env["HTTP_X_THING"] == "a,b" and env["QUERY_STRING"] == "q=1" and env["CONTENT_TYPE"] == "application/json"
    assert len(app.closed) == 1


def test_a_client_that_leaves_before_its_body_is_complete_reaches_nothing():
    app = App()
    front = Front(app, threads=2, max_body_bytes=100)
    sent = asyncio.run(call(front, scope(length=50), [{"type": "http.request", "body": b"abc", "more_body": True},
                                                      {"type": "http.disconnect"}]))
    assert sent == [] and app.seen == []


def test_a_body_over_the_limit_is_not_read_and_the_connection_is_closed():
    app = App()
    front = Front(app, threads=2, max_body_bytes=10)
    sent = asyncio.run(call(front, scope(), [{"type": "http.request", "body": b"x" * 8, "more_body": True},
                                             {"type": "http.request", "body": b"x" * 8, "more_body": True}]))
    [env] = app.seen
    assert env["body"] == b"x" * 11 and "CONTENT_LENGTH" not in env  # one past the limit: the app says 413
    assert (b"connection", b"close") in sent[0]["headers"]


def test_healthz_is_answered_on_the_event_loop_even_with_every_thread_busy():
    app = App(delay=0.5)
    front = Front(app, threads=1, max_body_bytes=100)

    async def both() -> tuple[list, list]:
        busy = asyncio.create_task(call(front, scope(length=2), [{"type": "http.request", "body": b"{}"}]))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        health = await call(front, scope("GET", "/healthz"), [])
        assert time.monotonic() - started < 0.2
        return await busy, health

    busy, health = asyncio.run(both())
    assert status(busy) == 200 and status(health) == 200 and health[1]["body"] == b"ok"


class Handler:
    """A notify handler that records what it was given and when its after-the-answer work ran."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.seen: list[tuple[Request, str]] = []
        self.after_ran: list[int] = []  # how many messages had been sent when it ran
        self.sent: list[dict[str, Any]] = []
        self.opened = self.closed = 0

    async def open(self) -> None:
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1

    async def __call__(self, request: Request) -> Any:
        self.seen.append((request, threading.current_thread().name))
        if self.fail:
            raise RuntimeError("a bug")

        async def after() -> None:
            self.after_ran.append(len(self.sent))

        return plain(200, b"SUCCESS"), after


def test_a_notify_goes_to_the_handler_on_the_event_loop_and_its_after_work_runs_once_answered():
    app, handler = App(), Handler()
    front = Front(app, notify=handler, max_body_bytes=100)
    sent = asyncio.run(call(front, scope(length=6), [{"type": "http.request", "body": b"abc", "more_body": True},
                                                     {"type": "http.request", "body": b"def"}], handler.sent))
    assert app.seen == []  # not the threads
    [(request, thread)] = handler.seen
    assert thread == threading.main_thread().name  # the event loop's own thread
    assert request.body == b"abcdef" and request.declared_length == 6
    assert request.content_type == "application/json" and request.remote_addr == "203.0.113.5"
    assert status(sent) == 200 and sent[1]["body"] == b"SUCCESS"
    assert handler.after_ran == [2]  # after both messages of the answer were sent


def test_a_notify_declared_over_the_limit_is_not_read_and_the_connection_is_closed_after_the_answer():
    handler = Handler()
    front = Front(App(), notify=handler, max_body_bytes=10)
    sent = asyncio.run(call(front, scope(length=5000), []))  # nothing to receive: it must not wait for the body
    [(request, _)] = handler.seen
    assert request.body == b"" and request.declared_length == 5000
    assert (b"connection", b"close") in sent[0]["headers"]


def test_a_handler_that_raises_is_answered_500_and_logged_never_a_traceback_to_the_client():
    front = Front(App(), notify=Handler(fail=True), max_body_bytes=100)
    with structlog.testing.capture_logs() as logs:
        sent = asyncio.run(call(front, scope(length=2), [{"type": "http.request", "body": b"{}"}]))
    assert status(sent) == 500 and sent[1]["body"] == b"internal error"
    assert [e["event"] for e in logs] == ["ingress.app_failed"]


def test_the_lifespan_opens_and_closes_the_handler_and_stops_the_threads():
    handler = Handler()
    front = Front(App(), notify=handler, max_body_bytes=100)

    async def lifespan() -> list[str]:
        events: list[str] = []
        incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

        async def receive() -> dict[str, Any]:
            return next(incoming)

        async def send(message: dict[str, Any]) -> None:
            events.append(message["type"])

        await front({"type": "lifespan"}, receive, send)
        return events

    assert asyncio.run(lifespan()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert (handler.opened, handler.closed) == (1, 1)
    assert front.executor._shutdown
