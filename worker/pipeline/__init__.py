"""The notify pipeline: webhook ingress -> durable PostgreSQL inbox -> dramatiq workers -> ledger.

    front.py       the ASGI front: whole requests; the notify on the event loop, the rest on threads
    notify_endpoint.py  POST /iotpay/notify on the event loop: screen, store, answer, then queue
    admission.py   load shedding: notifies in flight for the inbox connections, 503 when too late
    exchange.py    the request and the answer passed between the front and the notify endpoint
    ingress.py     the WSGI app of the other routes (/healthz, /readyz, /metrics)
    screening.py   what the ingress checks before keeping a body (size, sign, merchant, card masking)
    enqueuer.py    inbox ids to the broker, after the answer, from a thread of their own
    limiter.py     refusals per source address
    inbox.py       the inbox table: store once, states, outcomes
    messages.py    the notify messages: sent by actor name, the age of the oldest waiting
    process.py     one inbox row through the ledger's intake (actor and replay share it)
    actors.py      the dramatiq actors; workers.py is the module `dramatiq` loads
    redrive.py     rows not done after an age are queued again
    metrics.py     the ingress's Prometheus metrics and the inbox gauges
    gunicorn_conf.py  gunicorn settings for `iotledger web`
    server.py      gunicorn's worker class (uvicorn) and the per-request read deadline
"""
