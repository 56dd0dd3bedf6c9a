"""Real processes, started as a user would: `iotledger web` (gunicorn), `iotledger worker`
(dramatiq), `iotledger simulate`. Each runs in its own process group and writes its output to
`<data dir>/<name>.log`; stopping one signals its whole group. The demo and the tests use these.
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from worker.errors import IotLedgerError

BIN = Path(sys.executable).parent / "iotledger"
# what a started process must not inherit: another merchants file, a port, a metrics folder of ours
NOT_INHERITED = ("IOTPAY_MERCHANTS_FILE", "PORT", "PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


class ProcessError(IotLedgerError):
    """A started process exited, or did not get ready in time (the message says which and where its log is)."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(database_url: str, broker_url: str, queue: str, merchants: dict[str, Any] | str, data_dir: Path,
                **extra: str) -> dict[str, str]:
    """The environment of a web, worker or simulator process: this one's, pointed at these services
    (broker_url: a Redis or a RabbitMQ, see worker/broker.py)."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(
        DATABASE_URL=database_url,
        BROKER_URL=broker_url,
        IOTPAY_MERCHANTS=merchants if isinstance(merchants, str) else json.dumps(merchants),
        IOTLEDGER_QUEUE=queue,
        IOTLEDGER_DATA_DIR=str(data_dir),
        dramatiq_prom_port=str(free_port()),
        dramatiq_prom_host="127.0.0.1",
    )
    env.update(extra)
    return env


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll check() until it is true. Raises ProcessError naming what did not happen in time
    (and whatever check() raises, such as ProcessError for a process that exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise ProcessError(f"timed out after {timeout:.0f} s waiting for {what}")


def answers(url: str) -> bool:
    """True when a GET of url answers HTTP 200 within a second."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def web_command(port: int, workers: int, app: str | None = None) -> list[str]:
    """`iotledger web` on 127.0.0.1:port; with `app`, gunicorn with the same config serving that WSGI app."""
    if app is None:
        return [str(BIN), "web", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return [sys.executable, "-m", "gunicorn", "-c", "python:worker.pipeline.gunicorn_conf",
            "-b", f"127.0.0.1:{port}", "-w", str(workers), app]


def worker_command(processes: int, threads: int) -> list[str]:
    """`iotledger worker` (dramatiq)."""
    return [str(BIN), "worker", "--processes", str(processes), "--threads", str(threads)]


def simulator_command(port: int, *options: str) -> list[str]:
    """`iotledger simulate` on 127.0.0.1:port, with more of its options (--seed, --threads ...)."""
    return [str(BIN), "simulate", "--host", "127.0.0.1", "--port", str(port), *options]


def spawn(name: str, command: Sequence[str], env: dict[str, str], log_dir: Path) -> subprocess.Popen:
    """Start command in its own process group, its output appended to <log_dir>/<name>.log."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:
        return subprocess.Popen(list(command), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def ensure_running(proc: subprocess.Popen, name: str, log_dir: Path) -> None:
    """Raises ProcessError when proc has exited."""
    if proc.poll() is not None:
        raise ProcessError(f"{name} exited with code {proc.returncode}; see {log_dir / (name + '.log')}")


def start_web(env: dict[str, str], *, workers: int = 2, port: int | None = None, app: str | None = None,
              timeout: float = 30) -> tuple[subprocess.Popen, str]:
    """Start `iotledger web` on a free port; return the process and its base URL once /healthz answers.

    app replaces the WSGI app (the benchmark's bare-200 ceiling runs the same gunicorn config).
    Raises ProcessError when it exits or does not answer in time.
    """
    port = port or free_port()
    return _serve("web", web_command(port, workers, app), env, port, timeout)


def start_simulator(env: dict[str, str], *options: str, port: int | None = None,
                    timeout: float = 30) -> tuple[subprocess.Popen, str]:
    """Start `iotledger simulate` on a free port; return the process and its base URL once /healthz answers.

    Raises ProcessError when it exits or does not answer in time.
    """
    port = port or free_port()
    return _serve("simulator", simulator_command(port, *options), env, port, timeout)


def _serve(name: str, command: list[str], env: dict[str, str], port: int,
           timeout: float) -> tuple[subprocess.Popen, str]:
    data_dir = Path(env["IOTLEDGER_DATA_DIR"])
    proc = spawn(name, command, env, data_dir)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        ensure_running(proc, name, data_dir)
        return answers(url + "/healthz")

    wait_until(up, timeout, f"the {name} to answer /healthz")
    return proc, url


def start_worker(env: dict[str, str], *, processes: int = 1, threads: int = 4) -> subprocess.Popen:
    """Start `iotledger worker` (dramatiq) in its own process group."""
    return spawn("worker", worker_command(processes, threads), env, Path(env["IOTLEDGER_DATA_DIR"]))


def children(pid: int) -> list[int]:
    """Direct child pids of a process (Linux /proc)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(p) for p in fh.read().split()]
    return out


def stop_all(procs: Sequence[subprocess.Popen], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal the process group of each, then wait for each; SIGKILL what is left (stragglers of a group too)."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (forked helpers)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal the process group of proc, wait, and SIGKILL what is left."""
    stop_all([proc], sig, timeout)


@contextlib.contextmanager
def running(*procs: subprocess.Popen) -> Iterator[None]:
    """Stop every process at the end, whatever happens."""
    try:
        yield
    finally:
        for p in procs:
            stop(p)


class ProcessGroup:
    """Named processes started together, logging to one folder, checked together and stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
        """Spawn one more process (see spawn)."""
        proc = spawn(name, command, env, self.log_dir)
        self.procs.append((name, proc))
        return proc

    def check(self) -> None:
        """Raises ProcessError naming the first process that has exited."""
        for name, proc in self.procs:
            ensure_running(proc, name, self.log_dir)

    def wait_for(self, url: str, timeout: float, what: str) -> None:
        """Wait until url answers 200 while every process runs. Raises ProcessError."""
        def up() -> bool:
            self.check()
            return answers(url)

        wait_until(up, timeout, what, interval=0.2)

    def stop(self, timeout: float = 20) -> None:
        """Stop every process, the last started first."""
        stop_all([proc for _, proc in reversed(self.procs)], timeout=timeout)
