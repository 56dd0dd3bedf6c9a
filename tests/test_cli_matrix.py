"""Every command against an unmigrated database, a stopped PostgreSQL, a missing file and bad
arguments: one readable line, the documented exit code (2 usage/configuration, 3 a service down),
never a traceback."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import cli
from tests.factories import MERCHANTS_JSON, v3_pay

DOWN_URL = "postgresql://postgres@127.0.0.1:9/iotledger"  # nothing listens on port 9 (discard)

# commands that read the ledger; each against an unmigrated database and a stopped PostgreSQL
READERS = [
    ["check"], ["check", "--json"], ["order", "PC1"], ["inbox"], ["replay", "--state", "failed"],
    ["reconcile", "--date", "2026-11-20"], ["export", "--date", "2026-11-20"], ["files", "verify"],
    ["expect", "--mch-id", "10000701", "--mch-order-no", "M1", "--amount", "100", "--channel", "PF_CC"],
    ["expect-refund", "--mch-id", "10000701", "--mch-refund-no", "R1", "--original-order-id", "PC1",
     "--amount", "100"],
    ["sweep"], ["redrive"],
    ["overview"], ["days"], ["day", "2026-11-20"], ["users", "list"], ["order", "SHOP-1"],
]


def _run_all(cases: list[tuple[list[str], dict[str, str], str | None]], cwd: Path) -> list:
    def one(case):
        args, env, stdin = case
        started = time.monotonic()
        return args, cli.run(*args, env={**env, "IOTPAY_MERCHANTS": MERCHANTS_JSON}, stdin=stdin, timeout=90), \
            time.monotonic() - started

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, cases))


def _no_traceback(args, proc) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, (args, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("iotledger")]
    assert lines, (args, proc.stderr[-1000:])


@pytest.mark.slow
def test_every_reader_on_an_unmigrated_database_says_run_migrate(empty_db_url, redis_url, tmp_path):
    env = {"DATABASE_URL": empty_db_url, "REDIS_URL": redis_url}
    (tmp_path / "in.jsonl").write_text(json.dumps(v3_pay("PC1", 100)) + "\n")
    cases = [(a, env, None) for a in READERS] + [(["ingest", str(tmp_path / "in.jsonl")], env, None)]
    for args, proc, _ in _run_all(cases, tmp_path):
        _no_traceback(args, proc)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr[-1000:])
        assert "run iotledger migrate" in proc.stderr, (args, proc.stderr[-1000:])


@pytest.mark.slow
def test_every_command_with_postgresql_stopped_exits_3_within_seconds(redis_url, tmp_path):
    env = {"DATABASE_URL": DOWN_URL, "REDIS_URL": redis_url}
    (tmp_path / "in.jsonl").write_text(json.dumps(v3_pay("PC1", 100)) + "\n")
    cases = [(a, env, None) for a in READERS + [["migrate"], ["clock", "--once"], ["run"], ["console"],
                                                ["demo", "--in-place", "--orders", "10"]]]
    cases.append((["ingest", str(tmp_path / "in.jsonl")], env, None))
    for args, proc, seconds in _run_all(cases, tmp_path):
        _no_traceback(args, proc)
        assert proc.returncode == 3, (args, proc.returncode, proc.stderr[-1000:])
        assert "PostgreSQL" in proc.stderr, (args, proc.stderr[-500:])
        assert seconds < 20, (args, seconds)


@pytest.mark.slow
def test_missing_files_and_bad_arguments_are_usage_errors(db_url, redis_url, tmp_path):
    env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url}
    cases = [
        (["ingest", str(tmp_path / "nope.jsonl")], env, None),
        (["expect", "--file", str(tmp_path / "nope.jsonl")], env, None),
        (["expect-refund", "--file", str(tmp_path / "nope.jsonl")], env, None),
        (["export", "--date", "2026-11-20", "--out", "/proc/not-writable"], env, None),
        (["inbox", "--limit", "-1"], env, None),
        (["sweep", "--concurrency", "0"], env, None),
        (["demo", "--orders", "3"], env, None),
        (["expect"], env, None),
        (["expect-refund"], env, None),
        (["run", "bogus"], env, None),
        (["replay", "999999"], env, None),
        (["reconcile", "--date", "21/11/2026"], env, None),
        (["check", "--date", "2026-13-01"], env, None),
        (["verify"], env, "not json"),
        (["verify"], env, "{}"),
        (["web", "--port", "70000"], env, None),
        (["check"], {**env, "IOTLEDGER_WEB_PORT": "70000"}, None),
        (["check"], {**env, "IOTLEDGER_MAX_AMOUNT_CENTS": "-5"}, None),
        (["day", "20/11/2026"], env, None),
        (["days", "--before", "yesterday"], env, None),
        (["console", "--port", "70000"], env, None),
        (["users", "add", "bob"], env, None),
        (["users", "add", "bob", "--role", "viewer"], env, "short\n"),
        (["check"], {**env, "IOTLEDGER_CONSOLE_SECRET_KEY": "too short"}, None),
    ]
    for args, proc, _ in _run_all(cases, tmp_path):
        assert "Traceback" not in proc.stderr, (args, proc.stderr[-2000:])
        assert proc.returncode == 2, (args, proc.returncode, proc.stdout[-500:], proc.stderr[-1000:])
        assert proc.stderr.strip(), args


def test_check_against_an_empty_database_names_migrate(empty_db_url, redis_url):
    proc = cli.run("check", env={"DATABASE_URL": empty_db_url, "REDIS_URL": redis_url})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("iotledger: database ")
    assert "run iotledger migrate" in proc.stderr


def test_a_database_that_does_not_exist_is_a_configuration_error_in_one_line(pg_server_url, redis_url):
    from tests.fix_db import with_dbname

    proc = cli.run("check", env={"DATABASE_URL": with_dbname(pg_server_url, "no_such_database_here"),
                                 "REDIS_URL": redis_url})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("iotledger: configuration error: DATABASE_URL:") and "does not exist" in line


def test_postgresql_down_is_one_line(redis_url):
    proc = cli.run("check", env={"DATABASE_URL": DOWN_URL, "REDIS_URL": redis_url})
    assert proc.returncode == 3
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("iotledger: service unavailable: PostgreSQL unavailable:")


def test_a_redis_password_is_masked_in_every_form():
    from worker.services import masked

    assert masked("redis://:r3dispw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert masked("redis://default:pw@h:6379/0") == "redis://default:***@h:6379/0"
    assert masked("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert masked("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"
