"""Long fuzz run of the notify pipeline: hypothesis bodies through the real ingress app and the
worker's processing (tests/fuzz_ingress_lib.py); prints counts per status code, the 5xx count,
the worker's outcomes, unfinished inbox rows and whether `iotledger check` holds.

    python -m tests.benchmarks.fuzz_ingress [--bodies 100000] [--seed N]

It creates (and drops) its own database on the server of TEST_DATABASE_URL and uses a unique
queue on TEST_REDIS_URL / REDIS_URL (deleted at the end). A 5xx stops nothing: it is counted,
and the run exits 1 at the end when there was any, or an unfinished row, or a failed check.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.fix_db import DEFAULT_TEST_DATABASE_URL, create_database, drop_database, with_dbname
from tests.fix_redis import DEFAULT_TEST_REDIS_URL
from tests.fuzz_ingress_lib import FuzzRun, bodies, real_app
from worker.ledger.checks import run_checks
from worker.migrations import migrate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bodies", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()

    server = os.environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or DEFAULT_TEST_REDIS_URL
    name = create_database(server, "fuzz_ingress")
    db_url = with_dbname(server, name)
    failures: list[str] = []
    started = time.monotonic()
    try:
        migrate(db_url)
        with real_app(db_url, redis_url, f"fuzz{uuid.uuid4().hex[:8]}") as app:
            run = FuzzRun(app, db_url)
            try:
                @settings(max_examples=args.bodies, deadline=None, database=None, phases=[Phase.generate],
                          suppress_health_check=list(HealthCheck))
                @given(bodies())
                def one(body):
                    try:
                        run.post(*body)
                    except AssertionError as exc:  # counted and reported, the run goes on
                        failures.append(str(exc)[:300])

                if args.seed is not None:
                    one = seed(args.seed)(one)
                one()
                unfinished = run.unfinished()
                report = run_checks(run.conn)
            finally:
                run.close()
    finally:
        drop_database(server, name)
    total = sum(run.statuses.values())
    fivexx = sum(n for s, n in run.statuses.items() if s >= 500)
    print(f"fuzz_ingress: {total} bodies in {time.monotonic() - started:.0f} s")
    print("  status codes:  " + ", ".join(f"{s}: {n}" for s, n in sorted(run.statuses.items())))
    print(f"  5xx:           {fivexx}")
    print("  worker:        " + ", ".join(f"{k}: {n}" for k, n in sorted(run.outcomes.items())))
    print(f"  unfinished inbox rows: {unfinished}")
    print(f"  iotledger check: {'ok' if report.ok else report.as_json()}")
    print(f"  assertion failures: {len(failures)}")
    for text in failures[:10]:
        print(f"    {text}")
    return 1 if fivexx or unfinished or not report.ok or failures else 0


if __name__ == "__main__":
    sys.exit(main())
