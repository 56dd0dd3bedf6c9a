"""Prometheus metrics of the ingress, and the inbox gauges computed at scrape time.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set by `iotledger web` before prometheus_client is
imported, so the counters of every web worker process add up. The dramatiq workers' own
metrics (dramatiq_messages_total, ...) are written by dramatiq's Prometheus middleware to
`dramatiq_prom_db`; when that folder is on this host, /metrics serves them too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

ACCEPTED = Counter("iotledger_notify_accepted_total", "Notifies stored in the inbox and acknowledged.", ["family"])
DUPLICATE = Counter("iotledger_notify_duplicate_total", "Notifies whose body was already in the inbox (acknowledged again).")
REFUSED = Counter("iotledger_notify_refused_total", "Notifies refused with a 4xx, by reason.", ["reason"])
UNAVAILABLE = Counter("iotledger_notify_unavailable_total", "Notifies answered 503 because PostgreSQL was unavailable.")
SHED = Counter("iotledger_requests_shed_total", "Requests answered 503 at once because the threads were too far behind.")
TIMED_OUT = Counter("iotledger_requests_timed_out_total", "Connections closed with 408: request not received in time.")
ENQUEUE_FAILED = Counter("iotledger_notify_enqueue_failed_total", "Stored notifies that could not be queued (redrive will).")
LATENCY = Histogram(
    "iotledger_notify_seconds", "Time to answer a notify (store included, enqueue excluded).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class InboxCollector(Collector):
    """Inbox rows per state not done, and the age of the oldest row not done, read at scrape."""

    def __init__(self, backlog: Callable[[], dict[str, tuple[int, float]]]) -> None:
        self._backlog = backlog

    def collect(self) -> Iterator[Any]:
        rows = GaugeMetricFamily("iotledger_inbox_backlog", "Inbox rows not done, by state.", labels=["state"])
        oldest = GaugeMetricFamily("iotledger_inbox_oldest_unfinished_age_seconds",
                                   "Age of the oldest inbox row still received or queued.")
        up = GaugeMetricFamily("iotledger_inbox_up", "1 when the inbox could be read for this scrape.")
        try:
            backlog = self._backlog()
        except Exception:  # a scrape must answer even with the database down
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for state in ("received", "queued", "failed", "dead"):
            rows.add_metric([state], backlog.get(state, (0, 0.0))[0])
        ages = [backlog[s][1] for s in ("received", "queued") if s in backlog]
        oldest.add_metric([], max(ages) if ages else 0.0)
        yield from (up, rows, oldest)


class _Default(Collector):
    """The process's default registry (when not under gunicorn's multiprocess mode)."""

    def collect(self) -> Iterator[Any]:
        yield from REGISTRY.collect()


def render(backlog: Callable[[], dict[str, tuple[int, float]]]) -> bytes:
    """The text exposition of every metric, for GET /metrics."""
    registry = CollectorRegistry()
    multiproc = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if multiproc:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry, path=multiproc)
        dramatiq_dir = os.environ.get("dramatiq_prom_db")
        if dramatiq_dir and os.path.isdir(dramatiq_dir) and os.path.abspath(dramatiq_dir) != os.path.abspath(multiproc):
            multiprocess.MultiProcessCollector(registry, path=dramatiq_dir)
    else:
        registry.register(_Default())
    registry.register(InboxCollector(backlog))
    return generate_latest(registry)
