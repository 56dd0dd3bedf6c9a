"""An IOTPay simulator: the gateway's order APIs and notifies, drivable over HTTP.

Run it with `iotledger simulate` (gunicorn, one process so the order book is shared) or use it
in-process: `httpx.Client(transport=httpx.WSGITransport(app=Simulator(merchants)))`.
Merchants and their keys come from IOTPAY_MERCHANTS / IOTPAY_MERCHANTS_FILE, `--merchant
MCH:KEY`, or `POST /_sim/merchants`. Point a worker at it with IOTPAY_V3_BASE_URL=http://HOST:PORT/v3
and IOTPAY_V1_BASE_URL=http://HOST:PORT/v1.

Modules: `app.py` (the WSGI app), `gateway.py` (the gateway endpoints), `control.py` (the control
API), `store.py` (the order book), `notifier.py` (notifies), `clock.py`, `wire.py`, `serve.py`.

The order book lives in memory (one gunicorn process, threads): a restart forgets every order.
Staging: run `iotledger simulate --port 8900`, point the checkout's IOTPay base URLs and this
worker's IOTPAY_V3_BASE_URL / IOTPAY_V1_BASE_URL at it, create orders through the control API
(or let the checkout create them with `POST /_sim/orders`), and watch notifies arrive, get
lost (--drop-rate), duplicated (--duplicate-rate) or reordered (--max-delay).

Gateway endpoints (request signing as IOTPay: MD5 `sign`, worker/iotpay/signature.py)
-----------------------------------------------------------------------------------
POST /v3/cc_query    JSON {mchId, payOrderId | mchOrderNo, sign}
POST /v3/cc_refund   JSON {mchId, mchRefundNo, loginName, refundAmount, payOrderId, sign}
POST /v3/cc_void     JSON {mchId, mchRefundNo, loginName, payOrderId, sign}
    -> {"retCode": "SUCCESS", "retMsg": "", "retData": {<order fields>, "sign": ...}}
       retData holds the order (for refund/void: the new refund order, payType "refund",
       originalOrderId = the pay) exactly as a V3 notify, signed the same way.
    -> {"retCode": "FAIL", "retMsg": "signature error" | "order not exist" | "<field> ..."}
POST /v1/query_order   form params=<json {mchId, payOrderId | mchOrderNo, sign}>
POST /v1/refund_order  form params=<json {mchId, mchRefundNo, loginName, refundAmount, payOrderId,
                       currency, clientIp, sign}>
    -> {"retCode": "SUCCESS", "retMsg": "", "resCode": "SUCCESS", <order fields flat>, "sign": ...}
       the whole object signed; a business refusal is retCode SUCCESS + resCode FAIL + errCodeDes.
A request with a bad sign, an unknown mchId or a missing field answers retCode FAIL (HTTP 200).

Rules kept: a refund never exceeds the pay's refundable; a void cancels an unsettled,
unrefunded pay in full; the same mchRefundNo for the same order returns the first refund
(a retried refund is not applied twice); V3 orders are CAD only.

Notifies: when an order succeeds (status 2/3: created paid, completed later, refunded,
voided) a signed notify is POSTed to its notifyUrl: V3 as JSON, v1 as form fields (all
strings, paySuccTime in epoch ms). Only HTTP 200 with body `success` (any case) is an
acknowledgement; otherwise it is sent again after each of `retryDelays`. The `NotifyPolicy`
(seed, dropRate, duplicateRate, minDelay/maxDelay, retryDelays, timeScale) decides per
order, reproducibly from (seed, payOrderId), whether a notify is dropped, duplicated or
delayed (random delays reorder notifies).

Control API (JSON in, JSON out; 400 names the bad field)
--------------------------------------------------------
POST /_sim/merchants            {mchId, key, loginName?}
POST /_sim/orders               {mchId, mchOrderNo, amount, channel?=PF_CC, currency?=CAD,
                                 family? (from channel: PF_CC/UPI_EX v3, else v1), status?=0,
                                 payOrderId?, notifyUrl?, completeAfter? s, completeStatus?=2,
                                 failAfter? s, createdAt?, paySuccTime?, cardNum?, cardType?,
                                 expiryDate?, authNum?, transNum?, invoiceNum?, extra? {}}
POST /_sim/orders/bulk          {orders: [spec, ...]}
GET  /_sim/orders[/ID]
POST /_sim/orders/ID/complete   {status?=2}    POST /_sim/orders/ID/fail {status?=9}
POST /_sim/orders/ID/status     {status}       POST /_sim/orders/ID/settle
POST /_sim/orders/ID/notify     {times?=1, notifyUrl?}   (now, ignoring the drop policy)
GET  /_sim/orders/ID/notify-body                (the signed notify, without sending it)
GET  /_sim/deliveries           every notify attempt: acked, not_acked, dropped
GET  /_sim/stats                requests per endpoint, order count, notifies pending, clock
POST /_sim/clock                {now: ISO-8601} freeze | {advance: s} | {real: true}
POST /_sim/faults               {httpStatus?=503, count} the next gateway calls fail;
                                {badSign: n} corrupt the next n signs; {latency: s}
POST /_sim/policy               change the notify policy (same keys as above)
"""

from worker.simulator.app import Simulator
from worker.simulator.clock import SimClock
from worker.simulator.notifier import NotifyPolicy

__all__ = ["NotifyPolicy", "SimClock", "Simulator"]
