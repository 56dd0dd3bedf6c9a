"""Run the mutants of each target module against the tests that cover it, one mutant at a time.

Safety: the checkout is never written. The tracked and untracked (not ignored) files are copied
into a scratch folder per job; a mutant is written over the target file in that copy, and
PYTHONPATH points at the copy so that every process the tests start (the `iotledger` CLI,
gunicorn, dramatiq workers) imports the mutated code too; migrations are read from the copy's
`sql/`, so a mutated schema reaches the template database of that test run. The original
text is written back after every mutant (try/finally), and the copies are removed at the end,
on Ctrl-C too. A run refuses to start when a target file has uncommitted changes, so that the
results always describe a commit.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.mutation import pymutants, sqlmutants

ROOT = Path(__file__).resolve().parents[2]

# the tests of test_gateway_last_word.py that post through the ledger on one connection (the others
# start the sweep, workers or the CLI: slow, and they add no kills in posting.py)
LAST_WORD_LEDGER = [f"tests/test_gateway_last_word.py::{name}" for name in (
    "test_a_posted_pay_reported_failed_or_pending_is_a_recorded_and_alerted_regression",
    "test_a_rejected_refund_reported_failed_is_recorded_not_ignored",
    "test_a_failed_order_reported_pending_later_stays_failed_and_is_recorded",
    "test_a_parked_refund_the_gateway_reports_failed_is_never_released",
    "test_a_late_pending_notify_does_not_unpark_a_parked_refund",
    "test_a_pending_order_whose_amount_changes_posts_the_new_amount_and_keeps_the_old",
    "test_a_failed_order_that_succeeds_with_other_content_posts",
    "test_a_pending_order_changing_content_while_still_pending_is_updated",
    "test_a_parked_refund_whose_amount_changes_posts_the_new_amount",
    "test_a_pay_with_the_id_of_a_parked_refund_is_a_conflict_not_a_replacement",
    "test_a_pending_order_moving_to_another_merchant_is_a_conflict",
    "test_a_refund_failed_after_its_success_is_not_reposted_by_a_resent_success",
)]

# the export: its transaction, its CSV cells, its files and the money strings they hold
EXPORT_TESTS = ["tests/test_export_units.py", "tests/test_export_files.py", "tests/test_export_survivors.py",
                "tests/test_file_series.py", "tests/test_readme_files.py", "tests/test_export_cli.py"]

# module -> the smallest set of test files that covers it, the quickest killers first
TARGETS: dict[str, list[str]] = {
    "sql/001_ledger.sql": ["tests/test_ledger_schema_rules.py", "tests/test_ledger_db_rules.py",
                           "tests/test_ledger_rules.py"],
    "worker/iotpay/signature.py": ["tests/test_signature.py", "tests/test_signature_php.py"],
    "worker/iotpay/notify.py": ["tests/test_notify.py", "tests/test_notify_fields.py", "tests/test_notify_survivors.py"],
    "worker/iotpay/body.py": ["tests/test_notify_body.py", "tests/test_notify.py", "tests/test_notify_fields.py",
                              "tests/test_notify_survivors.py"],
    "worker/iotpay/authentication.py": ["tests/test_notify_body.py"],
    "worker/ledger/posting.py": ["tests/test_posting_survivors.py", "tests/test_ledger_stored_fields.py",
                                 *LAST_WORD_LEDGER, "tests/test_ledger_rules.py", "tests/test_last_word_property.py",
                                 "tests/test_ledger_db_rules.py", "tests/test_ledger_concurrency.py"],
    "worker/reports/export.py": EXPORT_TESTS,
    "worker/reports/csv_cells.py": EXPORT_TESTS,
    "worker/reports/files.py": EXPORT_TESTS,
    "worker/money.py": EXPORT_TESTS,
}


@dataclass(frozen=True)
class Job:
    """One mutant: a full replacement text of one file."""

    path: str
    line: int
    description: str
    text: str


@dataclass
class Outcome:
    job: Job
    result: str  # killed, survived, timeout, error
    seconds: float
    detail: str = ""


@dataclass
class Tally:
    module: str
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o.result == result)

    @property
    def score(self) -> float:
        total = len(self.outcomes)
        return 100.0 * (self.count("killed") + self.count("timeout")) / total if total else 100.0


def jobs_for(module: str, lines: set[int] | None = None, tree: Path = ROOT) -> list[Job]:
    """Every mutant of one module (as it is in `tree`) as a full file text."""
    source = (tree / module).read_text(encoding="utf-8")
    if module.endswith(".sql"):
        problems = sqlmutants.check(source)
        if problems:
            raise SystemExit("the SQL mutations no longer match sql/001_ledger.sql:\n  " + "\n  ".join(problems))
        out = [Job(module, sqlmutants.line_of(source, m), m.description, source.replace(m.old, m.new, 1))
               for m in sqlmutants.MUTATIONS]
    else:
        out = [Job(module, m.line, f"{m.description}  [{m.new[:60]!s}]", m.apply(source))
               for m in pymutants.generate(module, source)]
    return [j for j in out if lines is None or j.line in lines]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def refuse_dirty(modules: list[str]) -> None:
    """Exit 2 when a target file differs from HEAD (the results must describe a commit)."""
    dirty = _git("status", "--porcelain", "--", *modules).strip()
    if dirty:
        raise SystemExit(f"refusing to run: uncommitted changes to target files:\n{dirty}")


def make_copy(rev: str | None = None) -> Path:
    """A scratch copy of the working tree (tracked and untracked files, not ignored ones), or of a commit."""
    dest = Path(tempfile.mkdtemp(prefix="iotledger-mutation-"))
    if rev:
        archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return dest
    names = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, names):
        src = ROOT / name
        if not src.is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    return dest


class Runner:
    """Runs pytest in one scratch copy; one mutant at a time."""

    def __init__(self, copy: Path, timeout: float) -> None:
        self.copy = copy
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None

    def pytest(self, tests: list[str], per_test_timeout: float) -> tuple[str, float, str]:
        env = {**os.environ, "PYTHONPATH": str(self.copy), "PYTHONDONTWRITEBYTECODE": "1", "CI": "true",
               "PYTHONWARNINGS": "ignore"}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header",
               "-o", "addopts=-p tests.fix_db -p tests.fix_redis", f"--timeout={int(per_test_timeout)}", *tests]
        start = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        try:
            out, _ = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                out, _ = self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                out, _ = self.proc.communicate()
            return "timeout", time.monotonic() - start, out[-2000:]
        finally:
            code = self.proc.returncode
            self.proc = None
        seconds = time.monotonic() - start
        if code == 0:
            return "survived", seconds, ""
        if "Timeout" in out and "+++++++ Timeout" in out:
            return "timeout", seconds, _last_failure(out)
        if code in (1,):
            return "killed", seconds, _last_failure(out)
        return "error", seconds, out[-2000:]  # 2 interrupted / collection error, 3 internal, 4 usage, 5 none

    def run(self, job: Job, tests: list[str], per_test_timeout: float) -> Outcome:
        target = self.copy / job.path
        original = target.read_text(encoding="utf-8")
        try:
            target.write_text(job.text, encoding="utf-8")
            result, seconds, detail = self.pytest(tests, per_test_timeout)
        finally:
            target.write_text(original, encoding="utf-8")
        if result == "error" and job.path.endswith(".py"):
            result = "killed"  # the mutant broke import or collection: the tests noticed
        return Outcome(job, result, seconds, detail)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)


def _last_failure(out: str) -> str:
    for line in reversed(out.splitlines()):
        if line.startswith(("FAILED", "ERROR")):
            return line[:200]
    return ""


def existing(tests: list[str], copy: Path) -> list[str]:
    return [t for t in tests if (copy / t.split("::")[0]).exists()]


def run_module(module: str, runners: list[Runner], args: argparse.Namespace, report, tally: Tally) -> Tally:
    lines = {int(x) for x in args.lines.split(",")} if args.lines else None
    todo = jobs_for(module, lines, runners[0].copy)
    tests = args.tests or existing(TARGETS[module], runners[0].copy)
    report(f"== {module}: {len(todo)} mutants, tests: {' '.join(tests)}")
    start = time.monotonic()
    result, seconds, detail = runners[0].pytest(tests, args.test_timeout)
    if result != "survived":
        raise SystemExit(f"the tests of {module} fail without any mutation ({result}):\n{detail}")
    report(f"   baseline run: {seconds:.1f} s")
    pending: queue.Queue[Job] = queue.Queue()
    for j in todo:
        pending.put(j)
    lock = threading.Lock()

    def work(runner: Runner) -> None:
        while True:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            outcome = runner.run(job, tests, args.test_timeout)
            with lock:
                tally.outcomes.append(outcome)
                n = len(tally.outcomes)
                if args.verbose or outcome.result != "killed":
                    report(f"   [{n}/{len(todo)}] {outcome.result:8} {job.path}:{job.line} {job.description}"
                           f" ({outcome.seconds:.1f} s)")
                elif n % 25 == 0:
                    report(f"   [{n}/{len(todo)}] ...")

    threads = [threading.Thread(target=work, args=(r,), daemon=True) for r in runners]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    finally:  # on Ctrl-C too: what ran so far is reported
        tally.seconds = time.monotonic() - start
    return tally


def summary_lines(tallies: list[Tally]) -> list[str]:
    out = ["", "module                         mutants  killed  timeout  survived  error  score   time"]
    for t in tallies:
        out.append(f"{t.module:30} {len(t.outcomes):7} {t.count('killed'):7} {t.count('timeout'):8} "
                   f"{t.count('survived'):9} {t.count('error'):6} {t.score:5.1f}%  {t.seconds / 60:5.1f} min")
    for t in tallies:
        bad = [o for o in t.outcomes if o.result in ("survived", "error")]
        if bad:
            out.append(f"\nsurvivors in {t.module}:")
            out.extend(f"  {o.job.path}:{o.job.line}  {o.result}: {o.job.description}" for o in bad)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="run only this module (repeatable)")
    parser.add_argument("--list", action="store_true", help="list modules, their mutant counts and tests, then exit")
    parser.add_argument("--show", action="store_true", help="with --list: list every mutant too")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (one scratch copy each; default 1)")
    parser.add_argument("--lines", help="only mutants on these lines (comma-separated), e.g. to re-check survivors")
    parser.add_argument("--tests", nargs="+", help="run these test files instead of the module's mapping")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one mutant's pytest run may take")
    parser.add_argument("--test-timeout", type=float, default=60, help="seconds one test may take (pytest-timeout)")
    parser.add_argument("--out", type=Path, help="also write the summary to this file")
    parser.add_argument("--rev", help="measure this commit (e.g. one before new tests) instead of the working tree")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every mutant, killed ones too")
    args = parser.parse_args(argv)
    modules = args.module or list(TARGETS)

    if args.list:
        for module in modules:
            todo = jobs_for(module)
            print(f"{module}: {len(todo)} mutants; tests: {' '.join(TARGETS[module])}")
            if args.show:
                for j in todo:
                    print(f"  {j.path}:{j.line}  {j.description}")
        return 0

    if not args.rev:
        refuse_dirty(modules)

    def interrupt(signum, frame):  # a background run (SIGINT ignored there) stops cleanly on SIGTERM too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, interrupt)
    copies: list[Path] = []
    runners: list[Runner] = []
    tallies: list[Tally] = []

    def report(line: str) -> None:
        print(line, flush=True)

    try:
        for _ in range(max(1, args.jobs)):
            copies.append(make_copy(args.rev))
            runners.append(Runner(copies[-1], args.timeout))
        for module in modules:
            tallies.append(Tally(module))
            run_module(module, runners, args, report, tallies[-1])
    except KeyboardInterrupt:
        report("interrupted: stopping the running mutant and removing the scratch copies (partial results below)")
        for r in runners:
            r.stop()
        time.sleep(1)  # let the worker threads write the original text back
        return 130
    finally:
        for c in copies:
            shutil.rmtree(c, ignore_errors=True)
        for t in tallies:
            t.outcomes.sort(key=lambda o: (o.job.line, o.job.description))
        lines = summary_lines(tallies)
        print("\n".join(lines), flush=True)
        if args.out and tallies:
            args.out.write_text("\n".join(lines).lstrip("\n") + "\n", encoding="utf-8")
    return 0
