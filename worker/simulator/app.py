"""The IOTPay simulator as a WSGI application (see worker/simulator/__init__.py for the protocol).

`Simulator(merchants)` is a plain WSGI callable: serve it with gunicorn (`iotledger simulate`),
or call it in-process through `httpx.WSGITransport(app=sim)`. Gateway endpoints answer like
IOTPay (`gateway.py`); `/_sim/...` endpoints let tests and demos drive it (`control.py`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx

from worker.config import DEFAULT_GATEWAY_TZ
from worker.iotpay import signature
from worker.merchants import Merchant, Merchants
from worker.simulator import control, wire
from worker.simulator.clock import SimClock
from worker.simulator.control import Reply
from worker.simulator.gateway import GatewayEndpoints
from worker.simulator.notifier import NotifyPolicy, NotifySender
from worker.simulator.store import OrderStore, SimOrder

MAX_BODY = 1024 * 1024
StartResponse = Callable[..., Any]


class Simulator:
    """A faithful, drivable IOTPay: V3 cc_query/cc_refund/cc_void, v1 query_order/refund_order,
    signed notifies, and a control API under /_sim/."""

    def __init__(self, merchants: Merchants | None = None, *, seed: int = 0, policy: NotifyPolicy | None = None,
                 gateway_tz: ZoneInfo = ZoneInfo(DEFAULT_GATEWAY_TZ), clock: SimClock | None = None,
                 notify_transport: httpx.BaseTransport | None = None) -> None:
        self.merchants: dict[str, Merchant] = dict((merchants or Merchants()).by_id)
        self.gateway_tz = gateway_tz
        self.clock = clock or SimClock()
        self.seed = seed
        self.sender = NotifySender(policy or NotifyPolicy(seed=seed), transport=notify_transport)
        self.store = OrderStore(self.clock.now, seed=seed, on_final=self.notify)
        self.gateway = GatewayEndpoints(self.merchants, self.store, gateway_tz)
        self._lock = threading.Lock()

    @property
    def requests(self) -> dict[str, int]:
        """Gateway requests per endpoint so far."""
        return self.gateway.requests

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        try:
            body = _read_body(environ)
            if path.startswith("/_sim/"):
                status, payload = 200, control.handle(self, method, path[len("/_sim/"):].strip("/"), body)
            elif self.gateway.serves(method, path):
                status, payload = self.gateway.answer(path, environ, body)
            elif path == "/healthz":
                status, payload = 200, {"ok": True}
            else:
                status, payload = 404, {"error": f"no route {method} {path}"}
        except Reply as reply:
            status, payload = reply.status, reply.body
        return _respond(start_response, status, payload)

    def notify(self, order: SimOrder, *, forced: bool = False, copies: int = 1) -> None:
        """Queue the notify of an order with a notifyUrl (forced: now, ignoring the policy's drops and delays)."""
        merchant = self.merchants.get(order.mch_id)
        if merchant is None or not order.notify_url:
            return
        body, ctype = self.notify_body(order, merchant)
        self.sender.submit(order.pay_order_id, order.notify_url, body, ctype, forced=forced, copies=copies)

    def notify_body(self, order: SimOrder, merchant: Merchant | None = None) -> tuple[bytes, str]:
        """The signed notify IOTPay would send for order: (body bytes, content type)."""
        merchant = merchant or self.merchants[order.mch_id]
        if order.family == "v3":
            fields = signature.signed(wire.v3_fields(order, self.gateway_tz), merchant.signing_key)
            return json.dumps(fields, ensure_ascii=False).encode("utf-8"), "application/json;charset=UTF-8"
        fields = signature.signed(wire.v1_notify_fields(order), merchant.signing_key)
        return urlencode(fields).encode("utf-8"), "application/x-www-form-urlencoded"

    def add_merchant(self, mch_id: str, key: str, login_name: str = "") -> None:
        """Register (or add a key to) a merchant the simulator accepts."""
        with self._lock:
            prev = self.merchants.get(mch_id)
            keys = (prev.keys if prev else ()) + ((key,) if not prev or key not in prev.keys else ())
            self.merchants[mch_id] = Merchant(mch_id, keys, login_name or (prev.login_name if prev else ""))


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Reply(400, {"error": "bad Content-Length"}) from None
    if length > MAX_BODY:
        raise Reply(413, {"error": "body too large"})
    return environ["wsgi.input"].read(length) if length else b""


def _respond(start_response: StartResponse, status: int, payload: Any) -> list[bytes]:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    reason = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
              413: "Payload Too Large"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", "application/json;charset=UTF-8"),
                                          ("Content-Length", str(len(body)))])
    return [body]
