"""The ASGI front alone (worker/pipeline/front.py), driven with plain ASGI messages: what reaches
the WSGI app, and when it is shed."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

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


async def call(front: Front, sc: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
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


def test_the_app_gets_the_whole_body_in_one_piece_and_its_close_runs_after_the_answer():
    app = App()
    front = Front(app, threads=2, max_body_bytes=100, max_wait=1.0)
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
    front = Front(app, threads=2, max_body_bytes=100, max_wait=1.0)
    sent = asyncio.run(call(front, scope(length=50), [{"type": "http.request", "body": b"abc", "more_body": True},
                                                      {"type": "http.disconnect"}]))
    assert sent == [] and app.seen == []


def test_a_body_over_the_limit_is_not_read_and_the_connection_is_closed():
    app = App()
    front = Front(app, threads=2, max_body_bytes=10, max_wait=1.0)
    sent = asyncio.run(call(front, scope(), [{"type": "http.request", "body": b"x" * 8, "more_body": True},
                                             {"type": "http.request", "body": b"x" * 8, "more_body": True}]))
    [env] = app.seen
    assert env["body"] == b"x" * 11 and "CONTENT_LENGTH" not in env  # one past the limit: the app says 413
    assert (b"connection", b"close") in sent[0]["headers"]


def test_healthz_is_answered_on_the_event_loop_even_with_every_thread_busy():
    app = App(delay=0.5)
    front = Front(app, threads=1, max_body_bytes=100, max_wait=5.0)

    async def both() -> tuple[list, list]:
        busy = asyncio.create_task(call(front, scope(length=2), [{"type": "http.request", "body": b"{}"}]))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        health = await call(front, scope("GET", "/healthz"), [])
        assert time.monotonic() - started < 0.2
        return await busy, health

    busy, health = asyncio.run(both())
    assert status(busy) == 200 and status(health) == 200 and health[1]["body"] == b"ok"


def test_past_capacity_notifies_are_shed_with_503_and_those_answered_waited_at_most_max_wait():
    app = App(delay=0.1)
    front = Front(app, threads=2, max_body_bytes=100, max_wait=0.3)

    async def burst() -> list[tuple[list, float]]:
        async def one() -> tuple[list, float]:
            started = time.monotonic()
            sent = await call(front, scope(length=2), [{"type": "http.request", "body": b"{}"}])
            return sent, time.monotonic() - started

        return await asyncio.gather(*(one() for _ in range(40)))

    results = asyncio.run(burst())
    front.executor.shutdown(wait=True)
    answered = [t for sent, t in results if status(sent) == 200]
    shed = [sent for sent, _ in results if status(sent) == 503]
    assert shed and answered
    assert all((b"retry-after", b"5") in sent[0]["headers"] for sent in shed)
    assert len(app.seen) == len(answered) < 40  # a shed notify never reached the app
    assert max(answered) < 0.3 + 0.1 + 0.2  # its wait, its own service time, and some slack
