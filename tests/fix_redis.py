"""pytest plugin: a real Redis per test session, from REDIS_URL (default 127.0.0.1:6379).

Each test gets its own key prefix / queue namespace rather than a flushed server, so tests
may share the server. Under CI=true a missing Redis fails the run; on a laptop without one,
the embedded Redis is used.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis

DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _server_url() -> str:
    url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
        return url
    except (redis.RedisError, OSError):
        if CI:
            raise
    from worker.config import Settings
    from worker.services import embedded_redis_url

    from pathlib import Path

    from tests.fix_services import started

    folder = os.path.abspath(".iotledger")
    started.append(Path(folder))
    return embedded_redis_url(Settings.from_env({"IOTLEDGER_DATA_DIR": folder}))


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the Redis server the tests use."""
    return _server_url()


@pytest.fixture
def queue_name() -> str:
    """A dramatiq queue name unique to this test, so tests sharing Redis never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}"
