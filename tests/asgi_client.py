"""The ingress's ASGI app in process: served on an event loop of its own, driven by a plain httpx.Client.

`ServedApp(app)` runs the app's lifespan startup (the notify endpoint opens its async pool) on
a uvloop event loop in a thread, as a uvicorn worker would; `client()` is an httpx.Client whose
requests go to the app through httpx.ASGITransport on that loop, the body in the chunks the
client sent (a generator body arrives chunked, with no Content-Length); `close()` runs the
lifespan shutdown (the enqueuer drains, the pools close). A request returns once the app has
finished with it, after-the-answer work included, so a test can look at the inbox and the
queue at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvloop

TIMEOUT_S = 30.0


class ServedApp:
    """An ASGI app started through its lifespan on an event loop in a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="asgi-test-loop", daemon=True)
        self._thread.start()
        self._lifespan: asyncio.Queue[dict[str, Any]] | None = None
        self._events: asyncio.Queue[dict[str, Any]] | None = None
        self._task: asyncio.Future[None] | None = None
        self.run(self._start())

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine on the app's loop; its result (or exception)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT_S)

    def client(self, remote_addr: str = "198.51.100.7") -> httpx.Client:
        """A client whose requests come from remote_addr."""
        return httpx.Client(transport=_LoopTransport(self, remote_addr), base_url="http://ingress")

    def close(self) -> None:
        """Lifespan shutdown, then the loop stops."""
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(TIMEOUT_S)
            self.loop.close()

    async def _start(self) -> None:
        self._lifespan, self._events = asyncio.Queue(), asyncio.Queue()
        self._task = asyncio.ensure_future(self.app({"type": "lifespan", "asgi": {"version": "3.0"}},
                                                    self._lifespan.get, self._events.put))
        await self._lifespan.put({"type": "lifespan.startup"})
        assert (await self._events.get())["type"] == "lifespan.startup.complete"

    async def _stop(self) -> None:
        assert self._lifespan is not None and self._events is not None and self._task is not None
        await self._lifespan.put({"type": "lifespan.shutdown"})
        assert (await self._events.get())["type"] == "lifespan.shutdown.complete"
        await self._task


class _LoopTransport(httpx.BaseTransport):
    """A sync transport handing each request to httpx.ASGITransport on the app's loop."""

    def __init__(self, served: ServedApp, remote_addr: str) -> None:
        self.served = served
        self.asgi = httpx.ASGITransport(app=served.app, client=(remote_addr, 49152))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        chunks = list(request.stream)  # type: ignore[arg-type]

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        async def exchange() -> tuple[int, httpx.Headers, bytes]:
            forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=body())
            response = await self.asgi.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        status, headers, content = self.served.run(exchange())
        return httpx.Response(status, headers=headers, content=content, request=request)
