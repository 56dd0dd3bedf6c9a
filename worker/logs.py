"""structlog, configured in exactly one place.

JSON lines when stderr is not a terminal, readable console output when it is. Merchant keys
and full card numbers never reach a log line: `Redactor` scrubs every event before rendering.

Each record is written with its newline in one write call, under one lock per process shared by
structlog and stdlib logging, so threads never interleave two records; one write per record is
what keeps processes apart too (a pipe write of up to PIPE_BUF, 4096 bytes, and any write to a
file opened for appending are whole; dramatiq's worker processes send each write as one message).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from worker.iotpay.cards import redact_pans

REDACTED = "[REDACTED]"
SENSITIVE_NAMES = frozenset({"key", "keys", "merchant_key", "signing_key", "password", "secret", "signing_string"})


class Redactor:
    """A structlog processor that removes merchant keys and card numbers from an event."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        # longest first, so that a key containing another is scrubbed whole
        self.keys = sorted({k for k in keys if k}, key=len, reverse=True)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for k in self.keys:
                if k in value:
                    value = value.replace(k, REDACTED)
            return redact_pans(value)
        if isinstance(value, bytes):
            return self._scrub(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {k: REDACTED if str(k).lower() in SENSITIVE_NAMES else self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self._scrub(v) for v in value]
        return value

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for name in list(event):
            if name.lower() in SENSITIVE_NAMES:
                event[name] = REDACTED
            else:
                event[name] = self._scrub(event[name])
        return event


class _Stderr:
    """Writes to whatever sys.stderr is at the moment of writing (test runners swap it).

    One write() call is one record with its newline; it is written and flushed under a process-wide
    lock, so that a record from another thread (structlog's or stdlib's) never lands inside it.
    """

    _lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            stream = sys.stderr
            n = stream.write(text)
            stream.flush()
            return n

    def flush(self) -> None:
        pass  # every write flushed already


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stdlib handler bound to the current sys.stderr, not the one at configure time."""

    def __init__(self) -> None:
        super().__init__(_Stderr())  # type: ignore[arg-type]


def configure(keys: Iterable[str] = (), *, level: str = "INFO", json: bool | None = None) -> None:
    """Configure structlog and the stdlib root logger once for the whole process."""
    if json is None:
        json = not sys.stderr.isatty()
    redactor = Redactor(keys)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info if json else structlog.processors.StackInfoRenderer(),
        redactor,
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # WriteLogger writes message + newline in one call (PrintLogger's print() made it two)
        logger_factory=structlog.WriteLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,  # True would pin loggers and defeat structlog.testing.capture_logs
    )
    # third-party stdlib logging (dramatiq, gunicorn) goes through the same redactor and renderer
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("pgserver", "httpx", "httpcore", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # pika logs every connection attempt, and each failure with a traceback, before dramatiq
    # gives up; the project says it once, as "RabbitMQ unavailable: ..." (worker/broker.py)
    logging.getLogger("pika").setLevel(logging.CRITICAL)


def get(name: str | None = None, **bound: Any) -> Any:
    """A structlog logger, optionally with bound values."""
    log = structlog.get_logger(name)
    return log.bind(**bound) if bound else log
