"""Real processes for the pipeline tests and benchmarks: `iotledger web` (gunicorn) and
`iotledger worker` (dramatiq), started as a user would, each in its own process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

BIN = Path(sys.executable).parent / "iotledger"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(database_url: str, redis_url: str, queue: str, merchants: dict[str, Any] | str, data_dir: Path,
                **extra: str) -> dict[str, str]:
    """The environment of a web or worker process for one test."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("IOTPAY_MERCHANTS_FILE", "PORT", "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        IOTPAY_MERCHANTS=merchants if isinstance(merchants, str) else json.dumps(merchants),
        IOTLEDGER_QUEUE=queue,
        IOTLEDGER_DATA_DIR=str(data_dir),
        dramatiq_prom_port=str(free_port()),
        dramatiq_prom_host="127.0.0.1",
    )
    env.update(extra)
    return env


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll check() until true; raise AssertionError naming what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _log_file(data_dir: Path, name: str):
    data_dir.mkdir(parents=True, exist_ok=True)
    return open(data_dir / f"{name}.log", "ab")


def start_web(env: dict[str, str], *, workers: int = 2, port: int | None = None, app: str | None = None,
              timeout: float = 30) -> tuple[subprocess.Popen, str]:
    """Start `iotledger web` on a free port; return the process and its base URL once /healthz answers.

    app replaces the WSGI app (the benchmark's bare-200 ceiling runs the same gunicorn config).
    """
    port = port or free_port()
    data_dir = Path(env["IOTLEDGER_DATA_DIR"])
    if app is None:
        cmd = [str(BIN), "web", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    else:
        cmd = [sys.executable, "-m", "gunicorn", "-c", "python:worker.pipeline.gunicorn_conf",
               "-b", f"127.0.0.1:{port}", "-w", str(workers), app]
    proc = subprocess.Popen(cmd, env=env, stdout=_log_file(data_dir, "web"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"web exited with {proc.returncode}; see {data_dir / 'web.log'}")
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout, "the web to answer /healthz")
    return proc, url


def start_worker(env: dict[str, str], *, processes: int = 1, threads: int = 4) -> subprocess.Popen:
    """Start `iotledger worker` (dramatiq) in its own process group."""
    data_dir = Path(env["IOTLEDGER_DATA_DIR"])
    return subprocess.Popen([str(BIN), "worker", "--processes", str(processes), "--threads", str(threads)],
                            env=env, stdout=_log_file(data_dir, "worker"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def children(pid: int) -> list[int]:
    """Direct child pids of a process (Linux /proc)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(p) for p in fh.read().split()]
    return out


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal the process group of proc, wait, and SIGKILL what is left."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (forked helpers)


@contextlib.contextmanager
def running(*procs: subprocess.Popen) -> Iterator[None]:
    """Stop every process at the end, whatever happens."""
    try:
        yield
    finally:
        for p in procs:
            stop(p)


def encode(params: dict[str, Any], form: bool) -> tuple[bytes, str]:
    """A notify body as IOTPay sends it: JSON (V3) or form fields (v1)."""
    if form:
        return urlencode(params).encode(), "application/x-www-form-urlencoded"
    return json.dumps(params, ensure_ascii=False).encode(), "application/json;charset=UTF-8"

