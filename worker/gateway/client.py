"""The IOTPay gateway client: signed requests, verified responses, typed errors.

V3 (`cc_query`, `cc_refund`, `cc_void`) posts a JSON body; v1 (`query_order`, `refund_order`)
posts the form field `params=<json>`. Every request is signed with the merchant's first key;
the `sign` of a response is verified whenever the response carries one (at the top level,
and inside `retData`), with any of the merchant's keys.

Retries: only network errors and HTTP 5xx, with exponential backoff and jitter. A query is
always safe to repeat. A refund or void is repeated only when the request provably never
left (connection refused, connect/pool timeout); otherwise GatewayNetworkError is raised with
`maybe_applied=True`, because the gateway may have refunded already: query, then decide.

The transport is injectable (`httpx.WSGITransport(app=simulator)` in tests); one httpx.Client
is kept for the client's lifetime so connections are reused. The client is thread-safe.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from worker import logs
from worker.config import DEFAULT_GATEWAY_TZ, DEFAULT_V1_BASE_URL, DEFAULT_V3_BASE_URL, Settings
from worker.errors import SignatureError, ValidationError
from worker.gateway.errors import (
    GatewayBadSignatureError,
    GatewayFailError,
    GatewayMalformedError,
    GatewayNetworkError,
)
from worker.iotpay import signature
from worker.iotpay.channels import Family
from worker.iotpay.notify import DEFAULT_MAX_AMOUNT_CENTS, Notify, parse_params
from worker.merchants import Merchant, Merchants

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
DEFAULT_RETRIES = 3  # attempts after the first
DEFAULT_BACKOFF_SECONDS = 0.2
DEFAULT_MAX_BACKOFF_SECONDS = 5.0
DEFAULT_MAX_CONNECTIONS = 32

V3_CONTENT_TYPE = "application/json;charset=UTF-8"
# envelope fields of a response, not part of the order itself (v1 answers put the order flat beside them)
ENVELOPE_FIELDS = frozenset({"retCode", "retMsg", "resCode", "errCode", "errCodeDes", "retData", "payOrder", "sign",
                             "retParams", "retDetail"})
# the request never reached the server: safe to resend even a refund
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

log = logs.get("worker.gateway.client")


@dataclass(frozen=True)
class GatewayAnswer:
    """A successful gateway answer: the order it describes, parsed, plus the raw response."""

    family: Family
    endpoint: str
    notify: Notify  # the order (pay, or the refund created), as a verified notify-like value
    order: dict[str, Any] = field(repr=False)  # the order's fields as received
    response: dict[str, Any] = field(repr=False)  # the whole decoded response
    signed: bool = False  # True when at least one `sign` in the response was verified


class GatewayClient:
    """A signed, retrying client for IOTPay's V3 and v1 order APIs."""

    def __init__(
        self,
        merchants: Merchants,
        *,
        v3_base_url: str = DEFAULT_V3_BASE_URL,
        v1_base_url: str = DEFAULT_V1_BASE_URL,
        gateway_tz: ZoneInfo = ZoneInfo(DEFAULT_GATEWAY_TZ),
        transport: httpx.BaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF_SECONDS,
        max_backoff: float = DEFAULT_MAX_BACKOFF_SECONDS,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        require_response_sign: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
        max_amount: int = DEFAULT_MAX_AMOUNT_CENTS,
    ) -> None:
        self.merchants = merchants
        self.v3_base_url = v3_base_url.rstrip("/")
        self.v1_base_url = v1_base_url.rstrip("/")
        self.gateway_tz = gateway_tz
        self.max_amount = max_amount
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        # IOTPay's documented responses are not all signed; set True where the gateway is known to sign
        self.require_response_sign = require_response_sign
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._http = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, DEFAULT_CONNECT_TIMEOUT_SECONDS)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            headers={"User-Agent": "iotpay-ledger"},
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> GatewayClient:
        """A client for the configured merchants and base URLs (kwargs override, e.g. transport)."""
        return cls(settings.merchants, v3_base_url=settings.v3_base_url, v1_base_url=settings.v1_base_url,
                   gateway_tz=settings.gateway_tz, max_amount=settings.max_amount_cents, **kwargs)

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ V3
    def cc_query(self, mch_id: str, *, pay_order_id: str | None = None, mch_order_no: str | None = None) -> GatewayAnswer:
        """Query a V3 order by payOrderId or mchOrderNo (give exactly one).

        Raises GatewayNetworkError, GatewayFailError, GatewayBadSignatureError, GatewayMalformedError,
        UnknownMerchantError, ValueError (both or neither id given).
        """
        params = {"mchId": mch_id, **_one_id(pay_order_id, mch_order_no)}
        return self._call("v3", "cc_query", params, expect=_expect(mch_id, pay_order_id, mch_order_no), write=False)

    def cc_refund(self, mch_id: str, *, pay_order_id: str, mch_refund_no: str, refund_amount: int,
                  login_name: str | None = None) -> GatewayAnswer:
        """Refund part or all of a settled V3 pay order; returns the refund order created.

        Raises as cc_query; GatewayNetworkError.maybe_applied tells whether the refund may exist.
        """
        _positive_cents("refundAmount", refund_amount)
        merchant = self.merchants.require(mch_id)
        params = {"mchId": mch_id, "mchRefundNo": mch_refund_no, "loginName": login_name or merchant.login_name,
                  "refundAmount": refund_amount, "payOrderId": pay_order_id}
        return self._call("v3", "cc_refund", params, expect={"mchId": mch_id}, write=True)

    def cc_void(self, mch_id: str, *, pay_order_id: str, mch_refund_no: str, login_name: str | None = None) -> GatewayAnswer:
        """Void (cancel in full) a V3 pay order not yet settled; returns the void order. Raises as cc_refund."""
        merchant = self.merchants.require(mch_id)
        params = {"mchId": mch_id, "mchRefundNo": mch_refund_no, "loginName": login_name or merchant.login_name,
                  "payOrderId": pay_order_id}
        return self._call("v3", "cc_void", params, expect={"mchId": mch_id}, write=True)

    # ------------------------------------------------------------------ v1
    def query_order(self, mch_id: str, *, pay_order_id: str | None = None, mch_order_no: str | None = None) -> GatewayAnswer:
        """Query a v1 (WeChat, Alipay, UnionPay, POS) order. Raises as cc_query."""
        params = {"mchId": mch_id, **_one_id(pay_order_id, mch_order_no)}
        return self._call("v1", "query_order", params, expect=_expect(mch_id, pay_order_id, mch_order_no), write=False)

    def refund_order(self, mch_id: str, *, pay_order_id: str, mch_refund_no: str, refund_amount: int,
                     currency: str = "CAD", login_name: str | None = None, client_ip: str = "127.0.0.1") -> GatewayAnswer:
        """Refund a v1 order; returns the refund order created. Raises as cc_refund."""
        _positive_cents("refundAmount", refund_amount)
        merchant = self.merchants.require(mch_id)
        params = {"mchId": mch_id, "mchRefundNo": mch_refund_no, "loginName": login_name or merchant.login_name,
                  "currency": currency, "refundAmount": refund_amount, "clientIp": client_ip, "payOrderId": pay_order_id}
        return self._call("v1", "refund_order", params, expect={"mchId": mch_id}, write=True)

    def query(self, family: Family, mch_id: str, *, pay_order_id: str | None = None,
              mch_order_no: str | None = None) -> GatewayAnswer:
        """cc_query for 'v3', query_order for 'v1'. Raises as cc_query."""
        if family == "v3":
            return self.cc_query(mch_id, pay_order_id=pay_order_id, mch_order_no=mch_order_no)
        if family == "v1":
            return self.query_order(mch_id, pay_order_id=pay_order_id, mch_order_no=mch_order_no)
        raise ValueError(f"unknown API family {family!r} (v3 or v1)")

    # ------------------------------------------------------------------ plumbing
    def _call(self, family: Family, endpoint: str, params: dict[str, Any], *, expect: Mapping[str, str],
              write: bool) -> GatewayAnswer:
        merchant = self.merchants.require(params["mchId"])
        body = signature.signed(params, merchant.signing_key)
        response = self._post(family, endpoint, body, write=write)
        return self._decode(family, endpoint, response, merchant, expect)

    def _post(self, family: Family, endpoint: str, body: dict[str, Any], *, write: bool) -> httpx.Response:
        if family == "v3":
            url = f"{self.v3_base_url}/{endpoint}"
            kwargs: dict[str, Any] = {"content": json.dumps(body, ensure_ascii=False).encode("utf-8"),
                                      "headers": {"Content-Type": V3_CONTENT_TYPE}}
        else:
            url = f"{self.v1_base_url}/{endpoint}"
            kwargs = {"data": {"params": json.dumps(body, ensure_ascii=False)}}
        attempt = 0
        while True:
            try:
                response = self._http.post(url, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                if write and not isinstance(exc, _NOT_SENT):
                    raise GatewayNetworkError(problem, endpoint=endpoint, maybe_applied=True) from exc
                if attempt >= self.retries:
                    raise GatewayNetworkError(f"{problem} (after {attempt + 1} attempts)", endpoint=endpoint) from exc
            else:
                if response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code}"
                if write:
                    raise GatewayNetworkError(problem, endpoint=endpoint, status_code=response.status_code,
                                              maybe_applied=True)
                if attempt >= self.retries:
                    raise GatewayNetworkError(f"{problem} (after {attempt + 1} attempts)", endpoint=endpoint,
                                              status_code=response.status_code)
            delay = self._delay(attempt)
            log.warning("gateway.retry", endpoint=endpoint, attempt=attempt + 1, problem=problem, delay=round(delay, 3))
            self._sleep(delay)
            attempt += 1

    def _delay(self, attempt: int) -> float:
        with self._rng_lock:
            jitter = 0.5 + self._rng.random() / 2
        return min(self.max_backoff, self.backoff * 2**attempt) * jitter

    def _decode(self, family: Family, endpoint: str, response: httpx.Response, merchant: Merchant,
                expect: Mapping[str, str]) -> GatewayAnswer:
        if not 200 <= response.status_code < 300:
            raise GatewayMalformedError("status", f"{endpoint}: HTTP {response.status_code}: {response.text[:200]!r}")
        try:
            data = json.loads(response.content.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise GatewayMalformedError("body", f"{endpoint}: response is not JSON: {response.text[:200]!r}") from None
        if not isinstance(data, dict):
            raise GatewayMalformedError("body", f"{endpoint}: response must be a JSON object")
        signed = self._check_sign(data, merchant, endpoint, "response")
        ret_code = data.get("retCode")
        if ret_code is None:
            raise GatewayMalformedError("retCode", f"{endpoint}: missing")
        if str(ret_code).upper() != "SUCCESS":
            raise GatewayFailError(str(data.get("retMsg") or ""), endpoint=endpoint, err_code=_opt(data.get("errCode")))
        res_code = data.get("resCode")
        if res_code is not None and str(res_code).upper() != "SUCCESS":
            raise GatewayFailError(str(data.get("errCodeDes") or data.get("retMsg") or ""), endpoint=endpoint,
                                   err_code=_opt(data.get("errCode")))
        order = self._order_fields(data, endpoint)
        if order is not data and "sign" in order:
            signed = self._check_sign(order, merchant, endpoint, "retData") or signed
        if self.require_response_sign and not signed:
            raise GatewayBadSignatureError(f"{endpoint}: response carries no sign")
        for name, wanted in expect.items():
            got = order.get(name)
            if got is not None and str(got) != wanted:
                raise GatewayMalformedError(name, f"{endpoint}: answer is about {got!r}, asked for {wanted!r}")
        try:
            notify = parse_params(order, self.gateway_tz, raw=response.content, family=family,
                                  max_amount=self.max_amount)
        except ValidationError as exc:
            raise GatewayMalformedError(exc.field, f"{endpoint}: {exc.problem}") from None
        return GatewayAnswer(family, endpoint, notify, order, data, signed)

    def _check_sign(self, data: dict[str, Any], merchant: Merchant, endpoint: str, where: str) -> bool:
        if data.get("sign") in (None, ""):
            return False
        try:
            signature.verify(data, merchant.keys)
        except ValidationError as exc:
            raise GatewayBadSignatureError(f"{endpoint}: {where} sign: {exc.problem}") from None
        except SignatureError:
            raise GatewayBadSignatureError(f"{endpoint}: {where} sign does not verify") from None
        return True

    @staticmethod
    def _order_fields(data: dict[str, Any], endpoint: str) -> dict[str, Any]:
        for name in ("retData", "payOrder"):
            if name in data and data[name] not in (None, ""):
                if not isinstance(data[name], dict):
                    raise GatewayMalformedError(name, f"{endpoint}: must be an object")
                return data[name]
        # v1 documents the order's fields flat, beside retCode/resCode
        flat = {k: v for k, v in data.items() if k not in ENVELOPE_FIELDS}
        if not flat:
            raise GatewayMalformedError("retData", f"{endpoint}: the answer carries no order")
        return flat


def _opt(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _one_id(pay_order_id: str | None, mch_order_no: str | None) -> dict[str, str]:
    if bool(pay_order_id) == bool(mch_order_no):
        raise ValueError("give exactly one of pay_order_id or mch_order_no")
    return {"payOrderId": pay_order_id} if pay_order_id else {"mchOrderNo": mch_order_no}  # type: ignore[dict-item]


def _expect(mch_id: str, pay_order_id: str | None, mch_order_no: str | None) -> dict[str, str]:
    out = {"mchId": mch_id}
    if pay_order_id:
        out["payOrderId"] = pay_order_id
    if mch_order_no:
        out["mchOrderNo"] = mch_order_no
    return out


def _positive_cents(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValidationError(name, f"must be a positive integer of cents, got {value!r}")
