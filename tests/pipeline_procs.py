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
import threading
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


class TcpProxy:
    """A TCP proxy the test can cut: `down()` drops every connection and refuses new ones,
    as a PostgreSQL restart would look to its clients; `up()` lets them through again.
    The target may be a unix-socket folder (host starting with '/'), as the embedded server's is."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                server = self._connect_target()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _connect_target(self) -> socket.socket:
        host, port = self.target
        if host.startswith("/"):  # a unix-socket folder (the embedded PostgreSQL listens only there)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(f"{host}/.s.PGSQL.{port}")
            return sock
        return socket.create_connection(self.target)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def down(self) -> None:
        self._open.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()

    def up(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.down()
        self._listener.close()

    def url(self, database_url: str) -> str:
        """database_url with host and port pointing at the proxy."""
        from urllib.parse import quote

        from psycopg.conninfo import conninfo_to_dict

        p = conninfo_to_dict(database_url)
        auth = quote(p.get("user", "postgres")) + (":" + quote(p["password"]) if p.get("password") else "")
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(p['dbname'])}"
