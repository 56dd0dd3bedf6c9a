"""The embedded PostgreSQL and Redis, for a laptop without the services."""

from __future__ import annotations

import os

import psycopg
import pytest
import redis

from tests import cli


@pytest.mark.slow
def test_embedded_services_start_migrate_and_stop(tmp_path):
    env = {"IOTLEDGER_DATA_DIR": str(tmp_path / "data")}
    env_clean = {k: "" for k in ("DATABASE_URL", "REDIS_URL")}
    try:
        up = cli.run("services", "up", env={**env, **env_clean})
        assert up.returncode == 0, up.stderr
        urls = dict(line.split("=", 1) for line in up.stdout.strip().splitlines())
        assert urls["DATABASE_URL"].startswith("postgresql://")
        assert urls["REDIS_URL"].startswith("unix://")
        r = cli.run("migrate", env={**env, **env_clean})
        assert r.returncode == 0 and "applied" in r.stdout, r.stderr
        with psycopg.connect(urls["DATABASE_URL"]) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 1
        assert redis.Redis.from_url(urls["REDIS_URL"]).ping()
        # a second process finds the same services instead of starting new ones
        r2 = cli.run("services", "up", env={**env, **env_clean})
        assert r2.stdout == up.stdout
        status = cli.run("services", "status", env={**env, **env_clean}).stdout
        assert "postgresql: embedded, running" in status and "redis: embedded, running" in status
    finally:
        down = cli.run("services", "down", env={**env, **env_clean})
    assert down.returncode == 0 and "postgresql" in down.stdout and "redis" in down.stdout
    status = cli.run("services", "status", env={**env, **env_clean}).stdout
    assert "embedded, stopped" in status
    assert not os.path.exists(tmp_path / "data" / "redis" / "redis.sock") or "stopped" in status
