"""Fuzz: arbitrary bodies, correctly signed ones with arbitrary values included, through the real
ingress app and the worker's processing. No 5xx, nothing invalid posted, no inbox row left
unfinished, `iotledger check` holds. The long run is `python -m tests.benchmarks.fuzz_ingress`.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.fuzz_ingress_lib import FuzzRun, bodies, real_app

EXAMPLES = 600


def test_no_body_gets_a_5xx_and_every_stored_one_is_finished_with_the_ledger_intact(db_url, redis_url, queue_name):
    with real_app(db_url, redis_url, queue_name) as app:
        run = FuzzRun(app, db_url)
        try:
            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(bodies())
            def one(body):
                run.post(*body)

            one()
            run.finish()
        finally:
            run.close()
    assert sum(run.statuses.values()) >= EXAMPLES, run.statuses
    assert run.statuses[200] > 0 and any(400 <= s < 500 for s in run.statuses)
    assert "posted" in run.outcomes
