"""What passes between the front (front.py) and a handler on the event loop: the request, read
whole, and the answer (status, headers, body) the front sends."""

from __future__ import annotations

from dataclasses import dataclass, field

NOTIFY_PATH = "/iotpay/notify"
Header = tuple[bytes, bytes]
Answer = tuple[int, list[Header], bytes]


@dataclass(frozen=True)
class Request:
    """A notify whose body the front has read (or left unread, when its declared length was over the limit)."""

    content_type: str | None
    remote_addr: str  # the client, or the first hop a trusted proxy named (FORWARDED_ALLOW_IPS)
    arrived: float  # time.monotonic() when the server had the whole request
    body: bytes = field(repr=False)
    declared_length: int | None = None  # Content-Length, when sent


def plain(status: int, text: bytes, *extra: Header) -> Answer:
    """A text/plain answer."""
    return status, [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode()),
                    *extra], text
