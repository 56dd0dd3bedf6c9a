"""pytest plugin: a TCP proxy in front of this test's PostgreSQL database, that the test can cut.

The `proxy` fixture (after psycopg's tests/fix_proxy.py) gives a `Proxy` to `db_url`: hand
`proxy.url` to the code under test, then `proxy.down()` drops every connection and refuses new
ones, as a PostgreSQL restart looks to its clients, and `proxy.up()` lets them through again.
The proxy is closed at the end of the test.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from psycopg.conninfo import conninfo_to_dict


@pytest.fixture
def proxy(db_url: str) -> Iterator[Proxy]:
    """A proxy to this test's database, open (connections pass) until the test calls down()."""
    p = Proxy(db_url)
    try:
        yield p
    finally:
        p.close()


class Proxy:
    """Forwards 127.0.0.1:<port> to a PostgreSQL server, in threads, until cut.

    The server may listen on a unix-socket folder (host starting with '/'), as the embedded
    PostgreSQL does.
    """

    def __init__(self, database_url: str) -> None:
        params = conninfo_to_dict(database_url)
        self.target = (params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        auth = quote(params.get("user", "postgres")) + (":" + quote(params["password"]) if params.get("password") else "")
        self.url = f"postgresql://{auth}@127.0.0.1:{self.port}/{quote(params['dbname'])}"
        self._open = threading.Event()
        self._open.set()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def down(self) -> None:
        """Drop every open connection and refuse new ones."""
        self._open.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()

    def up(self) -> None:
        """Let connections through again."""
        self._open.set()

    def close(self) -> None:
        """Drop everything and stop listening."""
        self.down()
        self._listener.close()

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
