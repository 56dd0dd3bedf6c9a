"""The simulator's gateway endpoints, answered as IOTPay answers them (see the package docstring).

V3 cc_query, cc_refund, cc_void (JSON) and v1 query_order, refund_order (form `params=<json>`):
the request's sign is checked with the merchant's keys, and the answer is signed the same way.
Faults the control API injects (an HTTP status, a corrupted sign, latency) apply to the next
requests here.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

from worker.errors import PermanentError, ValidationError
from worker.iotpay import signature
from worker.merchants import Merchant
from worker.simulator import wire
from worker.simulator.store import OrderStore, SimError, SimOrder


class GatewayEndpoints:
    """The order APIs of one simulated gateway, with request counters and injectable faults."""

    def __init__(self, merchants: dict[str, Merchant], store: OrderStore, gateway_tz: ZoneInfo) -> None:
        self.merchants = merchants  # shared with the simulator, which adds merchants to it
        self.store = store
        self.gateway_tz = gateway_tz
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self._faults: list[int] = []  # HTTP statuses to answer to the next gateway requests
        self._bad_signs = 0
        self.latency = 0.0
        self.in_flight = 0
        self.max_in_flight = 0  # the most gateway requests served at once (tests check client concurrency)
        self._routes: dict[str, Callable[[dict[str, Any]], SimOrder]] = {
            "/v3/cc_query": self._cc_query,
            "/v3/cc_refund": self._cc_refund,
            "/v3/cc_void": self._cc_void,
            "/v1/query_order": self._query_order,
            "/v1/refund_order": self._refund_order,
        }

    def serves(self, method: str, path: str) -> bool:
        """True when (method, path) is one of the gateway's endpoints."""
        return method == "POST" and path in self._routes

    def answer(self, path: str, environ: dict[str, Any], body: bytes) -> tuple[int, Any]:
        """(HTTP status, JSON payload) for one request to an endpoint `serves` accepts. Never raises
        for the request's content: a refusal is a FAIL answer, as IOTPay gives it."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._answer(path, environ, body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def inject_faults(self, *, http_status: int = 503, count: int = 0, bad_signs: int = 0,
                      latency: float | None = None) -> dict[str, Any]:
        """Fail the next `count` requests with `http_status`, corrupt the next `bad_signs` signs, and set
        the latency of every request (seconds) when given; return what is now queued."""
        with self._lock:
            self._faults.extend([http_status] * count)
            self._bad_signs += bad_signs
            if latency is not None:
                self.latency = latency
        return {"queued": len(self._faults), "badSign": self._bad_signs, "latency": self.latency}

    def counters(self) -> tuple[dict[str, int], int]:
        """(requests per endpoint, the most requests served at once), read together."""
        with self._lock:
            return dict(self.requests), self.max_in_flight

    def _answer(self, path: str, environ: dict[str, Any], body: bytes) -> tuple[int, Any]:
        endpoint = path.rsplit("/", 1)[1]
        with self._lock:
            self.requests[endpoint] = self.requests.get(endpoint, 0) + 1
            fault = self._faults.pop(0) if self._faults else None
            bad_sign = self._bad_signs > 0
            if bad_sign:
                self._bad_signs -= 1
        if self.latency:
            time.sleep(self.latency)
        if fault is not None:
            return fault, {"error": "injected fault"}
        family = "v3" if path.startswith("/v3/") else "v1"
        try:
            params = decode_request(family, environ, body)
            merchant = self._merchant(params)
            signature.verify(params, merchant.keys)
        except PermanentError as exc:
            return 200, {"retCode": "FAIL", "retMsg": _ret_msg(exc)}
        except SimError as exc:
            return 200, {"retCode": "FAIL", "retMsg": str(exc)}
        try:
            order = self._routes[path](params)
        except SimError as exc:
            if family == "v1":  # v1: the call worked, the business result failed
                return 200, _sign_v1({"retCode": "SUCCESS", "retMsg": "", "resCode": "FAIL", "errCode": "FAIL",
                                      "errCodeDes": str(exc)}, merchant, bad_sign)
            return 200, {"retCode": "FAIL", "retMsg": str(exc)}
        except ValidationError as exc:
            return 200, {"retCode": "FAIL", "retMsg": _ret_msg(exc)}
        if family == "v3":
            data = signature.signed(wire.v3_fields(order, self.gateway_tz), merchant.signing_key)
            if bad_sign:
                data["sign"] = _corrupt(data["sign"])
            return 200, {"retCode": "SUCCESS", "retMsg": "", "retData": data}
        return 200, _sign_v1({"retCode": "SUCCESS", "retMsg": "", "resCode": "SUCCESS", **wire.v1_fields(order)},
                             merchant, bad_sign)

    def _merchant(self, params: dict[str, Any]) -> Merchant:
        mch_id = params.get("mchId")
        if not mch_id:
            raise ValidationError("mchId", "is required")
        merchant = self.merchants.get(str(mch_id))
        if merchant is None:
            raise SimError("mchId not exist")
        return merchant

    def _lookup(self, params: dict[str, Any]) -> SimOrder:
        pay_order_id, mch_order_no = params.get("payOrderId"), params.get("mchOrderNo")
        if not pay_order_id and not mch_order_no:
            raise ValidationError("payOrderId", "payOrderId or mchOrderNo is required")
        return self.store.get(str(params["mchId"]), pay_order_id=pay_order_id or None, mch_order_no=mch_order_no or None)

    def _cc_query(self, params: dict[str, Any]) -> SimOrder:
        order = self._lookup(params)
        if order.family != "v3":
            raise SimError("order not exist")
        return order

    def _query_order(self, params: dict[str, Any]) -> SimOrder:
        order = self._lookup(params)
        if order.family != "v1":
            raise SimError("order not exist")
        return order

    def _refund(self, params: dict[str, Any], family: str, *, void: bool) -> SimOrder:
        for name in ("mchRefundNo", "payOrderId", "loginName") + (() if void else ("refundAmount",)):
            if params.get(name) in (None, ""):
                raise ValidationError(name, "is required")
        amount = None if void else cents(params["refundAmount"])
        original = self.store.get(str(params["mchId"]), pay_order_id=str(params["payOrderId"]))
        if original.family != family:
            raise SimError("original order not exist")
        return self.store.refund(str(params["mchId"]), original.pay_order_id, str(params["mchRefundNo"]), amount, void=void)

    def _cc_refund(self, params: dict[str, Any]) -> SimOrder:
        return self._refund(params, "v3", void=False)

    def _cc_void(self, params: dict[str, Any]) -> SimOrder:
        return self._refund(params, "v3", void=True)

    def _refund_order(self, params: dict[str, Any]) -> SimOrder:
        return self._refund(params, "v1", void=False)


def decode_request(family: str, environ: dict[str, Any], body: bytes) -> dict[str, Any]:
    """V3: a JSON object. v1: the form field params=<json object>. Raises ValidationError."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("body", "not UTF-8") from None
    if family == "v1":
        form = dict(parse_qsl(text, keep_blank_values=True))
        if "params" not in form:
            raise ValidationError("params", "is required (form field params=<json>)")
        text = form["params"]
    elif "json" not in (environ.get("CONTENT_TYPE") or "").lower():
        raise ValidationError("Content-Type", "must be application/json;charset=UTF-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise ValidationError("params" if family == "v1" else "body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("body", "must be a JSON object")
    return data


def cents(value: Any) -> int:
    """An amount field as integer cents > 0. Raises ValidationError naming `amount`."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValidationError("amount", f"must be integer cents, got {value!r}")
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValidationError("amount", f"must be integer cents, got {value!r}") from None
    if out <= 0:
        raise ValidationError("amount", f"must be > 0, got {out}")
    return out


def _sign_v1(data: dict[str, Any], merchant: Merchant, bad: bool) -> dict[str, Any]:
    out = signature.signed(data, merchant.signing_key)
    if bad:
        out["sign"] = _corrupt(out["sign"])
    return out


def _ret_msg(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.field == "sign" or type(exc).__name__ == "SignatureError":
        return "signature error"
    return str(exc)


def _corrupt(sign: str) -> str:
    return ("0" if sign[0] != "0" else "1") + sign[1:]
