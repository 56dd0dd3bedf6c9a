"""Serve the simulator under gunicorn: one worker process (the order book lives in memory),
several threads. The app is built inside the worker, so its notify thread runs there."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication


class SimulatorServer(BaseApplication):  # type: ignore[misc]
    """gunicorn application wrapping a factory that builds the Simulator in the worker."""

    def __init__(self, factory: Callable[[], Any], *, host: str, port: int, threads: int = 8) -> None:
        self.factory = factory
        self.options = {"bind": f"{host}:{port}", "workers": 1, "worker_class": "gthread", "threads": threads,
                        "accesslog": None, "keepalive": 30, "timeout": 60}
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.factory()


def serve(factory: Callable[[], Any], *, host: str, port: int, threads: int = 8) -> None:
    """Run until interrupted. Raises SystemExit from gunicorn on a bind failure."""
    SimulatorServer(factory, host=host, port=port, threads=threads).run()
