"""Helpers of the pipeline tests and benchmarks beside the processes they start (those are
worker/processes.py, shared with the demo): a notify body as IOTPay encodes it, and a TCP proxy
the test can cut.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any
from urllib.parse import urlencode


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
