"""The IOTPay simulator as a WSGI application (see worker/simulator/__init__.py for the protocol).

`Simulator(merchants)` is a plain WSGI callable: serve it with gunicorn (`iotledger simulate`),
or call it in-process through `httpx.WSGITransport(app=sim)`. Gateway endpoints answer like
IOTPay; `/_sim/...` endpoints let tests and demos drive it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode
from zoneinfo import ZoneInfo

import httpx

from worker import logs
from worker.config import DEFAULT_GATEWAY_TZ
from worker.errors import PermanentError, ValidationError
from worker.iotpay import signature
from worker.iotpay.cards import mask_pan
from worker.iotpay.channels import CURRENCIES, FAMILIES, V3_CURRENCIES, family_for_channel
from worker.merchants import Merchant, Merchants
from worker.simulator import wire
from worker.simulator.clock import SimClock
from worker.simulator.notifier import NotifyPolicy, NotifySender
from worker.simulator.store import OrderStore, SimError, SimOrder, after

MAX_BODY = 1024 * 1024
StartResponse = Callable[..., Any]

log = logs.get("worker.simulator")


class _Reply(Exception):
    """Short-circuit a handler with an HTTP answer."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


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
        self.store = OrderStore(self.clock.now, seed=seed, on_final=self._notify)
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self._faults: list[int] = []  # HTTP statuses to answer to the next gateway requests
        self._bad_signs = 0
        self.latency = 0.0
        self.in_flight = 0
        self.max_in_flight = 0  # the most gateway requests served at once (tests check client concurrency)
        self._routes: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
            ("POST", "/v3/cc_query"): self._cc_query,
            ("POST", "/v3/cc_refund"): self._cc_refund,
            ("POST", "/v3/cc_void"): self._cc_void,
            ("POST", "/v1/query_order"): self._query_order,
            ("POST", "/v1/refund_order"): self._refund_order,
        }

    # ================================================================ WSGI
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/") or "/"
        try:
            body = _read_body(environ)
            if path.startswith("/_sim/"):
                status, payload = 200, self._control(method, path[len("/_sim/"):].strip("/"), body)
            elif (method, path) in self._routes:
                status, payload = self._gateway(path, environ, body)
            elif path == "/healthz":
                status, payload = 200, {"ok": True}
            else:
                status, payload = 404, {"error": f"no route {method} {path}"}
        except _Reply as reply:
            status, payload = reply.status, reply.body
        return _respond(start_response, status, payload)

    # ================================================================ gateway endpoints
    def _gateway(self, path: str, environ: dict[str, Any], body: bytes) -> tuple[int, Any]:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._gateway_call(path, environ, body)
        finally:
            with self._lock:
                self.in_flight -= 1

    def _gateway_call(self, path: str, environ: dict[str, Any], body: bytes) -> tuple[int, Any]:
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
            params = _decode_request(family, environ, body)
            merchant = self._merchant(params)
            signature.verify(params, merchant.keys)
        except PermanentError as exc:
            return 200, {"retCode": "FAIL", "retMsg": _ret_msg(exc)}
        except SimError as exc:
            return 200, {"retCode": "FAIL", "retMsg": str(exc)}
        try:
            order = self._routes[("POST", path)](params)
        except SimError as exc:
            if family == "v1":  # v1: the call worked, the business result failed
                return 200, self._sign_v1({"retCode": "SUCCESS", "retMsg": "", "resCode": "FAIL", "errCode": "FAIL",
                                           "errCodeDes": str(exc)}, merchant, bad_sign)
            return 200, {"retCode": "FAIL", "retMsg": str(exc)}
        except ValidationError as exc:
            return 200, {"retCode": "FAIL", "retMsg": _ret_msg(exc)}
        if family == "v3":
            data = signature.signed(wire.v3_fields(order, self.gateway_tz), merchant.signing_key)
            if bad_sign:
                data["sign"] = _corrupt(data["sign"])
            return 200, {"retCode": "SUCCESS", "retMsg": "", "retData": data}
        return 200, self._sign_v1({"retCode": "SUCCESS", "retMsg": "", "resCode": "SUCCESS", **wire.v1_fields(order)},
                                  merchant, bad_sign)

    @staticmethod
    def _sign_v1(data: dict[str, Any], merchant: Merchant, bad: bool) -> dict[str, Any]:
        out = signature.signed(data, merchant.signing_key)
        if bad:
            out["sign"] = _corrupt(out["sign"])
        return out

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
        amount = None if void else _cents(params["refundAmount"])
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

    # ================================================================ notifies
    def _notify(self, order: SimOrder, *, forced: bool = False, copies: int = 1) -> None:
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

    # ================================================================ domain helpers (control API and tests)
    def create_order(self, spec: dict[str, Any]) -> SimOrder:
        """Create an order from a control-API spec (see the package docstring). Raises ValidationError / SimError."""
        def need(name: str) -> Any:
            if spec.get(name) in (None, ""):
                raise ValidationError(name, "is required")
            return spec[name]

        unknown = set(spec) - {"mchId", "mchOrderNo", "payOrderId", "amount", "currency", "channel", "family", "status",
                               "notifyUrl", "completeAfter", "completeStatus", "failAfter", "cardNum", "cardType",
                               "expiryDate", "authNum", "transNum", "invoiceNum", "extra", "createdAt", "paySuccTime"}
        if unknown:
            raise ValidationError(sorted(unknown)[0], "unknown field")
        mch_id = str(need("mchId"))
        if mch_id not in self.merchants:
            raise ValidationError("mchId", f"merchant {mch_id!r} not configured in the simulator")
        channel = str(spec.get("channel") or "PF_CC")
        family = spec.get("family") or family_for_channel(channel)
        if family not in FAMILIES:
            raise ValidationError("family", "must be v3 or v1")
        currency = str(spec.get("currency") or "CAD")
        if currency not in CURRENCIES or (family == "v3" and currency not in V3_CURRENCIES):
            raise ValidationError("currency", f"{currency!r} not supported for {family}")
        status = _int_field(spec, "status", 0)
        now = _time_field(spec, "createdAt") or self.clock.now()
        complete_status = _int_field(spec, "completeStatus", 2)
        if complete_status not in (2, 3):
            raise ValidationError("completeStatus", "must be 2 or 3")
        extra = spec.get("extra") or {}
        if not isinstance(extra, dict):
            raise ValidationError("extra", "must be an object")
        card = spec.get("cardNum")
        order = SimOrder(
            pay_order_id=str(spec.get("payOrderId") or self.store.new_id(family, channel)),
            family=family, mch_id=mch_id, mch_order_no=str(need("mchOrderNo")), channel=channel,
            amount=_cents(need("amount")), currency=currency, status=status, created_at=now,
            notify_url=spec.get("notifyUrl") or None, complete_status=complete_status,
            complete_at=after(now, _num_field(spec, "completeAfter")), fail_at=after(now, _num_field(spec, "failAfter")),
            pay_succ_time=_time_field(spec, "paySuccTime"),
            card_num=mask_pan(str(card)) if card else ("432567******2266" if family == "v3" else None),
            card_type=spec.get("cardType") or ("V" if family == "v3" else None),
            expiry_date=spec.get("expiryDate") or ("0730" if family == "v3" else None),
            auth_num=spec.get("authNum") or ("A1B2C3" if family == "v3" else None),
            trans_num=spec.get("transNum"), invoice_num=spec.get("invoiceNum"), extra=dict(extra),
        )
        return self.store.create(order)

    # ================================================================ control API
    def _control(self, method: str, route: str, body: bytes) -> Any:
        data = _json_object(body) if method == "POST" else {}
        parts = route.split("/")
        try:
            if route == "orders" and method == "POST":
                return _view(self.create_order(data), self)
            if route == "orders/bulk" and method == "POST":
                specs = data.get("orders")
                if not isinstance(specs, list):
                    raise ValidationError("orders", "must be a list of order specs")
                return {"created": [self.create_order(s).pay_order_id for s in specs]}
            if route == "orders" and method == "GET":
                return {"orders": [_view(o, self) for o in self.store]}
            if parts[0] == "orders" and len(parts) >= 2:
                return self._control_order(method, parts[1], parts[2] if len(parts) > 2 else "", data)
            if route == "merchants" and method == "POST":
                self.add_merchant(str(_need(data, "mchId")), str(_need(data, "key")), str(data.get("loginName") or ""))
                return {"mchId": data["mchId"]}
            if route == "deliveries" and method == "GET":
                with self.sender._cond:
                    return {"deliveries": list(self.sender.log), "pending": self.sender.pending()}
            if route == "stats" and method == "GET":
                with self._lock:
                    return {"requests": dict(self.requests), "orders": len(self.store), "pending": self.sender.pending(),
                            "maxInFlight": self.max_in_flight, "now": self.clock.now().isoformat()}
            if route == "clock" and method == "POST":
                if data.get("real"):
                    self.clock.release()
                if "now" in data:
                    self.clock.set(_parse_time("now", data["now"]))
                if "advance" in data:
                    self.clock.advance(float(data["advance"]))
                self.store.advance()
                return {"now": self.clock.now().isoformat()}
            if route == "faults" and method == "POST":
                with self._lock:
                    self._faults.extend([int(data.get("httpStatus", 503))] * int(data.get("count", 0)))
                    self._bad_signs += int(data.get("badSign", 0))
                    if "latency" in data:
                        self.latency = float(data["latency"])
                return {"queued": len(self._faults), "badSign": self._bad_signs, "latency": self.latency}
            if route == "policy" and method == "POST":
                self.sender.policy = NotifyPolicy.from_dict(data, self.sender.policy)
                return self.sender.policy.to_dict()
        except SimError as exc:
            raise _Reply(404, {"error": str(exc)}) from None
        except (ValidationError, ValueError, TypeError) as exc:
            raise _Reply(400, {"error": str(exc)}) from None
        raise _Reply(404, {"error": f"no control route {method} /_sim/{route}"})

    def _control_order(self, method: str, oid: str, action: str, data: dict[str, Any]) -> Any:
        if method == "GET" and not action:
            return _view(self.store.by_id(oid), self)
        if method == "GET" and action == "notify-body":
            body, ctype = self.notify_body(self.store.by_id(oid))
            return {"contentType": ctype, "body": body.decode("utf-8")}
        if method != "POST":
            raise _Reply(405, {"error": "use POST"})
        if action == "complete":
            status = _int_field(data, "status", 2)
            if status not in (2, 3):
                raise ValidationError("status", "must be 2 or 3")
            return _view(self.store.set_status(oid, status), self)
        if action == "fail":
            return _view(self.store.set_status(oid, _int_field(data, "status", 9)), self)
        if action == "status":
            return _view(self.store.set_status(oid, _int_field(data, "status", None)), self)
        if action == "settle":
            return _view(self.store.settle(oid), self)
        if action == "notify":
            order = self.store.by_id(oid)
            url = data.get("notifyUrl") or order.notify_url
            if not url:
                raise ValidationError("notifyUrl", "the order has none; give one")
            order.notify_url = url
            self._notify(order, forced=True, copies=_int_field(data, "times", 1))
            return {"queued": _int_field(data, "times", 1)}
        raise _Reply(404, {"error": f"no order action {action!r}"})


# ==================================================================== helpers
def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Reply(400, {"error": "bad Content-Length"}) from None
    if length > MAX_BODY:
        raise _Reply(413, {"error": "body too large"})
    return environ["wsgi.input"].read(length) if length else b""


def _respond(start_response: StartResponse, status: int, payload: Any) -> list[bytes]:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    reason = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
              413: "Payload Too Large"}.get(status, "Error")
    start_response(f"{status} {reason}", [("Content-Type", "application/json;charset=UTF-8"),
                                          ("Content-Length", str(len(body)))])
    return [body]


def _decode_request(family: str, environ: dict[str, Any], body: bytes) -> dict[str, Any]:
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


def _ret_msg(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and exc.field == "sign" or type(exc).__name__ == "SignatureError":
        return "signature error"
    return str(exc)


def _corrupt(sign: str) -> str:
    return ("0" if sign[0] != "0" else "1") + sign[1:]


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Reply(400, {"error": "body: not valid JSON"}) from None
    if not isinstance(data, dict):
        raise _Reply(400, {"error": "body: must be a JSON object"})
    return data


def _need(data: dict[str, Any], name: str) -> Any:
    if data.get(name) in (None, ""):
        raise ValidationError(name, "is required")
    return data[name]


def _cents(value: Any) -> int:
    if isinstance(value, bool) or isinstance(value, float):
        raise ValidationError("amount", f"must be integer cents, got {value!r}")
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValidationError("amount", f"must be integer cents, got {value!r}") from None
    if out <= 0:
        raise ValidationError("amount", f"must be > 0, got {out}")
    return out


def _int_field(data: dict[str, Any], name: str, default: int | None) -> int:
    value = data.get(name, default)
    if value is None or isinstance(value, bool):
        raise ValidationError(name, "is required (an integer)")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValidationError(name, f"must be an integer, got {value!r}") from None


def _num_field(data: dict[str, Any], name: str) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValidationError(name, f"must be a number of seconds, got {value!r}") from None


def _parse_time(name: str, value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValidationError(name, f"must be an ISO-8601 time with zone, got {value!r}") from None
    if moment.tzinfo is None:
        raise ValidationError(name, "must carry a timezone offset")
    return moment


def _time_field(data: dict[str, Any], name: str) -> datetime | None:
    return None if data.get(name) in (None, "") else _parse_time(name, data[name])


def _view(order: SimOrder, sim: Simulator) -> dict[str, Any]:
    """An order as the control API shows it (the wire fields plus simulator state)."""
    fields = wire.v3_fields(order, sim.gateway_tz) if order.family == "v3" else wire.v1_fields(order)
    return {**fields, "family": order.family, "refunded": order.refunded, "settled": order.settled,
            "createdAt": order.created_at.isoformat(), "notifyUrl": order.notify_url,
            "completeAt": order.complete_at.isoformat() if order.complete_at else None}
