"""The simulator's control API under `/_sim/`: tests, the demo and staging drive the gateway with it.

JSON in, JSON out; a bad field answers 400 naming it, an unknown order 404 (the routes are listed
in the package docstring). Orders are created from a spec here, merchants added, the clock set,
faults injected, the notify policy changed, and notifies sent again on demand.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from worker.errors import ValidationError
from worker.iotpay.cards import mask_pan
from worker.iotpay.channels import CURRENCIES, FAMILIES, V3_CURRENCIES, family_for_channel
from worker.simulator import wire
from worker.simulator.gateway import cents
from worker.simulator.notifier import NotifyPolicy
from worker.simulator.store import SimError, SimOrder, after

if TYPE_CHECKING:
    from worker.simulator.app import Simulator

ORDER_FIELDS = frozenset({"mchId", "mchOrderNo", "payOrderId", "amount", "currency", "channel", "family", "status",
                          "notifyUrl", "completeAfter", "completeStatus", "failAfter", "cardNum", "cardType",
                          "expiryDate", "authNum", "transNum", "invoiceNum", "extra", "createdAt", "paySuccTime"})


class Reply(Exception):
    """Short-circuit a request with an HTTP answer (status, JSON body)."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body


def handle(sim: Simulator, method: str, route: str, body: bytes) -> Any:
    """The JSON answer to `method /_sim/<route>`. Raises Reply for a 4xx answer."""
    data = json_object(body) if method == "POST" else {}
    parts = route.split("/")
    try:
        if route == "orders" and method == "POST":
            return view(create_order(sim, data), sim)
        if route == "orders/bulk" and method == "POST":
            specs = data.get("orders")
            if not isinstance(specs, list):
                raise ValidationError("orders", "must be a list of order specs")
            return {"created": [create_order(sim, s).pay_order_id for s in specs]}
        if route == "orders" and method == "GET":
            return {"orders": [view(o, sim) for o in sim.store]}
        if parts[0] == "orders" and len(parts) >= 2:
            return _order_action(sim, method, parts[1], parts[2] if len(parts) > 2 else "", data)
        if route == "merchants" and method == "POST":
            sim.add_merchant(str(_need(data, "mchId")), str(_need(data, "key")), str(data.get("loginName") or ""))
            return {"mchId": data["mchId"]}
        if route == "deliveries" and method == "GET":
            deliveries, pending = sim.sender.deliveries()
            return {"deliveries": deliveries, "pending": pending}
        if route == "stats" and method == "GET":
            requests, max_in_flight = sim.gateway.counters()
            return {"requests": requests, "orders": len(sim.store), "pending": sim.sender.pending(),
                    "maxInFlight": max_in_flight, "now": sim.clock.now().isoformat()}
        if route == "clock" and method == "POST":
            if data.get("real"):
                sim.clock.release()
            if "now" in data:
                sim.clock.set(_parse_time("now", data["now"]))
            if "advance" in data:
                sim.clock.advance(float(data["advance"]))
            sim.store.advance()
            return {"now": sim.clock.now().isoformat()}
        if route == "faults" and method == "POST":
            return sim.gateway.inject_faults(
                http_status=int(data.get("httpStatus", 503)), count=int(data.get("count", 0)),
                bad_signs=int(data.get("badSign", 0)),
                latency=float(data["latency"]) if "latency" in data else None)
        if route == "policy" and method == "POST":
            sim.sender.policy = NotifyPolicy.from_dict(data, sim.sender.policy)
            return sim.sender.policy.to_dict()
    except SimError as exc:
        raise Reply(404, {"error": str(exc)}) from None
    except (ValidationError, ValueError, TypeError) as exc:
        raise Reply(400, {"error": str(exc)}) from None
    raise Reply(404, {"error": f"no control route {method} /_sim/{route}"})


def create_order(sim: Simulator, spec: dict[str, Any]) -> SimOrder:
    """Create an order from a control-API spec (see the package docstring). Raises ValidationError / SimError."""
    unknown = set(spec) - ORDER_FIELDS
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    mch_id = str(_need(spec, "mchId"))
    if mch_id not in sim.merchants:
        raise ValidationError("mchId", f"merchant {mch_id!r} not configured in the simulator")
    channel = str(spec.get("channel") or "PF_CC")
    family = spec.get("family") or family_for_channel(channel)
    if family not in FAMILIES:
        raise ValidationError("family", "must be v3 or v1")
    currency = str(spec.get("currency") or "CAD")
    if currency not in CURRENCIES or (family == "v3" and currency not in V3_CURRENCIES):
        raise ValidationError("currency", f"{currency!r} not supported for {family}")
    status = _int_field(spec, "status", 0)
    now = _time_field(spec, "createdAt") or sim.clock.now()
    complete_status = _int_field(spec, "completeStatus", 2)
    if complete_status not in (2, 3):
        raise ValidationError("completeStatus", "must be 2 or 3")
    extra = spec.get("extra") or {}
    if not isinstance(extra, dict):
        raise ValidationError("extra", "must be an object")
    card = spec.get("cardNum")
    order = SimOrder(
        pay_order_id=str(spec.get("payOrderId") or sim.store.new_id(family, channel)),
        family=family, mch_id=mch_id, mch_order_no=str(_need(spec, "mchOrderNo")), channel=channel,
        amount=cents(_need(spec, "amount")), currency=currency, status=status, created_at=now,
        notify_url=spec.get("notifyUrl") or None, complete_status=complete_status,
        complete_at=after(now, _num_field(spec, "completeAfter")), fail_at=after(now, _num_field(spec, "failAfter")),
        pay_succ_time=_time_field(spec, "paySuccTime"),
        card_num=mask_pan(str(card)) if card else ("432567******2266" if family == "v3" else None),
        card_type=spec.get("cardType") or ("V" if family == "v3" else None),
        expiry_date=spec.get("expiryDate") or ("0730" if family == "v3" else None),
        auth_num=spec.get("authNum") or ("A1B2C3" if family == "v3" else None),
        trans_num=spec.get("transNum"), invoice_num=spec.get("invoiceNum"), extra=dict(extra),
    )
    return sim.store.create(order)


def view(order: SimOrder, sim: Simulator) -> dict[str, Any]:
    """An order as the control API shows it (the wire fields plus simulator state)."""
    fields = wire.v3_fields(order, sim.gateway_tz) if order.family == "v3" else wire.v1_fields(order)
    return {**fields, "family": order.family, "refunded": order.refunded, "settled": order.settled,
            "createdAt": order.created_at.isoformat(), "notifyUrl": order.notify_url,
            "completeAt": order.complete_at.isoformat() if order.complete_at else None}


def json_object(body: bytes) -> dict[str, Any]:
    """A request body as a JSON object ({} when empty). Raises Reply(400)."""
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Reply(400, {"error": "body: not valid JSON"}) from None
    if not isinstance(data, dict):
        raise Reply(400, {"error": "body: must be a JSON object"})
    return data


def _order_action(sim: Simulator, method: str, oid: str, action: str, data: dict[str, Any]) -> Any:
    if method == "GET" and not action:
        return view(sim.store.by_id(oid), sim)
    if method == "GET" and action == "notify-body":
        body, ctype = sim.notify_body(sim.store.by_id(oid))
        return {"contentType": ctype, "body": body.decode("utf-8")}
    if method != "POST":
        raise Reply(405, {"error": "use POST"})
    if action == "complete":
        status = _int_field(data, "status", 2)
        if status not in (2, 3):
            raise ValidationError("status", "must be 2 or 3")
        return view(sim.store.set_status(oid, status), sim)
    if action == "fail":
        return view(sim.store.set_status(oid, _int_field(data, "status", 9)), sim)
    if action == "status":
        return view(sim.store.set_status(oid, _int_field(data, "status", None)), sim)
    if action == "settle":
        return view(sim.store.settle(oid), sim)
    if action == "notify":
        order = sim.store.by_id(oid)
        url = data.get("notifyUrl") or order.notify_url
        if not url:
            raise ValidationError("notifyUrl", "the order has none; give one")
        order.notify_url = url
        sim.notify(order, forced=True, copies=_int_field(data, "times", 1))
        return {"queued": _int_field(data, "times", 1)}
    raise Reply(404, {"error": f"no order action {action!r}"})


def _need(data: dict[str, Any], name: str) -> Any:
    if data.get(name) in (None, ""):
        raise ValidationError(name, "is required")
    return data[name]


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
