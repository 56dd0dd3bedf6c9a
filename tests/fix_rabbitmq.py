"""pytest plugin: RabbitMQ for the tests, the machine's or a node of the test's own.

- `rabbitmq_url`: the machine's RabbitMQ (TEST_RABBITMQ_URL, default amqp://guest:guest@127.0.0.1:5672/);
  each test uses its own queue (the `queue_name` fixture) and deletes it at the end with
  `delete_queues`.
- `rabbitmq_node`: a RabbitMQ node the test starts itself (`RabbitNode`), on free ports, with its
  data under tmp_path, that it can stop and start again while its clients run; the machine's
  node stays up.

Where RabbitMQ (or the `rabbitmq-server` program) is not installed the tests that need it are
skipped, naming what is missing; under CI=true they fail instead (as tests/fix_redis.py does).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker import processes
from worker.services import rabbitmq_answers

DEFAULT_TEST_RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# the Debian/Ubuntu package's server script (the one in /usr/sbin switches to the rabbitmq user)
SERVER_SCRIPTS = ("/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/local/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
LOWEST_PORT = 10_000


def stable_port() -> int:
    """A free TCP port below the kernel's ephemeral range, so that while the node is down no
    outgoing connection of this machine (its clients retrying, other tests' pools) is handed it
    as a local port and its restart finds the port taken."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for port in random.sample(range(LOWEST_PORT, max(low, LOWEST_PORT + 1000)), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {LOWEST_PORT} and {low}")


def _missing(reason: str) -> None:
    if CI:
        pytest.fail(f"{reason} (CI=true: RabbitMQ must be installed and running)")
    pytest.skip(reason)


def delete_queues(url: str, queue_name: str) -> None:
    """Delete a dramatiq queue and its delay and dead-letter queues (quietly, whatever is left)."""
    from worker.broker import delete_queue, new_broker
    from worker.errors import RetryableError

    broker = new_broker(url, [])
    try:
        with contextlib.suppress(RetryableError):
            delete_queue(broker, queue_name)
    finally:
        broker.close()


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """URL of the machine's RabbitMQ (skips, or fails under CI, when it does not answer)."""
    url = os.environ.get("TEST_RABBITMQ_URL") or DEFAULT_TEST_RABBITMQ_URL
    if not rabbitmq_answers(url):
        _missing(f"no RabbitMQ answers at {url} (set TEST_RABBITMQ_URL)")
    return url


def server_script() -> str | None:
    """The rabbitmq-server start script, or None when RabbitMQ is not installed."""
    for path in SERVER_SCRIPTS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("rabbitmq-server")


class RabbitNode:
    """A RabbitMQ node of the test's own: its name, AMQP port and distribution port unique, its
    database (durable queues, persistent messages) and logs under `folder`, kept across restarts."""

    def __init__(self, script: str, folder: Path) -> None:
        self.script = script
        self.folder = folder
        self.name = f"iotl_{uuid.uuid4().hex[:10]}@localhost"
        self.port = stable_port()  # the same port again at a restart
        self.dist_port = stable_port()  # the machine's node holds the default one, 25672
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "enabled_plugins").write_text("[].\n")

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.folder / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.folder / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.folder / "rabbitmq"),  # none: the defaults
            HOME=str(self.folder),  # its Erlang cookie
        )

    def start(self) -> None:
        """Start the node and return once it accepts AMQP connections. Raises RuntimeError naming
        its log when it exits or does not answer within START_TIMEOUT_S."""
        log = open(self.folder / "server.out", "ab")
        self.proc = subprocess.Popen([self.script], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited with {self.proc.returncode}; see {self.folder}/server.out")
            if rabbitmq_answers(self.url):
                return
            time.sleep(0.5)
        raise RuntimeError(f"rabbitmq-server did not answer within {START_TIMEOUT_S:.0f} s; see {self.folder}/server.out")

    def stop(self) -> None:
        """Stop the node as its service manager would (SIGTERM: a clean shutdown, durable queues
        and persistent messages kept) and wait for it; SIGKILL what is left after STOP_TIMEOUT_S."""
        proc, self.proc = self.proc, None
        if proc is not None:
            processes.stop(proc, signal.SIGTERM, STOP_TIMEOUT_S)

    def restart(self) -> None:
        """Stop the node and start it again on the same ports with the same data."""
        self.stop()
        self.start()


@pytest.fixture
def rabbitmq_node(tmp_path: Path) -> Iterator[RabbitNode]:
    """A running RabbitMQ node of this test's own (see RabbitNode), stopped at the end."""
    script = server_script()
    if script is None:
        _missing("rabbitmq-server is not installed")
    node = RabbitNode(script, tmp_path / "rabbitmq")
    try:
        node.start()
        yield node
    finally:
        node.stop()
