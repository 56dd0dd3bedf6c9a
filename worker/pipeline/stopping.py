"""A stop request delivered twice is one stop request.

Under a process manager (honcho in `iotledger run`, a container runtime, systemd's
`KillMode=control-group`), a dramatiq worker process gets SIGTERM twice within milliseconds:
once from the manager, which signals the whole process group, and once from dramatiq's master,
which forwards it. dramatiq reads a second SIGTERM as "hurry" and kills the process at once,
so messages in flight are abandoned (and retried) instead of finished. `absorb_repeated_stop`
wraps dramatiq's handler in a worker process: a repeat within `REPEAT_WINDOW_S` of the first
is dropped; a later one (an operator asking again) still hurries the stop.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

REPEAT_WINDOW_S = 2.0


def absorb_repeated_stop(window_s: float = REPEAT_WINDOW_S) -> bool:
    """Wrap this process's SIGTERM handler so a repeat within window_s is ignored.

    Returns False (and changes nothing) off the main thread or when no Python handler is set,
    for example when this module is imported outside a dramatiq worker process. Raises nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    original = signal.getsignal(signal.SIGTERM)
    if not callable(original) or getattr(original, "absorbs_repeats", False):
        return False
    first: float | None = None

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal first
        now = time.monotonic()
        if first is not None and now - first < window_s:
            return  # the same stop, delivered by the process group and by the master
        first = first if first is not None else now
        original(signum, frame)

    handler.absorbs_repeats = True  # type: ignore[attr-defined]
    signal.signal(signal.SIGTERM, handler)
    return True
