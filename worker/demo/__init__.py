"""`iotledger demo`: one realistic business day, end to end, on real processes.

What it does (and checks, so the exit code means something), one step function each (steps.py):
  1. a fresh database on the configured (or embedded) PostgreSQL, migrated; Redis as configured;
  2. starts, as subprocesses, the IOTPay simulator (`iotledger simulate`), the ingress
     (`iotledger web`, gunicorn) and the workers (`iotledger worker`, dramatiq);
  3. plays yesterday (in the settlement zone) at the simulated gateway: card and WeChat pays the
     checkout registered as expected orders, duplicated notifies, partial refunds, a void, a
     forged notify (refused by the ingress), a notify that never comes (recovered by the
     sweep's query) and two differences finance must see (a customer charged another amount
     than the checkout asked; an order the customer abandoned);
  4. waits for the workers to post everything, runs the sweep, checks the ledger's invariants,
     reconciles the day and exports its settlement files;
  5. stops what it started and prints where the files are and what happened, in plain words.

Exit code 0 when everything happened as planned (the two planted mismatches found, nothing
else), 1 otherwise, with the reason.

Modules: `run.py` (run_demo), `steps.py` (the steps), `stage.py` (what the steps share),
`report.py` (the report and its summary), `database.py` (the scratch database). The processes
are started with worker/processes.py, as the tests start them.
"""

from worker.demo.report import DemoError, DemoReport, summary
from worker.demo.run import run_demo
from worker.demo.steps import MIN_ORDERS

__all__ = ["MIN_ORDERS", "DemoError", "DemoReport", "run_demo", "summary"]
