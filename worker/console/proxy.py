"""The client's address behind a trusted proxy.

The throttle counts failed sign-ins per source address, so behind a proxy it must see the
client's address, not the proxy's. X-Forwarded-For is believed only from the addresses in
FORWARDED_ALLOW_IPS (the variable gunicorn reads for the scheme: default 127.0.0.1,::1; `*`
believes anyone, never to be set when clients can reach the console directly), and only its last
hop, the one the proxy set. gunicorn itself honours X-Forwarded-Proto from the same addresses, so
`request.is_secure` (the session cookie's Secure flag) is true behind a proxy saying https.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Iterable
from typing import Any

DEFAULT_TRUSTED = "127.0.0.1,::1"


def trusted_from_env(env: dict[str, str] | None = None) -> list[str]:
    """FORWARDED_ALLOW_IPS as a list of addresses or networks (or ['*'])."""
    raw = (env if env is not None else os.environ).get("FORWARDED_ALLOW_IPS", DEFAULT_TRUSTED)
    return [part.strip() for part in raw.split(",") if part.strip()]


class TrustedProxy:
    """WSGI middleware: REMOTE_ADDR becomes X-Forwarded-For's last hop when the peer is trusted."""

    def __init__(self, app: Callable[..., Any], trusted: Iterable[str]) -> None:
        self.app = app
        self.any = False
        self.networks = []
        for item in trusted:
            if item == "*":
                self.any = True
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                continue  # gunicorn refuses a bad entry at start; here it simply trusts nothing for it

    def trusts(self, addr: str | None) -> bool:
        """True when a peer at this address may tell the client's address."""
        if self.any:
            return True
        try:
            ip = ipaddress.ip_address(addr or "")
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        forwarded = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded and self.trusts(environ.get("REMOTE_ADDR")):
            last = forwarded.split(",")[-1].strip()
            try:
                environ["REMOTE_ADDR"] = str(ipaddress.ip_address(last))
            except ValueError:
                pass
        return self.app(environ, start_response)
