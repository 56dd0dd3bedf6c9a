"""The notify pipeline: webhook ingress -> durable PostgreSQL inbox -> dramatiq workers -> ledger.

    ingress.py     the WSGI app (POST /iotpay/notify, /healthz, /readyz, /metrics)
    screening.py   what the ingress checks before keeping a body (sign, merchant, card masking)
    limiter.py     refusals per source address
    inbox.py       the inbox table: store once, states, outcomes
    messages.py    the notify messages: sent by actor name, the age of the oldest waiting
    process.py     one inbox row through the ledger's intake (actor and replay share it)
    actors.py      the dramatiq actors; workers.py is the module `dramatiq` loads
    redrive.py     rows not done after an age are queued again
    metrics.py     the ingress's Prometheus metrics and the inbox gauges
    gunicorn_conf.py  gunicorn settings for `iotledger web`
    server.py      gunicorn's worker class (uvicorn) and the per-request read deadline
    front.py       the ASGI front: whole requests to the app's threads, load shed with 503
"""
