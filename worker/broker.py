"""The dramatiq broker: Redis, from REDIS_URL (or the embedded Redis).

Import `worker.broker` before declaring actors; `setup_broker()` is idempotent.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

_broker: RedisBroker | None = None


def setup_broker(redis_url: str | None = None) -> RedisBroker:
    """Create the process's Redis broker once and make it dramatiq's global broker."""
    global _broker
    if _broker is None:
        if redis_url is None:
            from worker.cli.context import app_endpoints

            redis_url = app_endpoints().redis_url
        _broker = RedisBroker(url=redis_url)
        dramatiq.set_broker(_broker)
    return _broker
